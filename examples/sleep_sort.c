/*
 * sleep_sort.c - sort numbers by sleeping, the last example of Python
 * aiometer's documentation, in C.
 *
 * Each job sleeps for its number of seconds and then returns the number.
 * aiometer_amap_next() hands results back in the order jobs finish, so the
 * numbers come out sorted, each printed the moment its job returns.  What it
 * shows: amap, and jobs that all run at once on the default pool.
 *
 * Build and run: ./examples/sleep_sort (takes about 0.7 s).
 */
#include <aiometer.h>

#include <stdio.h>
#include <stdlib.h>

/* The job: sleep n seconds and hand n back.  aiometer_sleep() rather than
 * nanosleep() so that a cancelled call would not wait for the sleep to end. */
static void *sleep_then_return(void *arg)
{
    const double *n = arg;
    aiometer_sleep(*n);
    return arg;
}

int main(void)
{
    double numbers[] = {0.3, 0.1, 0.6, 0.2, 0.7, 0.5, 0.5, 0.2};
    enum { count = sizeof numbers / sizeof numbers[0] };
    void *args[count];
    double sorted[count];
    size_t got = 0;

    printf("input: ");
    for (size_t i = 0; i < count; i++) {
        args[i] = &numbers[i];
        printf(" %.1f", numbers[i]);
    }
    printf("\nsorted:");
    fflush(stdout);

    /* No limits: every job starts at once, so each finishes after its own
     * sleep and the order of finishing is the order of the numbers. */
    aiometer_options opts = {0};
    aiometer_amap *results;
    int err = aiometer_amap_open(&results, sleep_then_return, args, count, &opts);
    if (err != 0) {
        fprintf(stderr, "\nsleep_sort: aiometer_amap_open: %s\n", aiometer_strerror(err));
        return EXIT_FAILURE;
    }
    void *result;
    while ((err = aiometer_amap_next(results, &result, NULL)) == 0) {
        sorted[got++] = *(const double *)result;
        printf(" %.1f", sorted[got - 1]);
        fflush(stdout); /* Show each number as it arrives, not at the end. */
    }
    putchar('\n');
    int close_err = aiometer_amap_close(results);
    if (err != AIOMETER_DONE || close_err != 0) {
        fprintf(stderr, "sleep_sort: %s\n",
                aiometer_strerror(err != AIOMETER_DONE ? err : close_err));
        return EXIT_FAILURE;
    }

    /* Sleep sort is only as good as the scheduler: on a machine so busy
     * that a thread wakes up more than 0.1 s late it can get the order wrong.
     * Say so rather than print a wrong answer quietly. */
    for (size_t i = 1; i < got; i++) {
        if (sorted[i] < sorted[i - 1]) {
            fprintf(stderr, "sleep_sort: out of order (the machine is too busy to sort by sleeping)\n");
            return EXIT_FAILURE;
        }
    }
    if (got != count) {
        fprintf(stderr, "sleep_sort: got %zu results for %d numbers\n", got, (int)count);
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}
