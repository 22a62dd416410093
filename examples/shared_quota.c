/* shared_quota.c - one quota for several processes: every process that runs
 * this program opens the host-wide limiter "shared_quota" (5 starts a
 * second, at most 2 jobs at once), so two copies started together take
 * turns at 5 starts a second in all, not 5 each; and a copy started later
 * continues the same schedule.
 *
 *     examples/shared_quota & examples/shared_quota; wait
 *     examples/shared_quota --unlink      # forget the schedule
 */
#define _POSIX_C_SOURCE 200809L
#include <aiometer.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double t0;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A stand-in for a request to a rate-limited API. */
static void *request(void *arg)
{
    printf("pid %ld: request %ld at %.2f s\n", (long)getpid(), (long)(intptr_t)arg, now() - t0);
    fflush(stdout);
    aiometer_sleep(0.3);
    return arg;
}

int main(int argc, char **argv)
{
    aiometer_limiter_options lo = {0};
    aiometer_options o = {0};
    aiometer_limiter *quota;
    void *args[10];
    int err;

    if (argc > 1 && strcmp(argv[1], "--unlink") == 0) {
        err = aiometer_limiter_unlink("shared_quota");
        printf("unlink: %s\n", aiometer_strerror(err));
        return err == 0 || err == ENOENT ? EXIT_SUCCESS : EXIT_FAILURE;
    }
    /* The rate is this process's (each opener books with its own); the
     * running cap is set by whichever process creates the limiter. */
    lo.max_per_second = 5;
    lo.max_at_once = 2;
    err = aiometer_limiter_open(&quota, "shared_quota", &lo);
    if (err != 0) {
        fprintf(stderr, "shared_quota: %s\n", aiometer_strerror(err));
        return EXIT_FAILURE;
    }
    t0 = now();
    for (int i = 0; i < 10; i++)
        args[i] = (void *)(intptr_t)i;
    o.limiter = quota;
    err = aiometer_run_on_each(request, args, 10, &o);
    printf("pid %ld: %s after %.2f s\n", (long)getpid(), aiometer_strerror(err), now() - t0);
    aiometer_limiter_destroy(quota); /* the shared schedule stays for the next run */
    return err == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
