/*
 * rel_hostile.c - every public function given NULL, zero, huge or
 * non-finite values returns a documented error and starts nothing.
 *
 * "Starts nothing" is checked three ways: no job function runs (a counter
 * that every job bumps stays at 0), no thread appears (the process keeps
 * the one thread it started with, so not even the default pool's threads
 * were started), and nothing the caller handed in is written (out
 * parameters and opts.stats keep a sentinel value).
 *
 * The program runs in `make check`; it needs nothing but the public API.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "aiometer.h"
#include "rel_util.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_int jobs_run;
static int checks;
/* Threads the process has before the library is used: 1, or 2 under a
 * sanitizer runtime that keeps a helper thread of its own. */
static int base_threads;

static void *nothing(void *arg)
{
    return arg;
}

static void *count_job(void *arg)
{
    atomic_fetch_add(&jobs_run, 1);
    return arg;
}

static int never_source(void *state, void **arg)
{
    (void)state;
    (void)arg;
    atomic_fetch_add(&jobs_run, 1);
    return AIOMETER_DONE;
}

/* A value no library call would write, to see that an out parameter or a
 * stats struct was left alone. */
#define SENTINEL ((void *)(uintptr_t)0x5e17e1)

static aiometer_stats stats_sentinel(void)
{
    aiometer_stats s;

    memset(&s, 0xA5, sizeof(s));
    return s;
}

static int stats_untouched(const aiometer_stats *s)
{
    aiometer_stats ref = stats_sentinel();
    return memcmp(s, &ref, sizeof(ref)) == 0;
}

/* Expect `got` == `want` and that nothing started; `what` names the case. */
static void expect_refused(int got, int want, const char *what)
{
    checks++;
    REL_CHECK(got == want, "%s: returned %d (%s), expected %d (%s)", what, got,
              aiometer_strerror(got), want, aiometer_strerror(want));
    REL_CHECK(atomic_load(&jobs_run) == 0, "%s: %d job(s) ran", what, atomic_load(&jobs_run));
    REL_CHECK(rel_thread_count() == base_threads, "%s: %d threads exist, expected %d", what,
              rel_thread_count(), base_threads);
}

/* ---- option values ------------------------------------------------------------ */

/* Options that every entry point must refuse with EINVAL.  Each entry sets
 * one field to a value the header calls invalid. */
struct bad_opts {
    const char *name;
    aiometer_options o;
};

static size_t make_bad_opts(struct bad_opts *b, size_t cap)
{
    const double bad_rates[] = { NAN, -NAN, -1.0, -DBL_MIN, -INFINITY, -DBL_MAX, 1e9 * 1.5,
                                 1e10, DBL_MAX };
    const double bad_times[] = { NAN, -1.0, -DBL_MIN, -INFINITY, -DBL_MAX };
    static char names[64][64];
    size_t n = 0, i;

    for (i = 0; i < sizeof(bad_rates) / sizeof(bad_rates[0]) && n < cap; i++, n++) {
        memset(&b[n].o, 0, sizeof(b[n].o));
        b[n].o.max_per_second = bad_rates[i];
        snprintf(names[n], sizeof(names[n]), "max_per_second=%g", bad_rates[i]);
        b[n].name = names[n];
    }
    for (i = 0; i < sizeof(bad_times) / sizeof(bad_times[0]) && n < cap; i++, n++) {
        memset(&b[n].o, 0, sizeof(b[n].o));
        b[n].o.timeout = bad_times[i];
        snprintf(names[n], sizeof(names[n]), "timeout=%g", bad_times[i]);
        b[n].name = names[n];
    }
    for (i = 0; i < sizeof(bad_times) / sizeof(bad_times[0]) && n < cap; i++, n++) {
        memset(&b[n].o, 0, sizeof(b[n].o));
        b[n].o.progress_interval = bad_times[i];
        snprintf(names[n], sizeof(names[n]), "progress_interval=%g", bad_times[i]);
        b[n].name = names[n];
    }
    return n;
}

/* Every entry point with otherwise valid arguments and the bad options. */
static void entry_points_refuse(const char *name, const aiometer_options *bad)
{
    aiometer_options o = *bad;
    aiometer_stats st = stats_sentinel();
    aiometer_job jobs[3] = { { count_job, NULL }, { count_job, NULL }, { count_job, NULL } };
    void *args[3] = { NULL, NULL, NULL };
    void *results[3] = { SENTINEL, SENTINEL, SENTINEL };
    void *result = SENTINEL;
    size_t index = 77;
    aiometer_amap *it = SENTINEL;
    char what[160];

    o.stats = &st;
    snprintf(what, sizeof(what), "run_on_each with %s", name);
    expect_refused(aiometer_run_on_each(count_job, args, 3, &o), EINVAL, what);
    /* n == 0 is a valid call, but the options are still checked first. */
    snprintf(what, sizeof(what), "run_on_each n=0 with %s", name);
    expect_refused(aiometer_run_on_each(count_job, args, 0, &o), EINVAL, what);
    snprintf(what, sizeof(what), "run_on_each_source with %s", name);
    expect_refused(aiometer_run_on_each_source(count_job, never_source, NULL, &o), EINVAL, what);
    snprintf(what, sizeof(what), "run_all with %s", name);
    expect_refused(aiometer_run_all(jobs, 3, results, &o), EINVAL, what);
    REL_CHECK(results[0] == SENTINEL && results[2] == SENTINEL, "%s: results written", what);
    snprintf(what, sizeof(what), "run_any with %s", name);
    expect_refused(aiometer_run_any(jobs, 3, &result, &index, &o), EINVAL, what);
    REL_CHECK(result == SENTINEL && index == 77, "%s: result or index written", what);
    snprintf(what, sizeof(what), "amap_open with %s", name);
    expect_refused(aiometer_amap_open(&it, count_job, args, 3, &o), EINVAL, what);
    REL_CHECK(it == SENTINEL, "%s: iterator written", what);
    o.ordered = 1;
    snprintf(what, sizeof(what), "amap_open ordered with %s", name);
    expect_refused(aiometer_amap_open(&it, count_job, args, 3, &o), EINVAL, what);
    REL_CHECK(it == SENTINEL, "%s: iterator written", what);
    snprintf(what, sizeof(what), "amap_open_source with %s", name);
    expect_refused(aiometer_amap_open_source(&it, count_job, never_source, NULL, &o), EINVAL,
                   what);
    REL_CHECK(it == SENTINEL, "%s: iterator written", what);
    REL_CHECK(stats_untouched(&st), "%s: stats written on EINVAL", name);
}

/* ---- NULL and zero arguments ------------------------------------------------------------ */

static void null_arguments(void)
{
    aiometer_job jobs[3] = { { count_job, NULL }, { count_job, NULL }, { count_job, NULL } };
    aiometer_job holey[3] = { { count_job, NULL }, { NULL, NULL }, { count_job, NULL } };
    void *args[3] = { NULL, NULL, NULL };
    void *results[3] = { SENTINEL, SENTINEL, SENTINEL };
    void *result = SENTINEL;
    size_t index = 77;
    aiometer_amap *it = SENTINEL;
    aiometer_pool *pool = SENTINEL;
    aiometer_limiter *lim = SENTINEL;
    void *r = SENTINEL;

    /* Pools. */
    expect_refused(aiometer_pool_create(NULL, 4), EINVAL, "pool_create(NULL)");
    expect_refused(aiometer_pool_create(&pool, 0), EINVAL, "pool_create(0 threads)");
    expect_refused(aiometer_pool_create(&pool, AIOMETER_MAX_THREADS + 1), EINVAL,
                   "pool_create(MAX_THREADS + 1)");
    expect_refused(aiometer_pool_create(&pool, SIZE_MAX), EINVAL, "pool_create(SIZE_MAX)");
    REL_CHECK(pool == SENTINEL, "pool_create wrote *pool on EINVAL");
    expect_refused(aiometer_pool_destroy(NULL), EINVAL, "pool_destroy(NULL)");

    /* run_on_each. */
    expect_refused(aiometer_run_on_each(NULL, args, 3, NULL), EINVAL, "run_on_each(fn NULL)");
    expect_refused(aiometer_run_on_each(NULL, args, 0, NULL), EINVAL,
                   "run_on_each(fn NULL, n 0)");
    expect_refused(aiometer_run_on_each(count_job, NULL, 3, NULL), EINVAL,
                   "run_on_each(args NULL, n 3)");
    expect_refused(aiometer_run_on_each(count_job, NULL, SIZE_MAX, NULL), EINVAL,
                   "run_on_each(args NULL, n SIZE_MAX)");
    expect_refused(aiometer_run_on_each_source(NULL, never_source, NULL, NULL), EINVAL,
                   "run_on_each_source(fn NULL)");
    expect_refused(aiometer_run_on_each_source(count_job, NULL, NULL, NULL), EINVAL,
                   "run_on_each_source(next NULL)");

    /* run_all. */
    expect_refused(aiometer_run_all(NULL, 3, results, NULL), EINVAL, "run_all(jobs NULL)");
    expect_refused(aiometer_run_all(jobs, 3, NULL, NULL), EINVAL, "run_all(results NULL)");
    expect_refused(aiometer_run_all(NULL, SIZE_MAX, results, NULL), EINVAL,
                   "run_all(jobs NULL, n SIZE_MAX)");
    expect_refused(aiometer_run_all(holey, 3, results, NULL), EINVAL, "run_all(a job fn NULL)");
    REL_CHECK(results[0] == SENTINEL && results[1] == SENTINEL && results[2] == SENTINEL,
              "run_all wrote results on EINVAL");

    /* run_any. */
    expect_refused(aiometer_run_any(jobs, 0, &result, &index, NULL), EINVAL, "run_any(n 0)");
    expect_refused(aiometer_run_any(NULL, 0, &result, &index, NULL), EINVAL,
                   "run_any(jobs NULL, n 0)");
    expect_refused(aiometer_run_any(NULL, 3, &result, &index, NULL), EINVAL,
                   "run_any(jobs NULL)");
    expect_refused(aiometer_run_any(holey, 3, &result, &index, NULL), EINVAL,
                   "run_any(a job fn NULL)");
    REL_CHECK(result == SENTINEL && index == 77, "run_any wrote result/index on EINVAL");

    /* amap. */
    expect_refused(aiometer_amap_open(NULL, count_job, args, 3, NULL), EINVAL,
                   "amap_open(it NULL)");
    expect_refused(aiometer_amap_open(&it, NULL, args, 3, NULL), EINVAL, "amap_open(fn NULL)");
    expect_refused(aiometer_amap_open(&it, count_job, NULL, 3, NULL), EINVAL,
                   "amap_open(args NULL)");
    expect_refused(aiometer_amap_open_source(NULL, count_job, never_source, NULL, NULL), EINVAL,
                   "amap_open_source(it NULL)");
    expect_refused(aiometer_amap_open_source(&it, NULL, never_source, NULL, NULL), EINVAL,
                   "amap_open_source(fn NULL)");
    expect_refused(aiometer_amap_open_source(&it, count_job, NULL, NULL, NULL), EINVAL,
                   "amap_open_source(next NULL)");
    REL_CHECK(it == SENTINEL, "amap_open wrote *it on EINVAL");
    expect_refused(aiometer_amap_next(NULL, &r, NULL), EINVAL, "amap_next(NULL)");
    expect_refused(aiometer_amap_cancel(NULL), EINVAL, "amap_cancel(NULL)");
    expect_refused(aiometer_amap_close(NULL), EINVAL, "amap_close(NULL)");
    REL_CHECK(r == SENTINEL, "amap_next wrote *result on EINVAL");

    /* Limiters: NULL, zero, negative, non-finite, too fast. */
    {
        const double bad[] = { 0.0, -0.0, -1.0, NAN, INFINITY, -INFINITY, 1e9 * 1.5, DBL_MAX };
        char what[80];

        expect_refused(aiometer_limiter_create(NULL, 10.0, 1), EINVAL, "limiter_create(NULL)");
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            snprintf(what, sizeof(what), "limiter_create(rate %g)", bad[i]);
            expect_refused(aiometer_limiter_create(&lim, bad[i], 1), EINVAL, what);
        }
        REL_CHECK(lim == SENTINEL, "limiter_create wrote *lim on EINVAL");
        expect_refused(aiometer_limiter_destroy(NULL), EINVAL, "limiter_destroy(NULL)");
    }
}

/* ---- the job-side functions outside a job ------------------------------------------------------ */

static void outside_a_job(void)
{
    int fd;

    /* aiometer_fail() outside a job does nothing, whatever its value. */
    aiometer_fail(EIO);
    aiometer_fail(-1);
    aiometer_fail(INT_MIN);
    aiometer_fail(0);
    checks++;
    REL_CHECK(aiometer_cancelled() == 0, "aiometer_cancelled() outside a job");
    checks++;
    REL_CHECK(aiometer_sleep(NAN) == EINVAL, "aiometer_sleep(NaN)");
    REL_CHECK(aiometer_sleep(-NAN) == EINVAL, "aiometer_sleep(-NaN)");
    REL_CHECK(aiometer_sleep(-1.0) == EINVAL, "aiometer_sleep(-1)");
    REL_CHECK(aiometer_sleep(-INFINITY) == EINVAL, "aiometer_sleep(-inf)");
    REL_CHECK(aiometer_sleep(-DBL_MIN) == EINVAL, "aiometer_sleep(-DBL_MIN)");
    REL_CHECK(aiometer_sleep(0.0) == 0, "aiometer_sleep(0)");
    REL_CHECK(aiometer_sleep(DBL_MIN) == 0, "aiometer_sleep(DBL_MIN)");
    REL_CHECK(aiometer_sleep(1e-300) == 0, "aiometer_sleep(1e-300)");
    checks++;
    errno = 0;
    fd = aiometer_cancel_fd();
    REL_CHECK(fd == -1 && errno == EPERM, "aiometer_cancel_fd() outside a job: %d, errno %d", fd,
              errno);
    checks++;
    REL_CHECK(rel_thread_count() == base_threads, "a job-side function started a thread");
}

/* ---- values that are valid but extreme -------------------------------------------------------- */

/* The documented fallback of AIOMETER_THREADS: anything but 1..4096 gives
 * the default.  The variable is read when the default pool is made, and
 * aiometer_pool_threads(NULL) reads it until then, so this must run before
 * any call on the default pool. */
static void env_thread_counts(void)
{
    const char *bad[] = { "", "0", "-1", "4097", "99999999999999999999", "12abc", "abc", "0x10" };
    char what[80];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv("AIOMETER_THREADS", bad[i], 1);
        snprintf(what, sizeof(what), "AIOMETER_THREADS='%s'", bad[i]);
        checks++;
        REL_CHECK(aiometer_pool_threads(NULL) == AIOMETER_DEFAULT_THREADS, "%s gave %zu", what,
                  aiometer_pool_threads(NULL));
    }
    setenv("AIOMETER_THREADS", "4096", 1);
    REL_CHECK(aiometer_pool_threads(NULL) == 4096, "AIOMETER_THREADS=4096");
    setenv("AIOMETER_THREADS", "3", 1);
    REL_CHECK(aiometer_pool_threads(NULL) == 3, "AIOMETER_THREADS=3");
    checks += 2;
    REL_CHECK(rel_thread_count() == base_threads, "aiometer_pool_threads(NULL) started threads");
}

/* Zero jobs is a valid call that runs nothing and starts no thread. */
static void zero_jobs(void)
{
    aiometer_stats st = stats_sentinel();
    aiometer_options o = { 0 };
    aiometer_amap *it = NULL;
    void *r = SENTINEL;

    o.stats = &st;
    expect_refused(aiometer_run_on_each(count_job, NULL, 0, &o), 0, "run_on_each(n 0)");
    REL_CHECK(st.started == 0 && st.completed == 0 && st.failed_index == SIZE_MAX,
              "run_on_each(n 0) stats");
    st = stats_sentinel();
    expect_refused(aiometer_run_all(NULL, 0, NULL, &o), 0, "run_all(n 0)");
    REL_CHECK(st.started == 0 && st.cancelled == 0, "run_all(n 0) stats");

    /* An amap over nothing ends at once, and says so on every later call. */
    o.stats = NULL;
    checks++;
    REL_CHECK(aiometer_amap_open(&it, count_job, NULL, 0, &o) == 0, "amap_open(n 0)");
    for (int i = 0; i < 3; i++)
        REL_CHECK(aiometer_amap_next(it, &r, NULL) == AIOMETER_DONE, "amap_next(n 0) #%d", i);
    REL_CHECK(aiometer_amap_close(it) == 0, "amap_close(n 0)");
    REL_CHECK(atomic_load(&jobs_run) == 0, "amap over nothing ran a job");
}

/* A pool of the largest size starts no thread until it is used. */
static void huge_pool(void)
{
    aiometer_pool *pool = NULL;

    checks++;
    REL_CHECK(aiometer_pool_create(&pool, AIOMETER_MAX_THREADS) == 0,
              "pool_create(MAX_THREADS)");
    REL_CHECK(aiometer_pool_threads(pool) == AIOMETER_MAX_THREADS, "pool_threads");
    REL_CHECK(rel_thread_count() == base_threads, "an unused pool started threads");
    REL_CHECK(aiometer_pool_destroy(pool) == 0, "pool_destroy");
}

/* Extreme but valid option values must run the call correctly (one job, so
 * a tiny rate cannot make the test slow: the first start is immediate). */
static void extreme_valid_options(void)
{
    const double rates[] = { 0.0, INFINITY, 1e9, DBL_MIN, 1e-300, 1e-12, 0.2 };
    const double timeouts[] = { 0.0, INFINITY, DBL_MAX, 1e300 };
    aiometer_pool *pool = NULL;
    void *args[1] = { SENTINEL };
    char what[120];
    int rc;

    REL_CHECK(aiometer_pool_create(&pool, 2) == 0, "pool_create(2)");
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
        aiometer_options o = { 0 };
        o.pool = pool;
        o.max_per_second = rates[i];
        o.max_at_once = SIZE_MAX;
        o.max_burst = i % 3 == 0 ? 0 : i % 3 == 1 ? SIZE_MAX : SIZE_MAX / 2;
        o.max_buffered = 1;
        o.progress_interval = INFINITY;
        atomic_store(&jobs_run, 0);
        rc = aiometer_run_on_each(count_job, args, 1, &o);
        snprintf(what, sizeof(what), "run_on_each(max_per_second %g, max_burst %zu)", rates[i],
                 o.max_burst);
        checks++;
        /* The header holds intervals and bursts past 2^62 ns at that
         * bound, so every one of these is valid and the one job starts at
         * once (a fresh limiter has its burst available). */
        REL_CHECK(rc == 0, "%s: returned %d", what, rc);
        REL_CHECK(atomic_load(&jobs_run) == 1, "%s: %d jobs ran", what, atomic_load(&jobs_run));
    }
    for (size_t i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++) {
        aiometer_options o = { 0 };
        o.pool = pool;
        o.timeout = timeouts[i];
        atomic_store(&jobs_run, 0);
        rc = aiometer_run_on_each(count_job, args, 1, &o);
        checks++;
        REL_CHECK(rc == 0 && atomic_load(&jobs_run) == 1, "run_on_each(timeout %g): %d, %d ran",
                  timeouts[i], rc, atomic_load(&jobs_run));
    }
    {
        /* A deadline of one nanosecond has passed before any job can
         * start: the call ends with ETIMEDOUT (or, if a job was quicker
         * than the clock, with 0), and never hangs. */
        aiometer_options o = { 0 };
        o.pool = pool;
        o.timeout = DBL_MIN;
        atomic_store(&jobs_run, 0);
        rc = aiometer_run_on_each(count_job, args, 1, &o);
        checks++;
        REL_CHECK(rc == ETIMEDOUT || (rc == 0 && atomic_load(&jobs_run) == 1),
                  "run_on_each(timeout DBL_MIN): %d", rc);
    }
    {
        /* Shared limiters at the same extremes. */
        const double lrates[] = { 1e9, DBL_MIN, 1e-300, 1e-12 };
        const size_t bursts[] = { 0, 1, SIZE_MAX / 2, SIZE_MAX };
        aiometer_limiter *lim;

        for (size_t i = 0; i < sizeof(lrates) / sizeof(lrates[0]); i++) {
            for (size_t b = 0; b < sizeof(bursts) / sizeof(bursts[0]); b++) {
                aiometer_options o = { 0 };
                checks++;
                REL_CHECK(aiometer_limiter_create(&lim, lrates[i], bursts[b]) == 0,
                          "limiter_create(%g, %zu)", lrates[i], bursts[b]);
                o.pool = pool;
                o.limiter = lim;
                atomic_store(&jobs_run, 0);
                rc = aiometer_run_on_each(count_job, args, 1, &o);
                REL_CHECK(rc == 0 && atomic_load(&jobs_run) == 1,
                          "run_on_each on limiter(%g, %zu): %d", lrates[i], bursts[b], rc);
                REL_CHECK(aiometer_limiter_destroy(lim) == 0, "limiter_destroy");
            }
        }
    }
    REL_CHECK(aiometer_pool_destroy(pool) == 0, "pool_destroy");
}

/* A source that fails with odd values makes the call fail with a positive
 * error, never a crash or a negative return. */
struct odd_source {
    int value;
    int calls;
};

static int odd_source_next(void *state, void **arg)
{
    struct odd_source *s = state;

    *arg = NULL;
    return s->calls++ == 0 ? 0 : s->value;
}

static void odd_sources(void)
{
    const int values[] = { EIO, -2, INT_MIN, -1000, INT_MAX };
    aiometer_pool *pool = NULL;

    REL_CHECK(aiometer_pool_create(&pool, 2) == 0, "pool_create(2)");
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        struct odd_source s = { values[i], 0 };
        aiometer_options o = { 0 };
        int want = values[i] > 0 ? values[i] : EINVAL;
        int rc;

        o.pool = pool;
        rc = aiometer_run_on_each_source(count_job, odd_source_next, &s, &o);
        checks++;
        REL_CHECK(rc == want, "source returning %d: call returned %d, expected %d", values[i],
                  rc, want);
    }
    REL_CHECK(aiometer_pool_destroy(pool) == 0, "pool_destroy");
}

/* Messages exist for every value, including ones the library never returns. */
static void messages(void)
{
    const int values[] = { 0, AIOMETER_DONE, EINVAL, ENOMEM, EAGAIN, EBUSY, ETIMEDOUT,
                           ECANCELED, INT_MIN, INT_MAX, -12345, 123456 };

    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        const char *m = aiometer_strerror(values[i]);
        checks++;
        REL_CHECK(m != NULL && m[0] != '\0', "aiometer_strerror(%d) is empty", values[i]);
    }
    REL_CHECK(aiometer_version_string() != NULL, "aiometer_version_string()");
}

int main(void)
{
    struct bad_opts bad[64];
    size_t nbad;

    rel_watchdog(120, "rel_hostile");
    /* ThreadSanitizer starts a helper thread of its own when the first
     * thread is made: make and join one first, so that the count taken
     * here includes it. */
    {
        pthread_t t;
        REL_CHECK(pthread_create(&t, NULL, nothing, NULL) == 0, "pthread_create");
        REL_CHECK(pthread_join(t, NULL) == 0, "pthread_join");
    }
    base_threads = rel_thread_count();
    REL_CHECK(base_threads >= 1, "cannot count threads in /proc/self/task");

    /* First everything that must not even make the default pool. */
    env_thread_counts();
    null_arguments();
    nbad = make_bad_opts(bad, sizeof(bad) / sizeof(bad[0]));
    for (size_t i = 0; i < nbad; i++)
        entry_points_refuse(bad[i].name, &bad[i].o);
    outside_a_job();
    zero_jobs();
    huge_pool();

    /* Then extreme values that are valid, on an explicit pool. */
    extreme_valid_options();
    odd_sources();
    messages();

    REL_CHECK(rel_wait_thread_count(base_threads, 5.0) == base_threads,
              "threads left behind: %d", rel_thread_count());
    printf("rel_hostile: %d checks passed (%zu invalid option sets x 8 entry points)\n", checks,
           nbad);
    return 0;
}
