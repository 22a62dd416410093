/* One runner for every Check suite of libaiometer.  Each tests/check_*.c
 * file contributes one Suite; add new ones to the list below. */
#include <check.h>
#include <stdlib.h>

Suite *core_suite(void);
Suite *defects_suite(void);
Suite *limiter_suite(void);
Suite *stream_suite(void);
Suite *backend_suite(void);

int main(void)
{
    SRunner *sr = srunner_create(core_suite());
    srunner_add_suite(sr, limiter_suite());
    srunner_add_suite(sr, stream_suite());
    srunner_add_suite(sr, defects_suite());
    srunner_add_suite(sr, backend_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
