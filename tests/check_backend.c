/* check_backend.c - the limiter backend interface, proved by backends written
 * here against the public header alone: a recording backend that keeps a
 * running cap and a schedule of its own, backends that fail, one that never
 * has a slot, and one that cannot wait.  Also aiometer_limiter_open with a
 * NULL name (the private backend with a running cap). */
#include "testutil.h"

#include <aiometer.h>
#include <check.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define TEST_TIMEOUT 30
#define MS (UINT64_C(1000000))

/* ---- a recording backend ------------------------------------------------------ */

/* Allows `cap` jobs at once and books starts `spacing` ns apart (its own
 * strict schedule, so the test can see that the library waits for it).  Every
 * operation is appended to a log under a mutex, with the time it came. */
enum { OP_ACQUIRE = 1, OP_BOOK, OP_RELEASE, OP_START };

struct rec_entry {
    int op;
    uint64_t t;      /* when the operation happened */
    uint64_t booked; /* OP_BOOK: the start it handed out */
};

struct recorder {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled on release, for waiting acquirers */
    int cap, used, peak;
    uint64_t spacing, next; /* schedule */
    size_t n, max;
    struct rec_entry *log;
    int closed;
    int fail_book_at; /* the k-th booking (1-based) fails with fail_err; 0: never */
    int fail_acquire_at;
    int fail_err;
    int books;
    int acquires;
    int cannot_wait; /* answer EAGAIN even when given a cancel descriptor */
};

static void rec_log(struct recorder *r, int op, uint64_t booked)
{
    if (r->n < r->max) {
        r->log[r->n].op = op;
        r->log[r->n].t = tu_now_ns();
        r->log[r->n].booked = booked;
    }
    r->n++;
}

static void rec_init(struct recorder *r, int cap, uint64_t spacing, size_t max)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->cap = cap;
    r->spacing = spacing;
    r->max = max;
    r->log = calloc(max, sizeof(*r->log));
    ck_assert_ptr_nonnull(r->log);
}

static void rec_free(struct recorder *r)
{
    free(r->log);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
}

static int rec_book(void *state, const char *key, uint64_t now, uint64_t *start)
{
    struct recorder *r = state;
    int err = 0;

    ck_assert_ptr_null(key);
    pthread_mutex_lock(&r->mu);
    r->books++;
    if (r->fail_book_at && r->books >= r->fail_book_at) {
        err = r->fail_err;
    } else {
        *start = r->next > now ? r->next : now;
        r->next = *start + r->spacing;
        rec_log(r, OP_BOOK, *start);
    }
    pthread_mutex_unlock(&r->mu);
    return err;
}

/* Waits on its own condition variable in slices of 2 ms, checking the cancel
 * descriptor between them, as the interface allows (within 10 ms). */
static int rec_acquire(void *state, const char *key, int cancel_fd)
{
    struct recorder *r = state;
    int err = 0;

    ck_assert_ptr_null(key);
    pthread_mutex_lock(&r->mu);
    r->acquires++;
    if (r->fail_acquire_at && r->acquires >= r->fail_acquire_at) {
        pthread_mutex_unlock(&r->mu);
        return r->fail_err;
    }
    while (r->used >= r->cap) {
        struct pollfd pfd = { cancel_fd, POLLIN, 0 };
        struct timespec ts;

        if (cancel_fd < 0 || r->cannot_wait) {
            err = EAGAIN;
            break;
        }
        if (poll(&pfd, 1, 0) > 0) {
            err = ECANCELED;
            break;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 2000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    if (!err) {
        r->used++;
        if (r->used > r->peak)
            r->peak = r->used;
        rec_log(r, OP_ACQUIRE, 0);
    }
    pthread_mutex_unlock(&r->mu);
    return err;
}

static void rec_release(void *state, const char *key)
{
    struct recorder *r = state;

    ck_assert_ptr_null(key);
    pthread_mutex_lock(&r->mu);
    ck_assert_int_gt(r->used, 0);
    r->used--;
    rec_log(r, OP_RELEASE, 0);
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void rec_close(void *state)
{
    struct recorder *r = state;

    r->closed++;
}

static aiometer_limiter *rec_limiter(struct recorder *r, int with_book, int with_cap)
{
    aiometer_limiter_backend be;
    aiometer_limiter *lim = NULL;

    memset(&be, 0, sizeof(be));
    be.size = sizeof(be);
    be.book = with_book ? rec_book : NULL;
    be.acquire = with_cap ? rec_acquire : NULL;
    be.release = with_cap ? rec_release : NULL;
    be.close = rec_close;
    ck_assert_int_eq(aiometer_limiter_create_backend(&lim, &be, r), 0);
    return lim;
}

/* A job that logs its start in the recorder, then sleeps `ms`. */
struct rec_job {
    struct recorder *r;
    double sleep_s;
};

static void *rec_job_fn(void *arg)
{
    struct rec_job *j = arg;

    pthread_mutex_lock(&j->r->mu);
    rec_log(j->r, OP_START, 0);
    pthread_mutex_unlock(&j->r->mu);
    if (j->sleep_s > 0)
        aiometer_sleep(j->sleep_s);
    return j;
}

static int run_rec_jobs(struct recorder *r, aiometer_limiter *lim, size_t n, double sleep_s,
                        const aiometer_options *base, aiometer_stats *st)
{
    struct rec_job job = { r, sleep_s };
    void **args = calloc(n, sizeof(*args));
    aiometer_options o = base ? *base : (aiometer_options){ 0 };
    int err;

    ck_assert_ptr_nonnull(args);
    for (size_t i = 0; i < n; i++)
        args[i] = &job;
    o.limiter = lim;
    o.stats = st;
    err = aiometer_run_on_each(rec_job_fn, args, n, &o);
    free(args);
    return err;
}

/* ---- tests ------------------------------------------------------------------- */

START_TEST(test_backend_limits_a_call)
{
    /* Cap 3, starts 5 ms apart, 40 jobs of 10 ms on 8 threads: the log must
     * show slot, then booking, then start for each job, never a start
     * before its booked time, and never more than 3 holding slots. */
    struct recorder r;
    aiometer_pool *pool;
    aiometer_options o = { 0 };
    aiometer_stats st;
    aiometer_limiter *lim;
    size_t starts = 0, books = 0, acquires = 0, releases = 0;
    uint64_t pending_booked[64];
    size_t npending = 0;

    rec_init(&r, 3, 5 * MS, 1024);
    lim = rec_limiter(&r, 1, 1);
    ck_assert_int_eq(aiometer_pool_create(&pool, 8), 0);
    o.pool = pool;
    ck_assert_int_eq(run_rec_jobs(&r, lim, 40, 0.01, &o, &st), 0);
    ck_assert_uint_eq(st.started, 40);
    ck_assert_uint_eq(st.completed, 40);
    ck_assert_int_le(r.peak, 3);
    ck_assert_int_eq(r.peak, 3); /* 40 jobs of 10 ms on 8 threads fill it */
    ck_assert_int_eq(r.used, 0);

    /* The log is in time order (appended under the mutex).  Each start
     * comes at or after some booked time not yet used, and there are never
     * more starts than bookings, nor bookings than slots taken. */
    for (size_t i = 0; i < r.n; i++) {
        struct rec_entry *e = &r.log[i];
        switch (e->op) {
        case OP_ACQUIRE:
            acquires++;
            break;
        case OP_BOOK:
            books++;
            ck_assert_uint_le(books, acquires);
            ck_assert_uint_lt(npending, 64);
            pending_booked[npending++] = e->booked;
            break;
        case OP_START: {
            size_t best = npending;
            starts++;
            ck_assert_uint_le(starts, books);
            /* Some booking handed out at or before this moment. */
            for (size_t k = 0; k < npending; k++)
                if (pending_booked[k] <= e->t && (best == npending ||
                                                  pending_booked[k] < pending_booked[best]))
                    best = k;
            ck_assert_msg(best < npending, "a job started before any booked time");
            pending_booked[best] = pending_booked[--npending];
            break;
        }
        case OP_RELEASE:
            releases++;
            ck_assert_uint_le(releases, starts);
            break;
        }
    }
    ck_assert_uint_eq(acquires, 40);
    ck_assert_uint_eq(books, 40);
    ck_assert_uint_eq(starts, 40);
    ck_assert_uint_eq(releases, 40);
    /* 40 starts 5 ms apart span at least 195 ms. */
    ck_assert_double_ge(st.elapsed, 0.19);

    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    ck_assert_int_eq(r.closed, 1);
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
    rec_free(&r);
}
END_TEST

START_TEST(test_backend_book_error_fails_call)
{
    /* The 5th booking fails with ECONNREFUSED: the call returns it, that
     * job never starts, and no slot is left taken. */
    struct recorder r;
    aiometer_options o = { 0 };
    aiometer_stats st;
    aiometer_limiter *lim;
    int err;

    rec_init(&r, 1, 0, 256);
    r.fail_book_at = 5;
    r.fail_err = ECONNREFUSED;
    lim = rec_limiter(&r, 1, 1);
    o.max_at_once = 1;
    err = run_rec_jobs(&r, lim, 20, 0, &o, &st);
    ck_assert_int_eq(err, ECONNREFUSED);
    ck_assert_uint_eq(st.started, 4);
    ck_assert_uint_eq(st.failed_index, 4);
    ck_assert_int_eq(r.used, 0);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    rec_free(&r);
}
END_TEST

START_TEST(test_backend_acquire_error_fails_call)
{
    struct recorder r;
    aiometer_options o = { 0 };
    aiometer_stats st;
    aiometer_limiter *lim;

    rec_init(&r, 4, 0, 256);
    r.fail_acquire_at = 3;
    r.fail_err = ETIMEDOUT;
    lim = rec_limiter(&r, 0, 1);
    o.max_at_once = 1;
    ck_assert_int_eq(run_rec_jobs(&r, lim, 10, 0, &o, &st), ETIMEDOUT);
    ck_assert_uint_eq(st.started, 2);
    ck_assert_int_eq(r.used, 0);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    rec_free(&r);
}
END_TEST

START_TEST(test_backend_wait_ends_at_deadline)
{
    /* No slot is ever free: jobs wait in acquire until the call's deadline,
     * which the cancel descriptor carries; the call ends promptly. */
    struct recorder r;
    aiometer_options o = { 0 };
    aiometer_stats st;
    aiometer_limiter *lim;
    uint64_t t0;

    rec_init(&r, 0, 0, 256);
    lim = rec_limiter(&r, 0, 1);
    o.timeout = 0.2;
    t0 = tu_now_ns();
    ck_assert_int_eq(run_rec_jobs(&r, lim, 5, 0, &o, &st), ETIMEDOUT);
    ck_assert_double_lt(tu_since(t0), 0.2 + 0.5);
    ck_assert_uint_eq(st.started, 0);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    rec_free(&r);
}
END_TEST

static void *win_fast(void *arg)
{
    (void)arg;
    tu_sleep(0.05);
    return (void *)1;
}

START_TEST(test_backend_wait_ends_on_win)
{
    /* run_any: job 0 wins after 50 ms while the others wait for a slot
     * that never comes (cap 1, held by the winner until it returns); the
     * win must end their waits and the call return promptly. */
    struct recorder r;
    aiometer_options o = { 0 };
    aiometer_job jobs[4];
    aiometer_limiter *lim;
    void *res = NULL;
    size_t idx = 99;
    uint64_t t0;

    rec_init(&r, 1, 0, 256);
    lim = rec_limiter(&r, 0, 1);
    for (int i = 0; i < 4; i++) {
        jobs[i].fn = win_fast;
        jobs[i].arg = NULL;
    }
    o.limiter = lim;
    o.max_at_once = 4;
    t0 = tu_now_ns();
    ck_assert_int_eq(aiometer_run_any(jobs, 4, &res, &idx, &o), 0);
    ck_assert_ptr_eq(res, (void *)1);
    ck_assert_double_lt(tu_since(t0), 0.05 + 0.5);
    /* Only the winner ever held the slot. */
    ck_assert_int_eq(r.acquires >= 1, 1);
    ck_assert_int_eq(r.used, 0);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    rec_free(&r);
}
END_TEST

START_TEST(test_backend_that_cannot_wait)
{
    /* A backend that answers EAGAIN even when it may wait: the library
     * asks again until a slot comes back, and the cap holds. */
    struct recorder r;
    aiometer_options o = { 0 };
    aiometer_stats st;
    aiometer_limiter *lim;

    rec_init(&r, 2, 0, 1024);
    r.cannot_wait = 1;
    lim = rec_limiter(&r, 0, 1);
    o.max_at_once = 6;
    ck_assert_int_eq(run_rec_jobs(&r, lim, 30, 0.005, &o, &st), 0);
    ck_assert_uint_eq(st.completed, 30);
    ck_assert_int_eq(r.peak, 2);
    ck_assert_int_eq(r.used, 0);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    rec_free(&r);
}
END_TEST

static int never_book(void *state, const char *key, uint64_t now, uint64_t *start)
{
    (void)state;
    (void)key;
    (void)now;
    *start = AIOMETER_NEVER;
    return 0;
}

static void *count_job(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
    return NULL;
}

START_TEST(test_backend_never_waits_until_deadline)
{
    aiometer_limiter_backend be = { sizeof(be), 0, never_book, NULL, NULL, NULL };
    aiometer_limiter *lim;
    aiometer_options o = { 0 };
    atomic_int ran = 0;
    void *args[3] = { &ran, &ran, &ran };
    uint64_t t0;

    ck_assert_int_eq(aiometer_limiter_create_backend(&lim, &be, NULL), 0);
    o.limiter = lim;
    o.timeout = 0.15;
    t0 = tu_now_ns();
    ck_assert_int_eq(aiometer_run_on_each(count_job, args, 3, &o), ETIMEDOUT);
    ck_assert_double_ge(tu_since(t0), 0.14);
    ck_assert_double_lt(tu_since(t0), 0.15 + 0.5);
    ck_assert_int_eq(atomic_load(&ran), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
}
END_TEST

START_TEST(test_backend_create_errors)
{
    struct recorder r;
    aiometer_limiter_backend be;
    aiometer_limiter *lim = (aiometer_limiter *)&r;

    rec_init(&r, 1, 0, 8);
    memset(&be, 0, sizeof(be));
    be.size = sizeof(be);
    be.book = rec_book;
    ck_assert_int_eq(aiometer_limiter_create_backend(NULL, &be, &r), EINVAL);
    ck_assert_int_eq(aiometer_limiter_create_backend(&lim, NULL, &r), EINVAL);
    be.size = 8;
    ck_assert_int_eq(aiometer_limiter_create_backend(&lim, &be, &r), EINVAL);
    be.size = sizeof(be);
    be.acquire = rec_acquire; /* without release */
    ck_assert_int_eq(aiometer_limiter_create_backend(&lim, &be, &r), EINVAL);
    be.acquire = NULL;
    be.release = rec_release; /* without acquire */
    ck_assert_int_eq(aiometer_limiter_create_backend(&lim, &be, &r), EINVAL);
    be.book = NULL;
    be.release = NULL; /* limits nothing */
    ck_assert_int_eq(aiometer_limiter_create_backend(&lim, &be, &r), EINVAL);
    /* Nothing was made, nothing closed, *lim untouched. */
    ck_assert_ptr_eq(lim, (aiometer_limiter *)&r);
    ck_assert_int_eq(r.closed, 0);
    rec_free(&r);
}
END_TEST

/* A backend struct from a future version, longer than ours, with garbage
 * past what we know: accepted, and only the known fields are used. */
START_TEST(test_backend_longer_struct)
{
    struct {
        aiometer_limiter_backend be;
        char future[32];
    } big;
    struct recorder r;
    aiometer_limiter *lim;

    rec_init(&r, 2, 0, 256);
    memset(&big, 0x5a, sizeof(big));
    big.be.size = sizeof(big);
    big.be.per_key = 0;
    big.be.book = rec_book;
    big.be.acquire = rec_acquire;
    big.be.release = rec_release;
    big.be.close = rec_close;
    ck_assert_int_eq(aiometer_limiter_create_backend(&lim, &big.be, &r), 0);
    ck_assert_int_eq(run_rec_jobs(&r, lim, 10, 0, NULL, NULL), 0);
    ck_assert_int_eq(r.books, 10);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    ck_assert_int_eq(r.closed, 1);
    rec_free(&r);
}
END_TEST

static void *busy_job(void *arg)
{
    (void)arg;
    tu_sleep(0.2);
    return NULL;
}

static void *busy_caller(void *arg)
{
    aiometer_options o = { 0 };
    void *args[1] = { NULL };

    o.limiter = arg;
    return (void *)(intptr_t)aiometer_run_on_each(busy_job, args, 1, &o);
}

static const char *one_key(void *arg, void *key_arg)
{
    (void)arg;
    (void)key_arg;
    return "k";
}

/* A per-key backend's book: it must be given the job's key. */
static int key_book(void *state, const char *key, uint64_t now, uint64_t *start)
{
    struct recorder *r = state;

    ck_assert_ptr_nonnull(key);
    ck_assert_str_eq(key, "k");
    pthread_mutex_lock(&r->mu);
    r->books++;
    pthread_mutex_unlock(&r->mu);
    *start = now;
    return 0;
}

START_TEST(test_backend_destroy_busy_and_per_key)
{
    struct recorder r;
    aiometer_limiter *lim;
    pthread_t t;
    aiometer_limiter_backend be = { sizeof(be), 1, key_book, NULL, NULL, rec_close };
    aiometer_options o = { 0 };
    void *args[1] = { NULL };

    rec_init(&r, 1, 0, 64);
    lim = rec_limiter(&r, 1, 1);
    tu_thread_start(&t, busy_caller, lim);
    tu_sleep(0.05);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), EBUSY);
    ck_assert_int_eq(r.closed, 0);
    ck_assert_ptr_null(tu_thread_join(t));
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    ck_assert_int_eq(r.closed, 1);

    /* A per-key backend: a call without opts.key gets EINVAL, and no
     * operation of the backend runs; with a key, the backend books. */
    r.books = 0;
    ck_assert_int_eq(aiometer_limiter_create_backend(&lim, &be, &r), 0);
    o.limiter = lim;
    ck_assert_int_eq(aiometer_run_on_each(busy_job, args, 1, &o), EINVAL);
    ck_assert_int_eq(r.books, 0);
    o.key = one_key;
    ck_assert_int_eq(aiometer_run_on_each(busy_job, args, 1, &o), 0);
    ck_assert_int_eq(r.books, 1);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    rec_free(&r);
}
END_TEST

/* ---- aiometer_limiter_open(NULL, ...): the private backend ----------------------- */

static tu_tracker open_tracker;

static void *open_tracked_job(void *arg)
{
    (void)arg;
    tu_tracker_enter(&open_tracker);
    tu_sleep(0.01);
    tu_tracker_leave(&open_tracker);
    return NULL;
}

static void *open_caller(void *arg)
{
    aiometer_options o = { 0 };
    void *args[30] = { 0 };

    o.limiter = arg;
    o.max_at_once = 8;
    return (void *)(intptr_t)aiometer_run_on_each(open_tracked_job, args, 30, &o);
}

START_TEST(test_open_private_cap_across_calls)
{
    /* Two calls in two threads, 8 at once each, share a cap of 3. */
    aiometer_limiter_options lo = { 0 };
    aiometer_limiter *lim;
    pthread_t a, b;

    tu_tracker_init(&open_tracker);
    lo.max_at_once = 3;
    ck_assert_int_eq(aiometer_limiter_open(&lim, NULL, &lo), 0);
    tu_thread_start(&a, open_caller, lim);
    tu_thread_start(&b, open_caller, lim);
    ck_assert_ptr_null(tu_thread_join(a));
    ck_assert_ptr_null(tu_thread_join(b));
    ck_assert_uint_eq(tu_tracker_finished(&open_tracker), 60);
    ck_assert_uint_eq(tu_tracker_peak(&open_tracker), 3);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
}
END_TEST

/* Tiny jobs on a cap of 1: takes and gives come microseconds apart, so
 * waiters keep registering while slots come back.  A lost wake-up hangs
 * the test (its timeout fails it); an extra slot shows in the peak. */
static tu_tracker tiny_tracker;

static void *tiny_tracked_job(void *arg)
{
    (void)arg;
    tu_tracker_enter(&tiny_tracker);
    tu_tracker_leave(&tiny_tracker);
    return NULL;
}

static void *tiny_caller(void *arg)
{
    static void *args[20000];
    aiometer_options o = { 0 };

    o.limiter = arg;
    o.max_at_once = 8;
    return (void *)(intptr_t)aiometer_run_on_each(tiny_tracked_job, args, 20000, &o);
}

START_TEST(test_open_private_cap_tiny_jobs)
{
    aiometer_limiter_options lo = { 0 };
    aiometer_limiter *lim;
    pthread_t a, b;

    tu_tracker_init(&tiny_tracker);
    lo.max_at_once = 1;
    ck_assert_int_eq(aiometer_limiter_open(&lim, NULL, &lo), 0);
    tu_thread_start(&a, tiny_caller, lim);
    tu_thread_start(&b, tiny_caller, lim);
    ck_assert_ptr_null(tu_thread_join(a));
    ck_assert_ptr_null(tu_thread_join(b));
    ck_assert_uint_eq(tu_tracker_finished(&tiny_tracker), 40000);
    ck_assert_uint_eq(tu_tracker_peak(&tiny_tracker), 1);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
}
END_TEST

static void *slot_holder_job(void *arg)
{
    (void)arg;
    tu_sleep(0.5);
    return NULL;
}

static void *slot_holder(void *arg)
{
    aiometer_options o = { 0 };
    void *args[1] = { 0 };

    o.limiter = arg;
    return (void *)(intptr_t)aiometer_run_on_each(slot_holder_job, args, 1, &o);
}

START_TEST(test_open_private_cap_wait_ends_at_deadline)
{
    /* A job waiting for the only slot, which another call holds for 0.5 s,
     * gives up at its call's deadline (0.05 s), not when the slot comes
     * back: the wait polls the call's cancel descriptor. */
    aiometer_limiter_options lo = { 0 };
    aiometer_options o = { 0 };
    aiometer_limiter *lim;
    void *args[1] = { 0 };
    pthread_t a;
    double t0;

    lo.max_at_once = 1;
    ck_assert_int_eq(aiometer_limiter_open(&lim, NULL, &lo), 0);
    tu_thread_start(&a, slot_holder, lim);
    tu_sleep(0.05); /* the holder has its slot */
    o.limiter = lim;
    o.timeout = 0.05;
    t0 = tu_now();
    ck_assert_int_eq(aiometer_run_on_each(tiny_tracked_job, args, 1, &o), ETIMEDOUT);
    ck_assert_double_lt(tu_now() - t0, 0.3);
    ck_assert_ptr_null(tu_thread_join(a));
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
}
END_TEST

START_TEST(test_open_private_rate)
{
    /* 100/s, burst 1: 21 starts take at least 0.2 s. */
    aiometer_limiter_options lo = { 0 };
    aiometer_limiter *lim;
    aiometer_options o = { 0 };
    void *args[21] = { 0 };
    uint64_t t0;

    tu_tracker_init(&open_tracker);
    lo.max_per_second = 100;
    lo.max_at_once = 2;
    ck_assert_int_eq(aiometer_limiter_open(&lim, NULL, &lo), 0);
    o.limiter = lim;
    t0 = tu_now_ns();
    ck_assert_int_eq(aiometer_run_on_each(open_tracked_job, args, 21, &o), 0);
    ck_assert_double_ge(tu_since(t0), 0.2 - 0.002);
    ck_assert_uint_le(tu_tracker_peak(&open_tracker), 2);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
}
END_TEST

START_TEST(test_open_errors)
{
    aiometer_limiter_options lo = { 0 };
    aiometer_limiter *lim = NULL;

    ck_assert_int_eq(aiometer_limiter_open(&lim, NULL, NULL), EINVAL);
    ck_assert_int_eq(aiometer_limiter_open(NULL, NULL, &lo), EINVAL);
    ck_assert_int_eq(aiometer_limiter_open(&lim, NULL, &lo), EINVAL); /* limits nothing */
    lo.max_per_second = INFINITY;
    ck_assert_int_eq(aiometer_limiter_open(&lim, NULL, &lo), EINVAL);
    lo.max_per_second = NAN;
    ck_assert_int_eq(aiometer_limiter_open(&lim, NULL, &lo), EINVAL);
    lo.max_per_second = -1;
    ck_assert_int_eq(aiometer_limiter_open(&lim, NULL, &lo), EINVAL);
    lo.max_per_second = 2e9;
    ck_assert_int_eq(aiometer_limiter_open(&lim, NULL, &lo), EINVAL);
    lo.max_per_second = 0;
    lo.max_at_once = 65536;
    ck_assert_int_eq(aiometer_limiter_open(&lim, NULL, &lo), EINVAL);
    ck_assert_ptr_null(lim);
    lo.max_at_once = 65535;
    ck_assert_int_eq(aiometer_limiter_open(&lim, NULL, &lo), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
}
END_TEST

Suite *backend_suite(void)
{
    Suite *s = suite_create("backend");
    TCase *tc = tcase_create("interface");

    tcase_set_timeout(tc, TEST_TIMEOUT);
    tcase_add_test(tc, test_backend_limits_a_call);
    tcase_add_test(tc, test_backend_book_error_fails_call);
    tcase_add_test(tc, test_backend_acquire_error_fails_call);
    tcase_add_test(tc, test_backend_wait_ends_at_deadline);
    tcase_add_test(tc, test_backend_wait_ends_on_win);
    tcase_add_test(tc, test_backend_that_cannot_wait);
    tcase_add_test(tc, test_backend_never_waits_until_deadline);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_set_timeout(tc, TEST_TIMEOUT);
    tcase_add_test(tc, test_backend_create_errors);
    tcase_add_test(tc, test_backend_longer_struct);
    tcase_add_test(tc, test_backend_destroy_busy_and_per_key);
    tcase_add_test(tc, test_open_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("private");
    tcase_set_timeout(tc, TEST_TIMEOUT);
    tcase_add_test(tc, test_open_private_cap_across_calls);
    tcase_add_test(tc, test_open_private_cap_tiny_jobs);
    tcase_add_test(tc, test_open_private_cap_wait_ends_at_deadline);
    tcase_add_test(tc, test_open_private_rate);
    suite_add_tcase(s, tc);
    return s;
}
