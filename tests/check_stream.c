/*
 * check_stream.c - streaming (amap, ordered amap), run_any, cancellation
 * primitives (aiometer_sleep, aiometer_cancel_fd), deadlines (opts.timeout)
 * and lazy job sources.
 *
 * Every test makes its own pool: Check forks each test, and a forked child
 * keeps only the calling thread.  Timing bounds are loose on purpose (the
 * machine is a shared 2-core box): each one separates "woke on cancellation"
 * from "slept the full time" by a wide margin rather than measuring latency.
 * Jobs never call Check's assertions, which are only safe on the test's own
 * thread; they record what they saw and the test asserts afterwards.
 */
#define _POSIX_C_SOURCE 200809L

#include <aiometer.h>
#include <check.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- helpers ----------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A sleep that no cancellation can cut short, for jobs that must be slow. */
static void nap(double seconds)
{
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        continue;
}

/* Short names for loads in assertions, so that a failure message shows the
 * expression rather than the expansion of atomic_load. */
static size_t ld(atomic_size_t *a)
{
    return atomic_load(a);
}

static int ldi(atomic_int *a)
{
    return atomic_load(a);
}

static aiometer_pool *new_pool(size_t threads)
{
    aiometer_pool *pool = NULL;
    ck_assert_int_eq(aiometer_pool_create(&pool, threads), 0);
    ck_assert_ptr_nonnull(pool);
    return pool;
}

static void free_pool(aiometer_pool *pool)
{
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
}

/* What the jobs of one test share.  Counters are atomics because jobs run on
 * several threads; last_start is guarded by lock. */
struct probe {
    atomic_size_t started;
    atomic_size_t returned;
    atomic_size_t running;
    atomic_size_t peak;
    atomic_size_t saw_cancel; /* jobs whose aiometer_sleep said ECANCELED */
    atomic_int gate;          /* jobs with wait_gate hold until it is set */
    pthread_mutex_t lock;
    double t0;         /* when the test started the call */
    double last_start; /* latest job start, seconds after t0 */
};

enum { SLEEP_PLAIN, SLEEP_CANCELLABLE };

/* One job's argument.  The job returns this pointer, so a result can be
 * checked against args[index] without any other bookkeeping. */
struct item {
    struct probe *p;
    size_t i;
    double sleep;   /* seconds to sleep before returning */
    int how;        /* SLEEP_PLAIN or SLEEP_CANCELLABLE */
    int fail;       /* error to fail with after the sleep; 0: succeed */
    int wait_gate;  /* hold until p->gate is set (at most 10 s) */
    int use_fd;     /* wait on aiometer_cancel_fd() instead of sleeping */
    int fd_wait_ms; /* how long to wait on it; 0: 10 s */
    /* Written by the job, read by the test after the call. */
    atomic_int began;
    atomic_int done;
    int sleep_rc;        /* what aiometer_sleep returned */
    int cancelled_after; /* aiometer_cancelled() once the wait ended */
    int fd;              /* what aiometer_cancel_fd() returned */
    int fd_ready_early;  /* poll(fd, 0) before cancellation */
    int fd_poll_rc;      /* poll(fd, POLLIN, fd_wait_ms) */
    short fd_revents;
    pthread_t thread;
};

static void probe_init(struct probe *p)
{
    memset(p, 0, sizeof *p);
    atomic_init(&p->started, 0);
    atomic_init(&p->returned, 0);
    atomic_init(&p->running, 0);
    atomic_init(&p->peak, 0);
    atomic_init(&p->saw_cancel, 0);
    atomic_init(&p->gate, 0);
    pthread_mutex_init(&p->lock, NULL);
    p->t0 = now_s();
}

static void items_init(struct probe *p, struct item *items, void **args, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        memset(&items[i], 0, sizeof items[i]);
        items[i].p = p;
        items[i].i = i;
        items[i].fd = -2;
        atomic_init(&items[i].began, 0);
        atomic_init(&items[i].done, 0);
        if (args)
            args[i] = &items[i];
    }
}

/* Starts a test's probe and its n items (and args[], when not NULL). */
static void setup_items(struct probe *p, struct item *items, void **args, size_t n)
{
    probe_init(p);
    items_init(p, items, args, n);
}

static void *item_job(void *arg)
{
    struct item *it = arg;
    struct probe *p = it->p;

    it->thread = pthread_self();
    atomic_store(&it->began, 1);
    atomic_fetch_add(&p->started, 1);
    size_t running = atomic_fetch_add(&p->running, 1) + 1;
    size_t peak = atomic_load(&p->peak);
    while (running > peak && !atomic_compare_exchange_weak(&p->peak, &peak, running))
        continue;
    pthread_mutex_lock(&p->lock);
    double at = now_s() - p->t0;
    if (at > p->last_start)
        p->last_start = at;
    pthread_mutex_unlock(&p->lock);

    if (it->wait_gate) {
        double give_up = now_s() + 10.0;
        while (!atomic_load(&p->gate) && now_s() < give_up)
            nap(0.001);
    }
    if (it->use_fd) {
        it->fd = aiometer_cancel_fd();
        if (it->fd >= 0) {
            struct pollfd pfd = {.fd = it->fd, .events = POLLIN};
            it->fd_ready_early = poll(&pfd, 1, 0);
            pfd.revents = 0;
            it->fd_poll_rc = poll(&pfd, 1, it->fd_wait_ms ? it->fd_wait_ms : 10000);
            it->fd_revents = pfd.revents;
        }
    } else if (it->sleep > 0) {
        if (it->how == SLEEP_CANCELLABLE) {
            it->sleep_rc = aiometer_sleep(it->sleep);
            if (it->sleep_rc == ECANCELED)
                atomic_fetch_add(&p->saw_cancel, 1);
        } else {
            nap(it->sleep);
        }
    }
    it->cancelled_after = aiometer_cancelled();
    if (it->fail)
        aiometer_fail(it->fail);

    atomic_fetch_sub(&p->running, 1);
    atomic_store(&it->done, 1);
    atomic_fetch_add(&p->returned, 1);
    return it;
}

/* Checks one result that next delivered: its index is in range and new,
 * and it is fn(args[index]).  Marks it seen. */
static void check_result(void *result, size_t index, void **args, size_t n,
                         unsigned char *seen)
{
    ck_assert_uint_lt(index, n);
    ck_assert_msg(!seen[index], "index %zu delivered twice", index);
    ck_assert_ptr_eq(result, args[index]);
    seen[index] = 1;
}

/* Reads one result, which must be there (next says 0), and checks it. */
static void read_one(aiometer_amap *it, void **args, size_t n, unsigned char *seen)
{
    void *result = NULL;
    size_t index = (size_t)-1;
    ck_assert_int_eq(aiometer_amap_next(it, &result, &index), 0);
    check_result(result, index, args, n, seen);
}

/* Read results until next says anything but 0 or skip_rc, checking each
 * with check_result.  Each skip_rc is counted in *skipped (when skipped is
 * not NULL) and reading goes on, as it does after a job's failure.  Returns
 * the code that ended the loop. */
static int drain_skipping(aiometer_amap *it, void **args, size_t n, unsigned char *seen,
                          size_t *delivered, int skip_rc, size_t *skipped)
{
    for (;;) {
        void *result = NULL;
        size_t index = (size_t)-1;
        int rc = aiometer_amap_next(it, &result, &index);
        if (rc != 0 && skipped && rc == skip_rc) {
            (*skipped)++;
            continue;
        }
        if (rc != 0)
            return rc;
        check_result(result, index, args, n, seen);
        (*delivered)++;
    }
}

/* Read results until next says anything but 0, checking that each is
 * fn(args[index]) and comes once.  Returns that last code. */
static int drain(aiometer_amap *it, void **args, size_t n, unsigned char *seen,
                 size_t *delivered)
{
    return drain_skipping(it, args, n, seen, delivered, 0, NULL);
}

/* Reads results from..to-1 of an ordered call: each must come with its own
 * index, in input order, as the job's result &items[i]. */
static void read_in_order(aiometer_amap *it, struct item *items, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        void *result = NULL;
        size_t index = (size_t)-1;
        ck_assert_int_eq(aiometer_amap_next(it, &result, &index), 0);
        ck_assert_uint_eq(index, i);
        ck_assert_ptr_eq(result, &items[i]);
    }
}

/* Asserts that next says `want` (an end code, which is sticky). */
static void expect_end(aiometer_amap *it, int want)
{
    void *r;
    ck_assert_int_eq(aiometer_amap_next(it, &r, NULL), want);
}

/* Gives items[from..to-1] the same sleep. */
static void set_sleep(struct item *items, size_t from, size_t to, double seconds, int how)
{
    for (size_t i = from; i < to; i++) {
        items[i].sleep = seconds;
        items[i].how = how;
    }
}

/* The checks on a job that waited on aiometer_cancel_fd() and was woken by
 * cancellation, not by its own timeout. */
static void check_fd_woken(const struct item *x)
{
    ck_assert_int_ge(x->fd, 0);
    ck_assert_int_eq(x->fd_ready_early, 0);
    ck_assert_int_eq(x->fd_poll_rc, 1);
    ck_assert(x->fd_revents & POLLIN);
}

/* For a call that stopped early: every job that started has returned, and
 * the stats count the ones that never started as cancelled.  Returns how
 * many started. */
static size_t check_stopped(struct probe *p, const aiometer_stats *st, size_t n)
{
    size_t started = atomic_load(&p->started);
    ck_assert_uint_eq(ld(&p->returned), started);
    ck_assert_uint_eq(st->started, started);
    ck_assert_uint_eq(st->cancelled, n - started);
    return started;
}

/* Wait (at most 5 s) until `count` jobs have started, so that a test's
 * next call finds them on pool threads rather than running one itself. */
static void wait_started(struct probe *p, size_t count)
{
    double give_up = now_s() + 5.0;
    while (atomic_load(&p->started) < count && now_s() < give_up)
        nap(0.002);
    ck_assert_uint_ge(ld(&p->started), count);
}

static aiometer_options opts_on(aiometer_pool *pool)
{
    aiometer_options o = {0};
    o.pool = pool;
    return o;
}

/* Opens an amap of one plain 1 s job on pool o->pool and waits until it has
 * started, so that it holds one of the pool's threads for that second. */
static aiometer_amap *occupy_thread(const aiometer_options *o, struct probe *busy_p,
                                    struct item *busy, void **busy_args)
{
    aiometer_amap *busy_it = NULL;
    setup_items(busy_p, busy, busy_args, 1);
    busy[0].sleep = 1.0;
    ck_assert_int_eq(aiometer_amap_open(&busy_it, item_job, busy_args, 1, o), 0);
    wait_started(busy_p, 1);
    return busy_it;
}

/* Calls aiometer_amap_cancel after a delay, from another thread, to reach a
 * consumer that is blocked in aiometer_amap_next. */
struct canceller {
    aiometer_amap *it;
    double delay;
    int rc;
    pthread_t thread;
};

static void *canceller_main(void *arg)
{
    struct canceller *c = arg;
    nap(c->delay);
    c->rc = aiometer_amap_cancel(c->it);
    return NULL;
}

/* A job source over an array of items: hands out items[0..len-1] in order,
 * then returns end_rc on this and every later call.  It records what a test
 * needs to know about how it was called. */
struct src {
    struct item *items;
    size_t len;
    int end_rc;
    double pause;            /* seconds to spend in each call */
    atomic_size_t calls;     /* every call */
    atomic_size_t handed;    /* calls that returned an item */
    atomic_int inside;       /* a call is running */
    atomic_size_t overlaps;  /* calls that found another one running */
    atomic_int ended;        /* it has returned end_rc */
    atomic_size_t after_end; /* calls after it returned end_rc */
};

static void src_init(struct src *s, struct item *items, size_t len, int end_rc)
{
    memset(s, 0, sizeof *s);
    s->items = items;
    s->len = len;
    s->end_rc = end_rc;
    atomic_init(&s->calls, 0);
    atomic_init(&s->handed, 0);
    atomic_init(&s->inside, 0);
    atomic_init(&s->overlaps, 0);
    atomic_init(&s->ended, 0);
    atomic_init(&s->after_end, 0);
}

static int src_next(void *state, void **arg)
{
    struct src *s = state;
    int rc;

    if (atomic_exchange(&s->inside, 1))
        atomic_fetch_add(&s->overlaps, 1);
    if (atomic_load(&s->ended))
        atomic_fetch_add(&s->after_end, 1);
    atomic_fetch_add(&s->calls, 1);
    if (s->pause > 0)
        nap(s->pause);
    size_t k = atomic_load(&s->handed);
    if (k < s->len) {
        *arg = &s->items[k];
        atomic_store(&s->handed, k + 1);
        rc = 0;
    } else {
        atomic_store(&s->ended, 1);
        rc = s->end_rc;
    }
    atomic_store(&s->inside, 0);
    return rc;
}

/* Runs aiometer_run_on_each_source on its own thread, so that the test can
 * look at the call while it blocks. */
struct runner {
    struct src *src;
    aiometer_options opts;
    int rc;
    pthread_t thread;
};

static void *runner_main(void *arg)
{
    struct runner *r = arg;
    r->rc = aiometer_run_on_each_source(item_job, src_next, r->src, &r->opts);
    return NULL;
}

/* ---- amap: every result once, close waits ---------------------------- */

START_TEST(test_amap_each_result_once)
{
    enum { N = 40 };
    struct probe p;
    struct item items[N];
    void *args[N];
    unsigned char seen[N] = {0};
    aiometer_stats st;
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    size_t delivered = 0;

    setup_items(&p, items, args, N);
    /* Uneven sleeps so that jobs finish out of input order. */
    for (size_t i = 0; i < N; i++)
        items[i].sleep = (double)((i * 7) % 5) * 0.002;
    memset(&st, 0xff, sizeof st);
    o.max_at_once = 4;
    o.stats = &st;

    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    ck_assert_ptr_nonnull(it);
    ck_assert_int_eq(drain(it, args, N, seen, &delivered), AIOMETER_DONE);
    ck_assert_uint_eq(delivered, N);
    /* The end is sticky. */
    for (int k = 0; k < 3; k++)
        expect_end(it, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_close(it), 0);

    ck_assert_uint_eq(ld(&p.returned), N);
    ck_assert_uint_eq(st.started, N);
    ck_assert_uint_eq(st.completed, N);
    ck_assert_uint_eq(st.failed, 0);
    ck_assert_uint_eq(st.cancelled, 0);
    ck_assert_uint_ge(st.peak_running, 1);
    ck_assert_uint_le(st.peak_running, 4);
    ck_assert_uint_le(ld(&p.peak), 4);
    ck_assert_uint_eq(st.failed_index, (size_t)-1);
    free_pool(pool);
}
END_TEST

START_TEST(test_amap_index_may_be_null)
{
    enum { N = 8 };
    struct probe p;
    struct item items[N];
    void *args[N];
    unsigned char seen[N] = {0};
    aiometer_pool *pool = new_pool(3);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    void *result;
    int rc;
    size_t got = 0;

    setup_items(&p, items, args, N);
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    while ((rc = aiometer_amap_next(it, &result, NULL)) == 0) {
        struct item *x = result;
        ck_assert_ptr_eq(x, &items[x->i]);
        ck_assert(!seen[x->i]);
        seen[x->i] = 1;
        got++;
    }
    ck_assert_int_eq(rc, AIOMETER_DONE);
    ck_assert_uint_eq(got, N);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    free_pool(pool);
}
END_TEST

START_TEST(test_amap_empty)
{
    struct probe p;
    struct item items[1];
    void *args[1];
    aiometer_pool *pool = new_pool(2);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    void *result = NULL;

    setup_items(&p, items, args, 1);
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, 0, &o), 0);
    ck_assert_int_eq(aiometer_amap_next(it, &result, NULL), AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_next(it, &result, NULL), AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_uint_eq(ld(&p.started), 0);
    free_pool(pool);
}
END_TEST

/* On a pool whose only thread is busy with another call, the consumer runs
 * jobs itself inside next rather than wait for the thread: an amap opened by
 * a job of a one-thread pool must not deadlock. */
START_TEST(test_amap_saturated_pool_progresses)
{
    enum { N = 3 };
    struct probe busy_p, p;
    struct item busy[1], items[N];
    void *busy_args[1], *args[N];
    unsigned char seen[N] = {0};
    aiometer_pool *pool = new_pool(1);
    aiometer_options o = opts_on(pool);
    aiometer_amap *busy_it = NULL, *it = NULL;
    size_t delivered = 0;

    busy_it = occupy_thread(&o, &busy_p, busy, busy_args);
    setup_items(&p, items, args, N);
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    ck_assert_int_eq(drain(it, args, N, seen, &delivered), AIOMETER_DONE);
    ck_assert_uint_eq(delivered, N);
    ck_assert_msg(!ldi(&busy[0].done), "the results waited for the busy thread");
    for (size_t i = 0; i < N; i++)
        ck_assert(pthread_equal(items[i].thread, pthread_self()));
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_int_eq(aiometer_amap_close(busy_it), 0);
    free_pool(pool);
}
END_TEST

/* aiometer's "closing amap without reading waits for all jobs": the results
 * are dropped, but every job still runs, and close returns after the last. */
START_TEST(test_amap_close_without_reading_waits_for_all)
{
    enum { N = 20 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_stats st;
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, args, N);
    set_sleep(items, 0, N, 0.01, SLEEP_PLAIN);
    o.max_at_once = 4;
    o.max_buffered = 2; /* the buffer fills long before the jobs are done */
    o.stats = &st;

    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_uint_eq(ld(&p.returned), N);
    ck_assert_uint_eq(st.started, N);
    ck_assert_uint_eq(st.completed, N);
    ck_assert_uint_eq(st.cancelled, 0);
    free_pool(pool);
}
END_TEST

/* close before the first next, after one, mid-way, one short of the end,
 * after the last result and after AIOMETER_DONE: every job runs every time. */
START_TEST(test_amap_close_at_every_point)
{
    enum { N = 8 };
    static const size_t points[] = {0, 1, N / 2, N - 1, N, N + 1};
    aiometer_pool *pool = new_pool(3);

    for (size_t k = 0; k < sizeof points / sizeof points[0]; k++) {
        struct probe p;
        struct item items[N];
        void *args[N];
        unsigned char seen[N] = {0};
        aiometer_options o = opts_on(pool);
        aiometer_amap *it = NULL;

        setup_items(&p, items, args, N);
        for (size_t i = 0; i < N; i++)
            items[i].sleep = 0.003 * (double)(i % 3);
        o.max_at_once = 2;
        ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
        for (size_t r = 0; r < points[k]; r++) {
            if (r < N)
                read_one(it, args, N, seen);
            else
                expect_end(it, AIOMETER_DONE);
        }
        ck_assert_int_eq(aiometer_amap_close(it), 0);
        ck_assert_msg(ld(&p.returned) == N,
                      "close after %zu reads: %zu of %d jobs returned", points[k],
                      ld(&p.returned), N);
    }
    free_pool(pool);
}
END_TEST

/* ---- amap: a failing job --------------------------------------------- */

START_TEST(test_amap_failure_surfaces)
{
    enum { N = 20 };
    struct probe p;
    struct item items[N];
    void *args[N];
    unsigned char seen[N] = {0};
    aiometer_stats st;
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    size_t delivered = 0, failures = 0;
    int rc;

    setup_items(&p, items, args, N);
    set_sleep(items, 0, N, 0.01, SLEEP_PLAIN);
    items[3].fail = EIO;
    o.max_at_once = 2;
    o.stats = &st;

    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    /* Results, the error exactly once, results of jobs that did finish, end. */
    rc = drain_skipping(it, args, N, seen, &delivered, EIO, &failures);
    ck_assert_int_eq(rc, AIOMETER_DONE);
    ck_assert_uint_eq(failures, 1);
    ck_assert_msg(!seen[3], "the failed job's result was delivered");
    expect_end(it, AIOMETER_DONE);
    /* next reported the failure, so close has nothing more to say. */
    ck_assert_int_eq(aiometer_amap_close(it), 0);

    size_t started = check_stopped(&p, &st, N);
    ck_assert_msg(started < N, "all %zu jobs started despite the failure", started);
    ck_assert_uint_eq(delivered, started - 1);
    ck_assert_uint_eq(st.failed, 1);
    ck_assert_uint_eq(st.completed, started - 1);
    ck_assert_uint_eq(st.failed_index, 3);
    free_pool(pool);
}
END_TEST

START_TEST(test_amap_close_reports_unread_failure)
{
    enum { N = 10 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_stats st;
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, args, N);
    set_sleep(items, 1, N, 0.01, SLEEP_PLAIN);
    items[0].fail = EPIPE;
    o.max_at_once = 2;
    o.stats = &st;

    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    ck_assert_int_eq(aiometer_amap_close(it), EPIPE);
    ck_assert_uint_eq(st.failed, 1);
    ck_assert_uint_eq(st.failed_index, 0);
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
    free_pool(pool);
}
END_TEST

/* A job that was already running when another failed still finishes, and
 * its result comes after the error. */
START_TEST(test_amap_results_after_failure)
{
    enum { N = 2 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    void *result = NULL;
    size_t index = (size_t)-1;

    setup_items(&p, items, args, N);
    items[0].sleep = 0.4; /* plain: it does not stop when cancelled */
    items[1].sleep = 0.05;
    items[1].fail = EIO;

    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    wait_started(&p, N);
    ck_assert_int_eq(aiometer_amap_next(it, &result, &index), EIO);
    ck_assert_msg(!ldi(&items[0].done),
                  "the error waited for the slow job instead of coming first");
    ck_assert_int_eq(aiometer_amap_next(it, &result, &index), 0);
    ck_assert_uint_eq(index, 0);
    ck_assert_ptr_eq(result, args[0]);
    ck_assert_int_eq(aiometer_amap_next(it, &result, &index), AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    free_pool(pool);
}
END_TEST

/* ---- amap: cancel ------------------------------------------------------- */

/* cancel before the first next, after one, mid-way, one short of the end and
 * after the last result; then read to the end and close. */
START_TEST(test_amap_cancel_at_every_point)
{
    enum { N = 8 };
    static const size_t points[] = {0, 1, N / 2, N - 1, N};
    aiometer_pool *pool = new_pool(3);

    for (size_t k = 0; k < sizeof points / sizeof points[0]; k++) {
        struct probe p;
        struct item items[N];
        void *args[N];
        unsigned char seen[N] = {0};
        aiometer_stats st;
        aiometer_options o = opts_on(pool);
        aiometer_amap *it = NULL;
        size_t delivered = 0;

        setup_items(&p, items, args, N);
        set_sleep(items, 0, N, 0.04, SLEEP_CANCELLABLE);
        o.max_at_once = 2;
        o.stats = &st;
        ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
        for (size_t r = 0; r < points[k]; r++) {
            read_one(it, args, N, seen);
            delivered++;
        }
        ck_assert_int_eq(aiometer_amap_cancel(it), 0);
        int rc = drain(it, args, N, seen, &delivered);
        /* ECANCELED unless every result had been delivered anyway. */
        ck_assert_msg(rc == ECANCELED || (rc == AIOMETER_DONE && delivered == N),
                      "cancel after %zu reads: next said %d after %zu results", points[k],
                      rc, delivered);
        expect_end(it, rc); /* the end is sticky */
        ck_assert_int_eq(aiometer_amap_close(it), 0);

        size_t started = check_stopped(&p, &st, N);
        ck_assert_uint_le(delivered, started);
        if (points[k] == 0)
            ck_assert_msg(started < N, "cancel before any next: all %zu jobs started",
                          started);
    }
    free_pool(pool);
}
END_TEST

START_TEST(test_amap_cancel_after_end)
{
    enum { N = 5 };
    struct probe p;
    struct item items[N];
    void *args[N];
    unsigned char seen[N] = {0};
    aiometer_pool *pool = new_pool(2);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    size_t delivered = 0;
    void *result;

    setup_items(&p, items, args, N);
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    ck_assert_int_eq(drain(it, args, N, seen, &delivered), AIOMETER_DONE);
    ck_assert_uint_eq(delivered, N);
    ck_assert_int_eq(aiometer_amap_cancel(it), 0);
    ck_assert_int_eq(aiometer_amap_next(it, &result, NULL), AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    free_pool(pool);
}
END_TEST

/* A consumer blocked in next is woken by a cancel from another thread; the
 * jobs' cancellable sleeps end too. */
START_TEST(test_amap_cancel_wakes_blocked_next)
{
    enum { N = 4 };
    struct probe p;
    struct item items[N];
    void *args[N];
    unsigned char seen[N] = {0};
    aiometer_pool *pool = new_pool(N + 1);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    struct canceller c;
    size_t delivered = 0;

    setup_items(&p, items, args, N);
    set_sleep(items, 0, N, 10.0, SLEEP_CANCELLABLE);
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    c.it = it;
    c.delay = 0.1;
    c.rc = -2;
    double t0 = now_s();
    ck_assert_int_eq(pthread_create(&c.thread, NULL, canceller_main, &c), 0);
    int rc = drain(it, args, N, seen, &delivered);
    double waited = now_s() - t0;
    ck_assert_int_eq(pthread_join(c.thread, NULL), 0);
    ck_assert_int_eq(c.rc, 0);
    ck_assert_int_eq(rc, ECANCELED);
    ck_assert_msg(waited >= 0.09 && waited < 3.0, "next returned after %.3f s", waited);
    expect_end(it, ECANCELED);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_msg(now_s() - t0 < 3.0, "close took the jobs' full sleep");
    ck_assert_uint_eq(ld(&p.saw_cancel), ld(&p.started));
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
    free_pool(pool);
}
END_TEST

/* After cancel, close waits only for the jobs that are running. */
START_TEST(test_amap_close_after_cancel_waits_only_running)
{
    enum { N = 50 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_stats st;
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, args, N);
    set_sleep(items, 0, N, 5.0, SLEEP_CANCELLABLE);
    o.max_at_once = 2;
    o.stats = &st;
    double t0 = now_s();
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    wait_started(&p, 1);
    nap(0.02);
    ck_assert_int_eq(aiometer_amap_cancel(it), 0);
    ck_assert_int_eq(aiometer_amap_cancel(it), 0); /* a second cancel is harmless */
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    double took = now_s() - t0;

    size_t started = check_stopped(&p, &st, N);
    ck_assert_msg(took < 2.5, "close took %.3f s", took);
    ck_assert_uint_ge(started, 1);
    ck_assert_uint_le(started, 2);
    ck_assert_uint_eq(ld(&p.saw_cancel), started);
    free_pool(pool);
}
END_TEST

/* ---- amap: races between close/cancel and finishing jobs -------------- */

struct race_probe {
    atomic_size_t started;
    atomic_size_t returned;
};

struct race_item {
    struct race_probe *p;
    size_t i;
};

static void *race_job(void *arg)
{
    struct race_item *x = arg;
    volatile unsigned spin = 0;

    atomic_fetch_add(&x->p->started, 1);
    /* Jobs of uneven length (a few microseconds at most), so that finishing
     * orders vary.  Not sched_yield(): on a loaded machine it hands the core
     * to the load for a whole time slice, and the loop would crawl. */
    for (unsigned k = 0; k < (unsigned)(x->i % 3) * 300; k++)
        spin++;
    atomic_fetch_add(&x->p->returned, 1);
    return x;
}

/* Reads at most `most` results of a race call (or until next says anything
 * but 0), counting wrong and duplicate results rather than asserting, so
 * that the repetition's parameters can go in the failure message.  Returns
 * the last code next said, 0 if it never said anything else. */
static int race_read(aiometer_amap *it, void **args, size_t n, unsigned char *seen,
                     size_t most, size_t *delivered, size_t *wrong, size_t *dup)
{
    int rc = 0;
    for (size_t r = 0; r < most; r++) {
        void *result = NULL;
        size_t index = (size_t)-1;
        rc = aiometer_amap_next(it, &result, &index);
        if (rc != 0)
            break;
        if (index >= n || result != args[index])
            (*wrong)++;
        else if (seen[index]++)
            (*dup)++;
        (*delivered)++;
    }
    return rc;
}

/* 10,000 short calls, each ended by close at a different point, with or
 * without cancel, ordered or not, with a one-result buffer or the default.
 * Checked: no result twice, no wrong result, close never returns with a job
 * running, and without cancel every job runs. */
START_TEST(test_amap_close_early_races)
{
    enum { REPS = 10000, MAXN = 8 };
    aiometer_pool *pool = new_pool(3);
    size_t dup = 0, wrong = 0, bad_rc = 0, left_running = 0, missing = 0, bad_stats = 0;

    for (size_t rep = 0; rep < REPS; rep++) {
        struct race_probe p;
        struct race_item items[MAXN];
        void *args[MAXN];
        unsigned char seen[MAXN] = {0};
        aiometer_stats st;
        aiometer_options o = opts_on(pool);
        aiometer_amap *it = NULL;
        size_t n = 4 + rep % 5; /* 4 to 8 jobs */
        size_t mode = rep % 4;
        size_t reads = (rep / 4) % (n + 1);
        size_t delivered = 0;
        int rc = 0;

        atomic_init(&p.started, 0);
        atomic_init(&p.returned, 0);
        for (size_t i = 0; i < n; i++) {
            items[i].p = &p;
            items[i].i = i;
            args[i] = &items[i];
        }
        o.ordered = (int)((rep / 7) % 2);
        o.max_buffered = rep % 3 == 0 ? 1 : 0;
        o.max_at_once = rep % 5 == 0 ? 2 : 0;
        o.stats = &st;
        if (aiometer_amap_open(&it, race_job, args, n, &o) != 0)
            ck_abort_msg("amap_open failed at repetition %zu", rep);

        size_t want = mode == 0 ? 0 : mode == 2 ? n + 1 : reads;
        rc = race_read(it, args, n, seen, want, &delivered, &wrong, &dup);
        if ((mode == 1 && rc != 0) || (mode == 2 && rc != AIOMETER_DONE))
            bad_rc++;
        if (mode == 3) {
            if (aiometer_amap_cancel(it) != 0)
                bad_rc++;
            rc = race_read(it, args, n, seen, SIZE_MAX, &delivered, &wrong, &dup);
            if (!(rc == ECANCELED || (rc == AIOMETER_DONE && delivered == n)))
                bad_rc++;
        }
        if (aiometer_amap_close(it) != 0)
            bad_rc++;

        size_t started = atomic_load(&p.started);
        if (atomic_load(&p.returned) != started)
            left_running++;
        if (mode != 3 && started != n)
            missing++;
        if (mode == 2 && delivered != n)
            missing++;
        if (st.started != started || st.completed != started || st.cancelled != n - started)
            bad_stats++;
        if (dup || wrong || bad_rc || left_running || missing || bad_stats)
            ck_abort_msg("repetition %zu (n %zu, mode %zu, reads %zu, ordered %d, "
                         "max_buffered %zu): dup %zu wrong %zu bad_rc %zu (last %d) "
                         "left_running %zu missing %zu bad_stats %zu",
                         rep, n, mode, reads, o.ordered, o.max_buffered, dup, wrong, bad_rc,
                         rc, left_running, missing, bad_stats);
    }
    free_pool(pool);
}
END_TEST

/* ---- amap: backpressure ------------------------------------------------ */

/* A consumer that does not read stops the call once max_buffered results
 * wait for it: the started counter stops growing. */
START_TEST(test_amap_backpressure)
{
    enum { N = 100, BUF = 3, AT_ONCE = 2 };
    struct probe p;
    struct item items[N];
    void *args[N];
    unsigned char seen[N] = {0};
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    size_t delivered = 0;

    setup_items(&p, items, args, N);
    o.max_at_once = AT_ONCE;
    o.max_buffered = BUF;
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    nap(0.15);
    size_t first = atomic_load(&p.started);
    nap(0.2);
    size_t second = atomic_load(&p.started);
    ck_assert_msg(second <= BUF + AT_ONCE, "%zu jobs started with %d buffered", second, BUF);
    ck_assert_uint_ge(first, AT_ONCE);
    ck_assert_uint_eq(first, second);

    /* Reading lets the rest through. */
    ck_assert_int_eq(drain(it, args, N, seen, &delivered), AIOMETER_DONE);
    ck_assert_uint_eq(delivered, N);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    free_pool(pool);
}
END_TEST

/* Ordered results that cannot be delivered yet (job 0 is slow) count
 * against the same bound: memory does not grow while the head is late. */
START_TEST(test_amap_ordered_backpressure)
{
    enum { N = 60, BUF = 4, AT_ONCE = 2 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, args, N);
    items[0].sleep = 0.4;
    o.max_at_once = AT_ONCE;
    o.max_buffered = BUF;
    o.ordered = 1;
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    nap(0.2);
    size_t started = atomic_load(&p.started);
    ck_assert_msg(!ldi(&items[0].done), "job 0 finished too early for this test");
    ck_assert_msg(started <= BUF + AT_ONCE, "%zu jobs started behind a slow head", started);
    read_in_order(it, items, 0, N);
    expect_end(it, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    free_pool(pool);
}
END_TEST

/* ---- amap: ordered --------------------------------------------------- */

START_TEST(test_amap_ordered_in_input_order)
{
    enum { N = 40 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_stats st;
    aiometer_pool *pool = new_pool(8);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, args, N);
    /* Later jobs are mostly quicker, so finishing order is far from input order. */
    for (size_t i = 0; i < N; i++)
        items[i].sleep = (double)((N - i) % 7) * 0.003;
    o.max_at_once = 8;
    o.ordered = 1;
    o.stats = &st;
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    read_in_order(it, items, 0, N);
    expect_end(it, AIOMETER_DONE);
    expect_end(it, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_uint_eq(st.completed, N);
    free_pool(pool);
}
END_TEST

/* Each result comes out as soon as it and all before it are ready, not when
 * the whole call is done. */
START_TEST(test_amap_ordered_streams_early)
{
    enum { N = 6 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_pool *pool = new_pool(N + 1);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, args, N);
    items[N - 1].sleep = 0.6;
    o.ordered = 1;
    double t0 = now_s();
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    wait_started(&p, N);
    read_in_order(it, items, 0, N - 1);
    double early = now_s() - t0;
    ck_assert_msg(!ldi(&items[N - 1].done),
                  "the first %d results took %.3f s, waiting for the slow last job", N - 1,
                  early);
    {
        void *result = NULL;
        size_t index = (size_t)-1;
        ck_assert_int_eq(aiometer_amap_next(it, &result, &index), 0);
        ck_assert_uint_eq(index, N - 1);
        ck_assert_int_eq(aiometer_amap_next(it, &result, &index), AIOMETER_DONE);
    }
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    free_pool(pool);
}
END_TEST

START_TEST(test_amap_ordered_failure)
{
    enum { N = 12 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    size_t failures = 0, last = 0, delivered = 0;
    int rc;

    setup_items(&p, items, args, N);
    set_sleep(items, 0, N, 0.005, SLEEP_PLAIN);
    items[5].fail = ENOSPC;
    o.ordered = 1;
    o.max_at_once = 2;
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    for (;;) {
        void *result = NULL;
        size_t index = (size_t)-1;
        rc = aiometer_amap_next(it, &result, &index);
        if (rc == ENOSPC) {
            failures++;
            continue;
        }
        if (rc != 0)
            break;
        ck_assert_uint_lt(index, N);
        ck_assert_ptr_eq(result, args[index]);
        ck_assert_uint_ne(index, 5);
        if (delivered)
            ck_assert_uint_gt(index, last);
        last = index;
        delivered++;
    }
    ck_assert_int_eq(rc, AIOMETER_DONE);
    ck_assert_uint_eq(failures, 1);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    free_pool(pool);
}
END_TEST

/* ---- run_any -------------------------------------------------------- */

static aiometer_job job_of(struct item *x)
{
    aiometer_job j = {item_job, x};
    return j;
}

/* jobs[i] runs item_job on items[i]. */
static void jobs_of(aiometer_job *jobs, struct item *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        jobs[i] = job_of(&items[i]);
}

/* aiometer's own: run_any of [slow, fast] returns fast, and does not wait
 * out the slow job, which sleeps cancellably. */
START_TEST(test_run_any_slow_fast)
{
    struct probe p;
    struct item items[2];
    aiometer_job jobs[2];
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    void *result = NULL;
    size_t index = (size_t)-1;

    setup_items(&p, items, NULL, 2);
    items[0].sleep = 10.0;
    items[0].how = SLEEP_CANCELLABLE;
    items[1].sleep = 0.02;
    jobs_of(jobs, items, 2);
    double t0 = now_s();
    ck_assert_int_eq(aiometer_run_any(jobs, 2, &result, &index, &o), 0);
    double took = now_s() - t0;
    ck_assert_uint_eq(index, 1);
    ck_assert_ptr_eq(result, &items[1]);
    ck_assert_msg(took < 2.5, "run_any took %.3f s", took);
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
    if (atomic_load(&items[0].began)) {
        ck_assert_int_eq(items[0].sleep_rc, ECANCELED);
        ck_assert(items[0].cancelled_after);
    }
    free_pool(pool);
}
END_TEST

/* A loser that ignores cancellation is still waited for: run_any never
 * returns while a job of its call runs. */
START_TEST(test_run_any_waits_for_running_losers)
{
    struct probe p;
    struct item items[2];
    aiometer_job jobs[2];
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    void *result = NULL;
    size_t index = (size_t)-1;

    setup_items(&p, items, NULL, 2);
    items[0].sleep = 0.3;
    items[1].sleep = 0.02;
    jobs_of(jobs, items, 2);
    ck_assert_int_eq(aiometer_run_any(jobs, 2, &result, &index, &o), 0);
    ck_assert_uint_eq(index, 1);
    ck_assert_ptr_eq(result, &items[1]);
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
    if (atomic_load(&items[0].began))
        ck_assert(ldi(&items[0].done));
    free_pool(pool);
}
END_TEST

START_TEST(test_run_any_skips_failures)
{
    struct probe p;
    struct item items[3];
    aiometer_job jobs[3];
    aiometer_stats st;
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    void *result = NULL;
    size_t index = (size_t)-1;

    setup_items(&p, items, NULL, 3);
    items[0].fail = EIO;
    items[1].sleep = 0.01;
    items[1].fail = EPIPE;
    items[2].sleep = 0.08;
    jobs_of(jobs, items, 3);
    o.stats = &st;
    ck_assert_int_eq(aiometer_run_any(jobs, 3, &result, &index, &o), 0);
    ck_assert_uint_eq(index, 2);
    ck_assert_ptr_eq(result, &items[2]);
    ck_assert_uint_eq(st.failed, 2);
    ck_assert_uint_eq(st.completed, 1);
    free_pool(pool);
}
END_TEST

START_TEST(test_run_any_all_fail)
{
    enum { N = 4 };
    struct probe p;
    struct item items[N];
    aiometer_job jobs[N];
    aiometer_stats st;
    aiometer_pool *pool = new_pool(N + 1);
    aiometer_options o = opts_on(pool);
    void *result = NULL;
    size_t index = (size_t)-1;

    setup_items(&p, items, NULL, N);
    items[0].fail = EIO; /* fails first, by far */
    for (size_t i = 1; i < N; i++) {
        items[i].sleep = 0.2;
        items[i].fail = EPIPE;
    }
    jobs_of(jobs, items, N);
    o.stats = &st;
    ck_assert_int_eq(aiometer_run_any(jobs, N, &result, &index, &o), EIO);
    ck_assert_uint_eq(ld(&p.started), N);
    ck_assert_uint_eq(ld(&p.returned), N);
    ck_assert_uint_eq(st.failed, N);
    ck_assert_uint_eq(st.completed, 0);
    ck_assert_uint_eq(st.failed_index, 0);
    free_pool(pool);
}
END_TEST

/* After a win, jobs that have not started never start. */
START_TEST(test_run_any_losers_not_started)
{
    enum { N = 10 };
    struct probe p;
    struct item items[N];
    aiometer_job jobs[N];
    aiometer_stats st;
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    void *result = NULL;
    size_t index = (size_t)-1;

    setup_items(&p, items, NULL, N);
    set_sleep(items, 0, N, 0.005, SLEEP_PLAIN);
    jobs_of(jobs, items, N);
    o.max_at_once = 1;
    o.stats = &st;
    ck_assert_int_eq(aiometer_run_any(jobs, N, &result, &index, &o), 0);
    ck_assert_uint_lt(index, N);
    ck_assert_ptr_eq(result, &items[index]);
    /* Give a wrongly started loser time to show up. */
    nap(0.05);
    ck_assert_uint_eq(ld(&p.started), 1);
    ck_assert_uint_eq(st.started, 1);
    ck_assert_uint_eq(st.cancelled, N - 1);
    free_pool(pool);
}
END_TEST

/* W5's shape, stretched so that timing noise cannot pass for cancellation:
 * job i sleeps 50 ms * (i + 1); the call must end long before the last. */
START_TEST(test_run_any_many_sleepers)
{
    enum { N = 64 };
    struct probe p;
    struct item items[N];
    aiometer_job jobs[N];
    aiometer_pool *pool = new_pool(N);
    aiometer_options o = opts_on(pool);
    void *result = NULL;
    size_t index = (size_t)-1;

    setup_items(&p, items, NULL, N);
    for (size_t i = 0; i < N; i++) {
        items[i].sleep = 0.05 * (double)(i + 1);
        items[i].how = SLEEP_CANCELLABLE;
    }
    jobs_of(jobs, items, N);
    double t0 = now_s();
    ck_assert_int_eq(aiometer_run_any(jobs, N, &result, &index, &o), 0);
    double took = now_s() - t0;
    ck_assert_uint_lt(index, N);
    ck_assert_ptr_eq(result, &items[index]);
    ck_assert_int_eq(items[index].sleep_rc, 0);
    ck_assert_msg(took < 1.2, "run_any took %.3f s (the last job sleeps 3.2 s)", took);
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
    ck_assert_uint_ge(ld(&p.saw_cancel), ld(&p.started) / 2);
    free_pool(pool);
}
END_TEST

/* Jobs that return only after the deadline do not win: the call says
 * ETIMEDOUT, not 0. */
START_TEST(test_run_any_late_return_does_not_win)
{
    enum { N = 2 };
    struct probe p;
    struct item items[N];
    aiometer_job jobs[N];
    aiometer_pool *pool = new_pool(N + 1);
    aiometer_options o = opts_on(pool);
    void *result = NULL;
    size_t index = 77;

    setup_items(&p, items, NULL, N);
    set_sleep(items, 0, N, 0.3, SLEEP_PLAIN); /* returns normally, late */
    jobs_of(jobs, items, N);
    o.timeout = 0.1;
    ck_assert_int_eq(aiometer_run_any(jobs, N, &result, &index, &o), ETIMEDOUT);
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
    free_pool(pool);
}
END_TEST

START_TEST(test_run_any_null_outputs)
{
    struct probe p;
    struct item items[2];
    aiometer_job jobs[2];
    aiometer_pool *pool = new_pool(2);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, NULL, 2);
    jobs_of(jobs, items, 2);
    ck_assert_int_eq(aiometer_run_any(jobs, 2, NULL, NULL, &o), 0);
    ck_assert_uint_ge(ld(&p.started), 1);
    free_pool(pool);
}
END_TEST

START_TEST(test_run_any_timeout)
{
    enum { N = 3 };
    struct probe p;
    struct item items[N];
    aiometer_job jobs[N];
    aiometer_pool *pool = new_pool(N + 1);
    aiometer_options o = opts_on(pool);
    void *result = NULL;

    setup_items(&p, items, NULL, N);
    set_sleep(items, 0, N, 10.0, SLEEP_CANCELLABLE);
    jobs_of(jobs, items, N);
    o.timeout = 0.2;
    double t0 = now_s();
    ck_assert_int_eq(aiometer_run_any(jobs, N, &result, NULL, &o), ETIMEDOUT);
    double took = now_s() - t0;
    ck_assert_msg(took >= 0.18 && took < 2.5, "run_any took %.3f s", took);
    ck_assert_uint_eq(ld(&p.saw_cancel), ld(&p.started));
    free_pool(pool);
}
END_TEST

/* ---- cancellation primitives -------------------------------------------- */

START_TEST(test_sleep_outside_job)
{
    double t0 = now_s();
    ck_assert_int_eq(aiometer_sleep(0.05), 0);
    double took = now_s() - t0;
    ck_assert_msg(took >= 0.045 && took < 2.0, "slept %.3f s", took);
    ck_assert_int_eq(aiometer_sleep(0), 0);
    ck_assert_int_eq(aiometer_sleep(-1.0), EINVAL);
    ck_assert_int_eq(aiometer_sleep(NAN), EINVAL);
    ck_assert_int_eq(aiometer_cancelled(), 0);
}
END_TEST

START_TEST(test_cancel_fd_outside_job)
{
    errno = 0;
    ck_assert_int_eq(aiometer_cancel_fd(), -1);
    ck_assert_int_eq(errno, EPERM);
}
END_TEST

START_TEST(test_sleep_in_job_runs_full)
{
    struct probe p;
    struct item items[1];
    void *args[1];
    aiometer_pool *pool = new_pool(2);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, args, 1);
    items[0].sleep = 0.05;
    items[0].how = SLEEP_CANCELLABLE;
    double t0 = now_s();
    ck_assert_int_eq(aiometer_run_on_each(item_job, args, 1, &o), 0);
    ck_assert_msg(now_s() - t0 >= 0.045, "aiometer_sleep cut short");
    ck_assert_int_eq(items[0].sleep_rc, 0);
    ck_assert_int_eq(items[0].cancelled_after, 0);
    free_pool(pool);
}
END_TEST

/* Runs items[0], which waits for cancellation, and items[1], which fails
 * with EIO: the call fails with EIO well before job 0's own wait would
 * end, and job 0 did run. */
static void run_waiter_and_failer(struct item *items, void **args, const aiometer_options *o)
{
    double t0 = now_s();
    ck_assert_int_eq(aiometer_run_on_each(item_job, args, 2, o), EIO);
    double took = now_s() - t0;
    ck_assert_msg(took < 2.5, "the call took %.3f s", took);
    ck_assert(ldi(&items[0].began));
}

/* Job 0 sleeps 10 s cancellably; job 1 fails after 50 ms.  The failure
 * cancels the call, which wakes job 0 long before its sleep is over. */
START_TEST(test_sleep_wakes_on_failure)
{
    struct probe p;
    struct item items[2];
    void *args[2];
    aiometer_pool *pool = new_pool(3);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, args, 2);
    items[0].sleep = 10.0;
    items[0].how = SLEEP_CANCELLABLE;
    items[1].sleep = 0.05;
    items[1].fail = EIO;
    run_waiter_and_failer(items, args, &o);
    ck_assert_int_eq(items[0].sleep_rc, ECANCELED);
    ck_assert_int_ne(items[0].cancelled_after, 0);
    free_pool(pool);
}
END_TEST

/* The same through aiometer_cancel_fd: it is not readable before the
 * failure, and poll wakes on it after. */
START_TEST(test_cancel_fd_wakes_on_failure)
{
    struct probe p;
    struct item items[2];
    void *args[2];
    aiometer_pool *pool = new_pool(3);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, args, 2);
    items[0].use_fd = 1;
    items[1].sleep = 0.1;
    items[1].fail = EIO;
    run_waiter_and_failer(items, args, &o);
    check_fd_woken(&items[0]);
    ck_assert_int_ne(items[0].cancelled_after, 0);
    free_pool(pool);
}
END_TEST

/* aiometer_amap_cancel reaches jobs waiting on the descriptor too. */
START_TEST(test_cancel_fd_wakes_on_amap_cancel)
{
    enum { N = 2 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_pool *pool = new_pool(N + 1);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, args, N);
    for (size_t i = 0; i < N; i++)
        items[i].use_fd = 1;
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    /* Let both jobs reach poll before cancelling. */
    wait_started(&p, N);
    nap(0.05);
    double t0 = now_s();
    ck_assert_int_eq(aiometer_amap_cancel(it), 0);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    double took = now_s() - t0;
    ck_assert_msg(took < 2.5, "close after cancel took %.3f s", took);
    ck_assert_uint_eq(ld(&p.started), N);
    for (size_t i = 0; i < N; i++)
        check_fd_woken(&items[i]);
    free_pool(pool);
}
END_TEST

/* A job that only polls aiometer_cancelled() sees the failure of another. */
struct flag_item {
    atomic_int saw;
    double waited;
};

static void *flag_poller(void *arg)
{
    struct flag_item *f = arg;
    double t0 = now_s();
    while (!aiometer_cancelled() && now_s() - t0 < 10.0)
        nap(0.001);
    f->waited = now_s() - t0;
    atomic_store(&f->saw, aiometer_cancelled() ? 1 : 0);
    return NULL;
}

static void *fail_soon(void *arg)
{
    (void)arg;
    nap(0.1);
    aiometer_fail(ENOENT);
    return NULL;
}

START_TEST(test_cancelled_flag_in_job)
{
    struct flag_item f;
    aiometer_job jobs[2] = {{flag_poller, &f}, {fail_soon, NULL}};
    aiometer_pool *pool = new_pool(3);
    aiometer_options o = opts_on(pool);
    void *results[2];

    atomic_init(&f.saw, 0);
    f.waited = -1;
    ck_assert_int_eq(aiometer_run_all(jobs, 2, results, &o), ENOENT);
    ck_assert_int_eq(ldi(&f.saw), 1);
    ck_assert_msg(f.waited < 2.5, "the flag took %.3f s", f.waited);
    free_pool(pool);
}
END_TEST

/* ---- deadlines ------------------------------------------------------------ */

START_TEST(test_deadline_run_on_each)
{
    enum { N = 4 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_stats st;
    aiometer_pool *pool = new_pool(N + 1);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, args, N);
    set_sleep(items, 0, N, 10.0, SLEEP_CANCELLABLE);
    o.timeout = 0.2;
    o.stats = &st;
    double t0 = now_s();
    ck_assert_int_eq(aiometer_run_on_each(item_job, args, N, &o), ETIMEDOUT);
    double took = now_s() - t0;
    ck_assert_msg(took >= 0.18 && took < 2.5, "the call took %.3f s", took);
    ck_assert_uint_ge(ld(&p.started), 1);
    ck_assert_uint_eq(ld(&p.saw_cancel), ld(&p.started));
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
    ck_assert_uint_eq(st.started, ld(&p.started));
    free_pool(pool);
}
END_TEST

/* Jobs that ignore cancellation are waited for, but none starts after the
 * deadline. */
START_TEST(test_deadline_stops_starts)
{
    enum { N = 100 };
    const double timeout = 0.25;
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_stats st;
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, args, N);
    set_sleep(items, 0, N, 0.05, SLEEP_PLAIN);
    o.max_at_once = 2;
    o.timeout = timeout;
    o.stats = &st;
    p.t0 = now_s();
    ck_assert_int_eq(aiometer_run_on_each(item_job, args, N, &o), ETIMEDOUT);
    size_t started = check_stopped(&p, &st, N);
    ck_assert_uint_lt(started, N);
    pthread_mutex_lock(&p.lock);
    double last = p.last_start;
    pthread_mutex_unlock(&p.lock);
    ck_assert_msg(last <= timeout + 0.15, "a job started %.3f s into a %.2f s call", last,
                  timeout);
    nap(0.1);
    ck_assert_uint_eq(ld(&p.started), started);
    free_pool(pool);
}
END_TEST

/* With a deadline the calling thread only waits: it must be free to return
 * at the deadline, so it never runs a job. */
START_TEST(test_deadline_caller_runs_no_job)
{
    enum { N = 6 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_pool *pool = new_pool(2);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, args, N);
    set_sleep(items, 0, N, 0.01, SLEEP_PLAIN);
    o.timeout = 5.0;
    double t0 = now_s();
    ck_assert_int_eq(aiometer_run_on_each(item_job, args, N, &o), 0);
    ck_assert_msg(now_s() - t0 < 2.5, "a call well within its deadline was slow");
    ck_assert_uint_eq(ld(&p.returned), N);
    for (size_t i = 0; i < N; i++)
        ck_assert_msg(!pthread_equal(items[i].thread, pthread_self()),
                      "job %zu ran on the calling thread", i);
    free_pool(pool);
}
END_TEST

START_TEST(test_deadline_run_all_unstarted_null)
{
    enum { N = 5 };
    struct probe p;
    struct item items[N];
    aiometer_job jobs[N];
    void *results[N];
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, NULL, N);
    set_sleep(items, 0, N, 10.0, SLEEP_CANCELLABLE);
    jobs_of(jobs, items, N);
    for (size_t i = 0; i < N; i++)
        results[i] = &p; /* anything but NULL or the job's own result */
    o.max_at_once = 1;
    o.timeout = 0.15;
    ck_assert_int_eq(aiometer_run_all(jobs, N, results, &o), ETIMEDOUT);
    ck_assert_uint_eq(ld(&p.started), 1);
    for (size_t i = 0; i < N; i++) {
        if (atomic_load(&items[i].began))
            ck_assert_ptr_eq(results[i], &items[i]);
        else
            ck_assert_ptr_null(results[i]);
    }
    free_pool(pool);
}
END_TEST

/* amap with a deadline: results of the jobs that finished, then ETIMEDOUT. */
START_TEST(test_deadline_amap)
{
    enum { N = 6 };
    struct probe p;
    struct item items[N];
    void *args[N];
    unsigned char seen[N] = {0};
    aiometer_pool *pool = new_pool(N + 1);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    size_t delivered = 0;

    setup_items(&p, items, args, N);
    set_sleep(items, 2, N, 10.0, SLEEP_CANCELLABLE);
    o.timeout = 0.3;
    double t0 = now_s();
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, N, &o), 0);
    int rc = drain(it, args, N, seen, &delivered);
    double took = now_s() - t0;
    ck_assert_int_eq(rc, ETIMEDOUT);
    ck_assert_msg(took >= 0.25 && took < 2.5, "next ended after %.3f s", took);
    ck_assert(seen[0] && seen[1]);
    expect_end(it, ETIMEDOUT);
    ck_assert_int_eq(aiometer_amap_cancel(it), 0);
    expect_end(it, ETIMEDOUT);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
    free_pool(pool);
}
END_TEST

/* Jobs that wait on aiometer_cancel_fd() are woken at the deadline. */
START_TEST(test_deadline_wakes_cancel_fd)
{
    enum { N = 2 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_pool *pool = new_pool(N + 1);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, args, N);
    for (size_t i = 0; i < N; i++) {
        items[i].use_fd = 1;
        items[i].fd_wait_ms = 3000; /* so that a missed deadline fails, not hangs */
    }
    o.timeout = 0.2;
    double t0 = now_s();
    ck_assert_int_eq(aiometer_run_on_each(item_job, args, N, &o), ETIMEDOUT);
    double took = now_s() - t0;
    ck_assert_msg(took >= 0.18 && took < 2.5, "the call took %.3f s", took);
    for (size_t i = 0; i < N; i++) {
        if (!atomic_load(&items[i].began))
            continue;
        ck_assert_int_ge(items[i].fd, 0);
        ck_assert_int_eq(items[i].fd_poll_rc, 1);
    }
    free_pool(pool);
}
END_TEST

/* The same when the pool's only thread is busy with another call, so that
 * the job, if it runs at all before the deadline, runs on the calling
 * thread: the deadline must still end the call on time. */
START_TEST(test_deadline_busy_pool_cancel_fd)
{
    struct probe busy_p, p;
    struct item busy[1], items[1];
    void *busy_args[1], *args[1];
    aiometer_pool *pool = new_pool(1);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    it = occupy_thread(&o, &busy_p, busy, busy_args);
    setup_items(&p, items, args, 1);
    items[0].use_fd = 1;
    items[0].fd_wait_ms = 3000; /* so that a missed deadline fails, not hangs */
    o.timeout = 0.2;
    double t0 = now_s();
    ck_assert_int_eq(aiometer_run_on_each(item_job, args, 1, &o), ETIMEDOUT);
    double took = now_s() - t0;
    ck_assert_msg(took < 0.75, "a 0.2 s deadline ended the call after %.3f s", took);
    if (atomic_load(&items[0].began))
        ck_assert_int_eq(items[0].fd_poll_rc, 1);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    free_pool(pool);
}
END_TEST

START_TEST(test_deadline_not_reached)
{
    enum { N = 10 };
    struct probe p;
    struct item items[N];
    void *args[N];
    aiometer_pool *pool = new_pool(3);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, args, N);
    o.timeout = 5.0;
    ck_assert_int_eq(aiometer_run_on_each(item_job, args, N, &o), 0);
    ck_assert_uint_eq(ld(&p.returned), N);
    o.timeout = INFINITY;
    ck_assert_int_eq(aiometer_run_on_each(item_job, args, N, &o), 0);
    ck_assert_uint_eq(ld(&p.returned), 2 * N);
    free_pool(pool);
}
END_TEST

/* ---- lazy sources ------------------------------------------------------- */

START_TEST(test_source_runs_every_item)
{
    enum { N = 200 };
    struct probe p;
    struct item items[N];
    struct src s;
    aiometer_stats st;
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, NULL, N);
    src_init(&s, items, N, AIOMETER_DONE);
    o.stats = &st;
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), 0);
    ck_assert_uint_eq(ld(&p.returned), N);
    for (size_t i = 0; i < N; i++)
        ck_assert(ldi(&items[i].done));
    ck_assert_uint_eq(ld(&s.after_end), 0);
    ck_assert_uint_eq(ld(&s.calls), N + 1);
    ck_assert_uint_eq(st.started, N);
    ck_assert_uint_eq(st.completed, N);
    free_pool(pool);
}
END_TEST

/* Calls to one source never overlap, however many threads start jobs. */
START_TEST(test_source_calls_not_concurrent)
{
    enum { N = 300 };
    struct probe p;
    struct item items[N];
    struct src s;
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    void *result;
    int rc;
    size_t got = 0;

    setup_items(&p, items, NULL, N);
    set_sleep(items, 0, N, 0.0005, SLEEP_PLAIN);
    src_init(&s, items, N, AIOMETER_DONE);
    s.pause = 0.0002;
    o.max_at_once = 8;
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), 0);
    ck_assert_uint_eq(ld(&s.overlaps), 0);
    ck_assert_uint_eq(ld(&p.returned), N);

    src_init(&s, items, N, AIOMETER_DONE);
    s.pause = 0.0002;
    ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, src_next, &s, &o), 0);
    while ((rc = aiometer_amap_next(it, &result, NULL)) == 0)
        got++;
    ck_assert_int_eq(rc, AIOMETER_DONE);
    ck_assert_uint_eq(got, N);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_uint_eq(ld(&s.overlaps), 0);
    free_pool(pool);
}
END_TEST

/* With max_at_once = 2 and jobs that block, the source is asked for little
 * more than the two jobs that can run. */
START_TEST(test_source_pulled_lazily)
{
    enum { N = 50 };
    struct probe p;
    struct item items[N];
    struct src s;
    struct runner r;
    aiometer_pool *pool = new_pool(4);

    setup_items(&p, items, NULL, N);
    for (size_t i = 0; i < N; i++)
        items[i].wait_gate = 1;
    src_init(&s, items, N, AIOMETER_DONE);
    r.src = &s;
    r.opts = opts_on(pool);
    r.opts.max_at_once = 2;
    r.rc = -2;
    ck_assert_int_eq(pthread_create(&r.thread, NULL, runner_main, &r), 0);
    nap(0.2);
    size_t handed = atomic_load(&s.handed);
    size_t started = atomic_load(&p.started);
    atomic_store(&p.gate, 1);
    ck_assert_int_eq(pthread_join(r.thread, NULL), 0);
    ck_assert_uint_eq(started, 2);
    ck_assert_msg(handed <= 3, "the source was pulled %zu times ahead", handed);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_uint_eq(ld(&p.returned), N);
    free_pool(pool);
}
END_TEST

START_TEST(test_source_pulled_lazily_amap)
{
    enum { N = 50 };
    struct probe p;
    struct item items[N];
    struct src s;
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    void *result = NULL;
    size_t index = (size_t)-1, got = 0;
    int rc;

    setup_items(&p, items, NULL, N);
    for (size_t i = 0; i < N; i++)
        items[i].wait_gate = 1;
    src_init(&s, items, N, AIOMETER_DONE);
    o.max_at_once = 2;
    ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, src_next, &s, &o), 0);
    nap(0.2);
    size_t handed = atomic_load(&s.handed);
    size_t started = atomic_load(&p.started);
    atomic_store(&p.gate, 1);
    ck_assert_uint_eq(started, 2);
    ck_assert_msg(handed <= 3, "the source was pulled %zu times ahead", handed);
    /* A source's index is the order in which it handed the argument out. */
    while ((rc = aiometer_amap_next(it, &result, &index)) == 0) {
        ck_assert_uint_lt(index, N);
        ck_assert_ptr_eq(result, &items[index]);
        got++;
    }
    ck_assert_int_eq(rc, AIOMETER_DONE);
    ck_assert_uint_eq(got, N);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    free_pool(pool);
}
END_TEST

/* A source with fewer items than the call could run at once, and one that
 * is empty. */
START_TEST(test_source_ends_early)
{
    enum { N = 3 };
    struct probe p;
    struct item items[N];
    struct src s;
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    unsigned char seen[N] = {0};
    void *args[N];
    size_t delivered = 0;
    void *result;

    setup_items(&p, items, args, N);
    o.max_at_once = 8;
    src_init(&s, items, N, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), 0);
    ck_assert_uint_eq(ld(&p.returned), N);
    ck_assert_uint_eq(ld(&s.after_end), 0);

    src_init(&s, items, N, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, src_next, &s, &o), 0);
    ck_assert_int_eq(drain(it, args, N, seen, &delivered), AIOMETER_DONE);
    ck_assert_uint_eq(delivered, N);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_uint_eq(ld(&s.after_end), 0);
    ck_assert_uint_eq(ld(&p.returned), 2 * N);

    src_init(&s, items, 0, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), 0);
    src_init(&s, items, 0, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, src_next, &s, &o), 0);
    ck_assert_int_eq(aiometer_amap_next(it, &result, NULL), AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_uint_eq(ld(&p.returned), 2 * N);
    free_pool(pool);
}
END_TEST

/* A source that fails after ten items fails the call with its error, and is
 * not called again. */
START_TEST(test_source_fails)
{
    enum { N = 10 };
    struct probe p;
    struct item items[N];
    void *args[N];
    struct src s;
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    size_t eio_from_next = 0, delivered = 0;
    unsigned char seen[N] = {0};
    int rc;

    setup_items(&p, items, args, N);
    set_sleep(items, 0, N, 0.002, SLEEP_PLAIN);
    o.max_at_once = 3;
    src_init(&s, items, N, EIO);
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), EIO);
    ck_assert_uint_eq(ld(&s.after_end), 0);
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
    ck_assert_uint_le(ld(&p.started), N);

    /* The same through amap: next reports the error once, or close does. */
    src_init(&s, items, N, EIO);
    ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, src_next, &s, &o), 0);
    rc = drain_skipping(it, args, N, seen, &delivered, EIO, &eio_from_next);
    ck_assert_int_eq(rc, AIOMETER_DONE);
    int close_rc = aiometer_amap_close(it);
    ck_assert_msg(eio_from_next + (close_rc == EIO) == 1,
                  "EIO from next %zu times, close said %d", eio_from_next, close_rc);
    ck_assert(close_rc == 0 || close_rc == EIO);
    ck_assert_uint_eq(ld(&s.after_end), 0);
    free_pool(pool);
}
END_TEST

START_TEST(test_source_fails_at_once)
{
    struct item items[1];
    struct probe p;
    struct src s;
    aiometer_stats st;
    aiometer_pool *pool = new_pool(2);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, NULL, 1);
    src_init(&s, items, 0, ENOMEM);
    o.stats = &st;
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), ENOMEM);
    ck_assert_uint_eq(ld(&p.started), 0);
    ck_assert_uint_eq(ld(&s.calls), 1);
    ck_assert_uint_eq(st.started, 0);
    free_pool(pool);
}
END_TEST

/* A failing job stops the source from being pulled much further. */
START_TEST(test_source_job_failure)
{
    enum { N = 200 };
    struct probe p;
    struct item items[N];
    struct src s;
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, NULL, N);
    set_sleep(items, 0, N, 0.002, SLEEP_PLAIN);
    items[5].fail = EBADMSG;
    o.max_at_once = 2;
    src_init(&s, items, N, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), EBADMSG);
    size_t handed = atomic_load(&s.handed);
    ck_assert_msg(handed < 20, "the source was pulled %zu times for a call that failed at 6",
                  handed);
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
    free_pool(pool);
}
END_TEST

START_TEST(test_source_ordered_amap)
{
    enum { N = 30 };
    struct probe p;
    struct item items[N];
    struct src s;
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, NULL, N);
    for (size_t i = 0; i < N; i++)
        items[i].sleep = (double)((N - i) % 4) * 0.003;
    src_init(&s, items, N, AIOMETER_DONE);
    o.ordered = 1;
    o.max_at_once = 4;
    ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, src_next, &s, &o), 0);
    read_in_order(it, items, 0, N);
    expect_end(it, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    free_pool(pool);
}
END_TEST

/* An endless source (as far as the call can tell) read for a while, then
 * cancelled; nothing of the call touches it after close. */
START_TEST(test_source_endless_cancelled)
{
    enum { N = 2000 };
    struct probe p;
    struct item *items = calloc(N, sizeof *items);
    struct src s;
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    ck_assert_ptr_nonnull(items);
    setup_items(&p, items, NULL, N);
    src_init(&s, items, N, AIOMETER_DONE);
    o.max_at_once = 4;
    o.max_buffered = 8;
    ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, src_next, &s, &o), 0);
    for (size_t i = 0; i < 20; i++) {
        void *result = NULL;
        size_t index = (size_t)-1;
        ck_assert_int_eq(aiometer_amap_next(it, &result, &index), 0);
        ck_assert_ptr_eq(result, &items[index]);
    }
    ck_assert_int_eq(aiometer_amap_cancel(it), 0);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    size_t calls = atomic_load(&s.calls);
    ck_assert_msg(calls <= 20 + 8 + 4 + 2, "the source was called %zu times", calls);
    ck_assert_uint_eq(ld(&p.returned), ld(&p.started));
    nap(0.05);
    ck_assert_uint_eq(ld(&s.calls), calls);
    free_pool(pool);
    free(items);
}
END_TEST

START_TEST(test_source_deadline)
{
    enum { N = 1000 };
    struct probe p;
    struct item *items = calloc(N, sizeof *items);
    struct src s;
    aiometer_pool *pool = new_pool(4);
    aiometer_options o = opts_on(pool);

    ck_assert_ptr_nonnull(items);
    setup_items(&p, items, NULL, N);
    set_sleep(items, 0, N, 0.02, SLEEP_PLAIN);
    src_init(&s, items, N, AIOMETER_DONE);
    o.max_at_once = 2;
    o.timeout = 0.2;
    double t0 = now_s();
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), ETIMEDOUT);
    ck_assert_msg(now_s() - t0 < 2.5, "the call overran its deadline");
    size_t started = atomic_load(&p.started);
    ck_assert_uint_lt(started, 100);
    ck_assert_uint_le(ld(&s.handed), started + 2);
    ck_assert_uint_eq(ld(&p.returned), started);
    free_pool(pool);
    free(items);
}
END_TEST

/* ---- bad arguments ------------------------------------------------------ */

START_TEST(test_amap_open_bad_arguments)
{
    struct probe p;
    struct item items[3];
    void *args[3];
    aiometer_pool *pool = new_pool(2);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, args, 3);
    ck_assert_int_eq(aiometer_amap_open(NULL, item_job, args, 3, &o), EINVAL);
    ck_assert_int_eq(aiometer_amap_open(&it, NULL, args, 3, &o), EINVAL);
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, NULL, 3, &o), EINVAL);
    o.max_per_second = -1.0;
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, 3, &o), EINVAL);
    o.max_per_second = NAN;
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, 3, &o), EINVAL);
    nap(0.05);
    ck_assert_uint_eq(ld(&p.started), 0);
    free_pool(pool);
}
END_TEST

START_TEST(test_amap_source_bad_arguments)
{
    struct probe p;
    struct item items[3];
    struct src s;
    aiometer_pool *pool = new_pool(2);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;

    setup_items(&p, items, NULL, 3);
    src_init(&s, items, 3, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_open_source(NULL, item_job, src_next, &s, &o), EINVAL);
    ck_assert_int_eq(aiometer_amap_open_source(&it, NULL, src_next, &s, &o), EINVAL);
    ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, NULL, &s, &o), EINVAL);
    o.max_per_second = -1.0;
    ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, src_next, &s, &o), EINVAL);
    nap(0.05);
    ck_assert_uint_eq(ld(&s.calls), 0);
    ck_assert_uint_eq(ld(&p.started), 0);
    free_pool(pool);
}
END_TEST

START_TEST(test_amap_iterator_bad_arguments)
{
    struct probe p;
    struct item items[3];
    void *args[3];
    unsigned char seen[3] = {0};
    aiometer_pool *pool = new_pool(2);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    void *result;
    size_t index, delivered = 0;

    setup_items(&p, items, args, 3);
    ck_assert_int_eq(aiometer_amap_next(NULL, &result, &index), EINVAL);
    ck_assert_int_eq(aiometer_amap_cancel(NULL), EINVAL);
    ck_assert_int_eq(aiometer_amap_close(NULL), EINVAL);
    /* A NULL result pointer is refused without losing a result. */
    ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, 3, &o), 0);
    ck_assert_int_eq(aiometer_amap_next(it, NULL, &index), EINVAL);
    ck_assert_int_eq(drain(it, args, 3, seen, &delivered), AIOMETER_DONE);
    ck_assert_uint_eq(delivered, 3);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    free_pool(pool);
}
END_TEST

START_TEST(test_run_any_bad_arguments)
{
    struct probe p;
    struct item items[2];
    aiometer_job jobs[2];
    aiometer_pool *pool = new_pool(2);
    aiometer_options o = opts_on(pool);
    void *result;
    size_t index;

    setup_items(&p, items, NULL, 2);
    jobs_of(jobs, items, 2);
    ck_assert_int_eq(aiometer_run_any(jobs, 0, &result, &index, &o), EINVAL);
    ck_assert_int_eq(aiometer_run_any(NULL, 2, &result, &index, &o), EINVAL);
    jobs[1].fn = NULL;
    ck_assert_int_eq(aiometer_run_any(jobs, 2, &result, &index, &o), EINVAL);
    jobs[1].fn = item_job;
    o.max_per_second = -1.0;
    ck_assert_int_eq(aiometer_run_any(jobs, 2, &result, &index, &o), EINVAL);
    ck_assert_uint_eq(ld(&p.started), 0);
    free_pool(pool);
}
END_TEST

START_TEST(test_source_bad_arguments)
{
    struct probe p;
    struct item items[3];
    struct src s;
    aiometer_pool *pool = new_pool(2);
    aiometer_options o = opts_on(pool);

    setup_items(&p, items, NULL, 3);
    src_init(&s, items, 3, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_run_on_each_source(NULL, src_next, &s, &o), EINVAL);
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, NULL, &s, &o), EINVAL);
    o.max_per_second = NAN;
    ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), EINVAL);
    ck_assert_uint_eq(ld(&s.calls), 0);
    ck_assert_uint_eq(ld(&p.started), 0);
    free_pool(pool);
}
END_TEST

/* A deadline must be a number of seconds: negative or NaN is refused by
 * every entry point of this suite. */
START_TEST(test_bad_timeout)
{
    struct probe p;
    struct item items[2];
    void *args[2];
    aiometer_job jobs[2];
    struct src s;
    aiometer_pool *pool = new_pool(2);
    aiometer_options o = opts_on(pool);
    aiometer_amap *it = NULL;
    static const double bad[] = {-1.0, -INFINITY, NAN};

    setup_items(&p, items, args, 2);
    jobs_of(jobs, items, 2);
    src_init(&s, items, 2, AIOMETER_DONE);
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        o.timeout = bad[k];
        ck_assert_int_eq(aiometer_run_on_each(item_job, args, 2, &o), EINVAL);
        ck_assert_int_eq(aiometer_run_any(jobs, 2, NULL, NULL, &o), EINVAL);
        ck_assert_int_eq(aiometer_amap_open(&it, item_job, args, 2, &o), EINVAL);
        ck_assert_int_eq(aiometer_amap_open_source(&it, item_job, src_next, &s, &o), EINVAL);
        ck_assert_int_eq(aiometer_run_on_each_source(item_job, src_next, &s, &o), EINVAL);
    }
    nap(0.05);
    ck_assert_uint_eq(ld(&p.started), 0);
    ck_assert_uint_eq(ld(&s.calls), 0);
    free_pool(pool);
}
END_TEST

/* ---- the suite ---------------------------------------------------------- */

static TCase *tcase(const char *name, double timeout)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, timeout);
    return tc;
}

Suite *stream_suite(void)
{
    Suite *s = suite_create("stream");
    TCase *tc;

    tc = tcase("amap", 10);
    tcase_add_test(tc, test_amap_each_result_once);
    tcase_add_test(tc, test_amap_index_may_be_null);
    tcase_add_test(tc, test_amap_empty);
    tcase_add_test(tc, test_amap_saturated_pool_progresses);
    tcase_add_test(tc, test_amap_close_without_reading_waits_for_all);
    tcase_add_test(tc, test_amap_close_at_every_point);
    suite_add_tcase(s, tc);

    tc = tcase("amap_failure", 10);
    tcase_add_test(tc, test_amap_failure_surfaces);
    tcase_add_test(tc, test_amap_close_reports_unread_failure);
    tcase_add_test(tc, test_amap_results_after_failure);
    suite_add_tcase(s, tc);

    tc = tcase("amap_cancel", 10);
    tcase_add_test(tc, test_amap_cancel_at_every_point);
    tcase_add_test(tc, test_amap_cancel_after_end);
    tcase_add_test(tc, test_amap_cancel_wakes_blocked_next);
    tcase_add_test(tc, test_amap_close_after_cancel_waits_only_running);
    suite_add_tcase(s, tc);

    tc = tcase("amap_races", 60);
    tcase_add_test(tc, test_amap_close_early_races);
    suite_add_tcase(s, tc);

    tc = tcase("backpressure", 10);
    tcase_add_test(tc, test_amap_backpressure);
    tcase_add_test(tc, test_amap_ordered_backpressure);
    suite_add_tcase(s, tc);

    tc = tcase("ordered", 10);
    tcase_add_test(tc, test_amap_ordered_in_input_order);
    tcase_add_test(tc, test_amap_ordered_streams_early);
    tcase_add_test(tc, test_amap_ordered_failure);
    suite_add_tcase(s, tc);

    tc = tcase("run_any", 10);
    tcase_add_test(tc, test_run_any_slow_fast);
    tcase_add_test(tc, test_run_any_waits_for_running_losers);
    tcase_add_test(tc, test_run_any_skips_failures);
    tcase_add_test(tc, test_run_any_all_fail);
    tcase_add_test(tc, test_run_any_losers_not_started);
    tcase_add_test(tc, test_run_any_null_outputs);
    tcase_add_test(tc, test_run_any_timeout);
    tcase_add_test(tc, test_run_any_late_return_does_not_win);
    suite_add_tcase(s, tc);

    /* Its bound on the return time holds natively and under the sanitizers,
     * not under valgrind, which runs CK_EXCLUDE_TAGS=timing. */
    tc = tcase("run_any_timing", 10);
    tcase_set_tags(tc, "timing");
    tcase_add_test(tc, test_run_any_many_sleepers);
    suite_add_tcase(s, tc);

    tc = tcase("cancellation", 10);
    tcase_add_test(tc, test_sleep_outside_job);
    tcase_add_test(tc, test_cancel_fd_outside_job);
    tcase_add_test(tc, test_sleep_in_job_runs_full);
    tcase_add_test(tc, test_sleep_wakes_on_failure);
    tcase_add_test(tc, test_cancel_fd_wakes_on_failure);
    tcase_add_test(tc, test_cancel_fd_wakes_on_amap_cancel);
    tcase_add_test(tc, test_cancelled_flag_in_job);
    suite_add_tcase(s, tc);

    tc = tcase("deadline", 10);
    tcase_add_test(tc, test_deadline_run_on_each);
    tcase_add_test(tc, test_deadline_stops_starts);
    tcase_add_test(tc, test_deadline_caller_runs_no_job);
    tcase_add_test(tc, test_deadline_run_all_unstarted_null);
    tcase_add_test(tc, test_deadline_amap);
    tcase_add_test(tc, test_deadline_wakes_cancel_fd);
    tcase_add_test(tc, test_deadline_busy_pool_cancel_fd);
    tcase_add_test(tc, test_deadline_not_reached);
    suite_add_tcase(s, tc);

    tc = tcase("source", 10);
    tcase_add_test(tc, test_source_runs_every_item);
    tcase_add_test(tc, test_source_calls_not_concurrent);
    tcase_add_test(tc, test_source_pulled_lazily);
    tcase_add_test(tc, test_source_pulled_lazily_amap);
    tcase_add_test(tc, test_source_ends_early);
    tcase_add_test(tc, test_source_fails);
    tcase_add_test(tc, test_source_fails_at_once);
    tcase_add_test(tc, test_source_job_failure);
    tcase_add_test(tc, test_source_ordered_amap);
    tcase_add_test(tc, test_source_endless_cancelled);
    tcase_add_test(tc, test_source_deadline);
    suite_add_tcase(s, tc);

    tc = tcase("arguments", 10);
    tcase_add_test(tc, test_amap_open_bad_arguments);
    tcase_add_test(tc, test_amap_source_bad_arguments);
    tcase_add_test(tc, test_amap_iterator_bad_arguments);
    tcase_add_test(tc, test_run_any_bad_arguments);
    tcase_add_test(tc, test_source_bad_arguments);
    tcase_add_test(tc, test_bad_timeout);
    suite_add_tcase(s, tc);

    return s;
}
