/* One runner for every Check suite of libaiometer.  Each tests/check_*.c
 * file contributes one Suite; add new ones to the list below (and see
 * tests/README for which file a new test belongs in). */
#include <check.h>
#include <stdlib.h>

Suite *core_suite(void);
Suite *defects_suite(void);
Suite *limiter_suite(void);
Suite *amap_suite(void);
Suite *ordered_suite(void);
Suite *run_any_suite(void);
Suite *cancel_suite(void);
Suite *deadline_suite(void);
Suite *source_suite(void);
Suite *args_suite(void);
Suite *backend_suite(void);
Suite *host_suite(void);
Suite *retry_suite(void);
Suite *keyed_suite(void);
Suite *handoff_suite(void);

int main(void)
{
    SRunner *sr = srunner_create(core_suite());
    srunner_add_suite(sr, limiter_suite());
    srunner_add_suite(sr, amap_suite());
    srunner_add_suite(sr, ordered_suite());
    srunner_add_suite(sr, run_any_suite());
    srunner_add_suite(sr, cancel_suite());
    srunner_add_suite(sr, deadline_suite());
    srunner_add_suite(sr, source_suite());
    srunner_add_suite(sr, args_suite());
    srunner_add_suite(sr, backend_suite());
    srunner_add_suite(sr, host_suite());
    srunner_add_suite(sr, retry_suite());
    srunner_add_suite(sr, keyed_suite());
    srunner_add_suite(sr, handoff_suite());
    srunner_add_suite(sr, defects_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
