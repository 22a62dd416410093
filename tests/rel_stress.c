/*
 * rel_stress.c - `make stress`: the library under everything a real program
 * does to it at once, with every result checked.
 *
 *  1. mixed: 8 threads each make 10,000 calls of every entry point, half on
 *     one shared pool and half on the default pool, with job failures,
 *     amap cancellations, deadlines (opts.timeout), early amap closes, rate
 *     limits and a shared limiter mixed in;
 *  2. nested: calls three deep (run_on_each -> run_all -> amap) on a pool of
 *     one thread, from two threads at once;
 *  3. destroy: aiometer_pool_destroy and aiometer_limiter_destroy racing
 *     with calls that are finishing: EBUSY while a call is in flight, 0
 *     once it has returned, never a crash;
 *  4. fork: fork() while a pool is busy; the child uses the inherited pool,
 *     the default pool and a new one, destroys the inherited pool, and exits
 *     cleanly (it never joins threads it does not have).
 *
 * REL_STRESS_SCALE (default 1) scales the number of calls and rounds, so CI
 * can bound the time.  A watchdog ends the program if any phase hangs.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "aiometer.h"
#include "rel_util.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ThreadSanitizer does not support starting threads in the child of a
 * multi-threaded fork ("dup thread with used id"), so the fork phase is
 * left to the other builds there. */
#if defined(__SANITIZE_THREAD__)
#define REL_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define REL_UNDER_TSAN 1
#endif
#endif
#ifndef REL_UNDER_TSAN
#define REL_UNDER_TSAN 0
#endif

#define NTHREADS 8
#define CALLS_PER_THREAD 10000
#define MAXN 16

/* ---- one call's jobs ------------------------------------------------------------ */

enum kind {
    K_PLAIN,  /* return the value */
    K_FAIL,   /* aiometer_fail(EIO) */
    K_SLEEP,  /* aiometer_sleep a little: ends early if cancelled */
    K_POLLFD, /* poll the cancel descriptor a little */
    K_SPIN,   /* watch aiometer_cancelled() for a few microseconds */
    K_KINDS
};

struct call;

struct item {
    struct call *c;
    size_t i;
};

struct call {
    size_t n;
    atomic_int ran[MAXN];
    int kind[MAXN];
    double sleep_s[MAXN];
    struct item items[MAXN];
    void *args[MAXN];
    aiometer_job jobs[MAXN];
    void *results[MAXN];
    size_t pulled;     /* source: arguments handed out */
    size_t source_err; /* source: fail with ENOSPC at this index; SIZE_MAX: never */
    int has_timeout;
    atomic_int in_progress; /* progress callback running now */
};

static void *value_of(size_t i)
{
    return (void *)(uintptr_t)(0x1000 + i);
}

static void *job(void *arg)
{
    struct item *it = arg;
    struct call *c = it->c;
    int rc, fd;

    atomic_fetch_add(&c->ran[it->i], 1);
    switch (c->kind[it->i]) {
    case K_FAIL:
        aiometer_fail(EIO);
        break;
    case K_SLEEP:
        rc = aiometer_sleep(c->sleep_s[it->i]);
        REL_CHECK(rc == 0 || (rc == ECANCELED && aiometer_cancelled()),
                  "aiometer_sleep returned %d", rc);
        break;
    case K_POLLFD:
        fd = aiometer_cancel_fd();
        if (fd >= 0) {
            struct pollfd p = { fd, POLLIN, 0 };
            int n;
            while ((n = poll(&p, 1, (int)(c->sleep_s[it->i] * 1000))) < 0 && errno == EINTR)
                ;
            REL_CHECK(n >= 0, "poll on the cancel fd failed: errno %d", errno);
            REL_CHECK(n == 0 || aiometer_cancelled(), "cancel fd readable, call not cancelled");
        } else {
            REL_CHECK(errno == EMFILE || errno == ENFILE || errno == ENOMEM,
                      "aiometer_cancel_fd: errno %d", errno);
        }
        break;
    case K_SPIN: {
        uint64_t end = rel_now_ns() + 20000;
        while (rel_now_ns() < end && !aiometer_cancelled())
            ;
        break;
    }
    default:
        break;
    }
    return value_of(it->i);
}

static int source_next(void *state, void **arg)
{
    struct call *c = state;

    if (c->pulled == c->source_err)
        return ENOSPC;
    if (c->pulled == c->n)
        return AIOMETER_DONE;
    *arg = &c->items[c->pulled++];
    return 0;
}

static void on_progress(const aiometer_progress *p, void *user)
{
    struct call *c = user;

    REL_CHECK(atomic_fetch_add(&c->in_progress, 1) == 0, "progress callbacks overlap");
    REL_CHECK(p->total == c->n || p->total == (size_t)-1, "progress total %zu", p->total);
    REL_CHECK(p->started <= c->n && p->completed <= c->n && p->failed <= c->n,
              "progress counts out of range");
    atomic_fetch_sub(&c->in_progress, 1);
}

/* ---- the mixed phase ------------------------------------------------------------ */

enum op { OP_EACH, OP_SOURCE, OP_ALL, OP_ANY, OP_AMAP, OP_AMAP_CANCEL, OP_AMAP_CLOSE, OP_COUNT };
static const char *const op_names[OP_COUNT] = { "run_on_each", "run_on_each_source", "run_all",
                                                "run_any", "amap", "amap+cancel",
                                                "amap+early close" };

struct tally {
    long calls[OP_COUNT];
    long jobs;      /* jobs that ran */
    long failed;    /* calls that returned a job's or the source's error */
    long timedout;  /* calls that returned ETIMEDOUT */
    long cancelled; /* amaps that ended with ECANCELED */
    long closed;    /* amaps closed before their end */
    long late_failures; /* amap_close reported a failure after a cancel/deadline end */
};

static aiometer_pool *shared_pool;
static aiometer_limiter *shared_limiter;
static long calls_per_thread;

static size_t ran_count(struct call *c, size_t *fails_ran)
{
    size_t n = 0;

    *fails_ran = 0;
    for (size_t i = 0; i < c->n; i++) {
        int r = atomic_load(&c->ran[i]);
        REL_CHECK(r <= 1, "job %zu ran %d times", i, r);
        n += (size_t)r;
        if (r && c->kind[i] == K_FAIL)
            ++*fails_ran;
    }
    return n;
}

static void check_stats(struct call *c, const aiometer_stats *st, size_t total)
{
    size_t fails_ran, ran = ran_count(c, &fails_ran);

    REL_CHECK(st->started == ran, "stats.started %zu, %zu jobs ran", st->started, ran);
    REL_CHECK(st->failed == fails_ran, "stats.failed %zu, %zu failing jobs ran", st->failed,
              fails_ran);
    REL_CHECK(st->completed + st->failed == ran, "stats.completed %zu + failed %zu != %zu",
              st->completed, st->failed, ran);
    REL_CHECK(st->cancelled == total - ran, "stats.cancelled %zu, expected %zu", st->cancelled,
              total - ran);
}

/* The checks common to run_on_each, its source form and run_all: what the
 * return code allows about the jobs. */
static void check_run(struct call *c, int rc, const aiometer_options *o, size_t total,
                      struct tally *t)
{
    size_t fails_ran, ran = ran_count(c, &fails_ran);

    t->jobs += (long)ran;
    if (rc == 0) {
        REL_CHECK(ran == total && fails_ran == 0, "rc 0 but %zu of %zu ran, %zu failed", ran,
                  total, fails_ran);
    } else if (rc == ETIMEDOUT) {
        REL_CHECK(c->has_timeout, "ETIMEDOUT without a timeout");
        t->timedout++;
    } else if (rc == EIO) {
        REL_CHECK(fails_ran > 0, "EIO but no failing job ran");
        t->failed++;
    } else {
        REL_CHECK(rc == ENOSPC && c->source_err != SIZE_MAX, "unexpected return %d (%s)", rc,
                  aiometer_strerror(rc));
        t->failed++;
    }
    check_stats(c, o->stats, total);
}

/* Drain an amap.  `cancel_after` / `close_after`: act after that many
 * results (SIZE_MAX: never).  Checks every value, that nothing comes twice,
 * order when asked, and at the end that every job that ran and did not fail
 * was delivered. */
static void drain_amap(struct call *c, aiometer_amap *it, int ordered, size_t cancel_after,
                       size_t close_after, size_t total, struct tally *t)
{
    int seen[MAXN] = { 0 }, errors = 0, rc;
    size_t taken = 0, index, last = 0, fails_ran;
    void *r;

    for (;;) {
        if (taken == cancel_after) {
            REL_CHECK(aiometer_amap_cancel(it) == 0, "amap_cancel");
            cancel_after = SIZE_MAX;
        }
        if (taken == close_after) {
            rc = aiometer_amap_close(it);
            ran_count(c, &fails_ran);
            REL_CHECK(rc == 0 || (rc == EIO && fails_ran > 0 && !errors) ||
                          (rc == ETIMEDOUT && c->has_timeout) ||
                          (rc == ENOSPC && c->source_err != SIZE_MAX && !errors),
                      "early amap_close returned %d", rc);
            t->closed++;
            t->jobs += (long)ran_count(c, &fails_ran);
            return;
        }
        rc = aiometer_amap_next(it, &r, &index);
        if (rc == 0) {
            REL_CHECK(index < total, "amap index %zu of %zu", index, total);
            REL_CHECK(!seen[index]++, "amap result %zu delivered twice", index);
            REL_CHECK(r == value_of(index), "amap result %zu wrong", index);
            REL_CHECK(atomic_load(&c->ran[index]) == 1 && c->kind[index] != K_FAIL,
                      "amap delivered job %zu, which did not succeed", index);
            REL_CHECK(!ordered || taken == 0 || index > last, "ordered amap: %zu after %zu",
                      index, last);
            last = index;
            taken++;
            continue;
        }
        if (rc == EIO || rc == ENOSPC) {
            REL_CHECK(!errors++, "amap reported a failure twice");
            ran_count(c, &fails_ran);
            REL_CHECK(rc == ENOSPC ? c->source_err != SIZE_MAX : fails_ran > 0,
                      "amap_next returned %d without a cause", rc);
            t->failed++;
            continue;
        }
        REL_CHECK(rc == AIOMETER_DONE || (rc == ETIMEDOUT && c->has_timeout) || rc == ECANCELED,
                  "amap_next returned %d (%s)", rc, aiometer_strerror(rc));
        if (rc == ETIMEDOUT)
            t->timedout++;
        if (rc == ECANCELED)
            t->cancelled++;
        break;
    }
    /* The end: every job that ran and succeeded was delivered, once.  The
     * end is sticky. */
    for (size_t i = 0; i < total; i++) {
        int ok = atomic_load(&c->ran[i]) == 1 && c->kind[i] != K_FAIL;
        REL_CHECK(ok == (seen[i] == 1), "job %zu: ran %d, kind %d, delivered %d", i,
                  atomic_load(&c->ran[i]), c->kind[i], seen[i]);
    }
    REL_CHECK(aiometer_amap_next(it, &r, &index) == rc, "amap end not repeated");
    {
        /* close returns a failure next has not reported: one that came
         * after the call had already stopped for a cancel or the deadline,
         * which next then reports as the end. */
        int end = rc;
        ran_count(c, &fails_ran);
        rc = aiometer_amap_close(it);
        /* The source's own error (ENOSPC here) is such a failure too. */
        REL_CHECK(rc == 0 ||
                      (rc == EIO && !errors && fails_ran > 0 && end != AIOMETER_DONE) ||
                      (rc == ENOSPC && !errors && c->source_err != SIZE_MAX &&
                       end != AIOMETER_DONE),
                  "amap_close after the end (%d) returned %d", end, rc);
        if (rc == EIO || rc == ENOSPC)
            t->late_failures++;
    }
    t->jobs += (long)ran_count(c, &fails_ran);
}

static void setup_call(struct call *c, uint64_t *rng, int op)
{
    size_t i;
    int fail_mode = (int)rel_below(rng, 8); /* 0, 1: one or two failing jobs */

    memset(c, 0, sizeof(*c));
    c->n = 1 + rel_below(rng, MAXN);
    c->source_err = SIZE_MAX;
    for (i = 0; i < c->n; i++) {
        size_t k = rel_below(rng, 10);
        c->kind[i] = k < 5 ? K_PLAIN : k < 7 ? K_SLEEP : k < 8 ? K_SPIN : k < 9 ? K_POLLFD
                                                                        : K_PLAIN;
        c->sleep_s[i] = 1e-5 * (double)(1 + rel_below(rng, 20));
        c->items[i].c = c;
        c->items[i].i = i;
        c->args[i] = &c->items[i];
        c->jobs[i].fn = job;
        c->jobs[i].arg = &c->items[i];
        c->results[i] = (void *)(uintptr_t)0xbad;
        atomic_init(&c->ran[i], 0);
    }
    if (fail_mode <= 1) {
        c->kind[rel_below(rng, c->n)] = K_FAIL;
        if (fail_mode == 1)
            c->kind[rel_below(rng, c->n)] = K_FAIL;
    }
    /* run_any with every job failing, now and then. */
    if (op == OP_ANY && rel_below(rng, 16) == 0)
        for (i = 0; i < c->n; i++)
            c->kind[i] = K_FAIL;
    if (op == OP_SOURCE || op == OP_AMAP_CLOSE) {
        if (rel_below(rng, 8) == 0)
            c->source_err = rel_below(rng, c->n + 1);
    }
    atomic_init(&c->in_progress, 0);
}

static void setup_opts(aiometer_options *o, aiometer_stats *st, struct call *c, uint64_t *rng,
                       int use_default)
{
    memset(o, 0, sizeof(*o));
    o->pool = use_default ? NULL : shared_pool;
    o->max_at_once = rel_below(rng, 6); /* 0: no cap of its own */
    if (rel_below(rng, 6) == 0) {
        c->has_timeout = 1;
        o->timeout = 1e-4 * (double)(1 + rel_below(rng, 30));
    }
    switch (rel_below(rng, 10)) {
    case 0:
        o->max_per_second = 2e4 + (double)rel_below(rng, 100000);
        o->max_burst = rel_below(rng, 8);
        break;
    case 1:
        o->limiter = shared_limiter;
        break;
    default:
        break;
    }
    if (rel_below(rng, 8) == 0) {
        o->progress = on_progress;
        o->progress_arg = c;
        o->progress_interval = 1e-5;
    }
    o->stats = st;
}

static void one_call(uint64_t *rng, struct tally *t, int use_default)
{
    struct call c;
    aiometer_options o;
    aiometer_stats st;
    aiometer_amap *it;
    int op = (int)rel_below(rng, OP_COUNT), rc;
    void *result;
    size_t index;

    setup_call(&c, rng, op);
    setup_opts(&o, &st, &c, rng, use_default);
    t->calls[op]++;
    switch (op) {
    case OP_EACH:
        rc = aiometer_run_on_each(job, c.args, c.n, &o);
        check_run(&c, rc, &o, c.n, t);
        break;
    case OP_SOURCE:
        rc = aiometer_run_on_each_source(job, source_next, &c, &o);
        check_run(&c, rc, &o, c.pulled, t);
        REL_CHECK(rc != 0 || c.pulled == c.n, "source: rc 0 after %zu of %zu", c.pulled, c.n);
        break;
    case OP_ALL:
        rc = aiometer_run_all(c.jobs, c.n, c.results, &o);
        check_run(&c, rc, &o, c.n, t);
        for (size_t i = 0; i < c.n; i++)
            REL_CHECK(atomic_load(&c.ran[i]) ? c.results[i] == value_of(i) : c.results[i] == NULL,
                      "run_all: results[%zu] wrong (ran %d)", i, atomic_load(&c.ran[i]));
        break;
    case OP_ANY: {
        size_t fails_ran, ran, fails = 0;

        result = NULL;
        index = SIZE_MAX;
        rc = aiometer_run_any(c.jobs, c.n, &result, &index, &o);
        ran = ran_count(&c, &fails_ran);
        t->jobs += (long)ran;
        for (size_t i = 0; i < c.n; i++)
            fails += c.kind[i] == K_FAIL;
        if (rc == 0) {
            REL_CHECK(index < c.n && c.kind[index] != K_FAIL && atomic_load(&c.ran[index]) == 1,
                      "run_any: winner %zu did not succeed", index);
            REL_CHECK(result == value_of(index), "run_any: wrong result");
        } else if (rc == EIO) {
            REL_CHECK(fails == c.n && ran == c.n, "run_any: EIO, but %zu of %zu jobs fail", fails,
                      c.n);
            t->failed++;
        } else {
            REL_CHECK(rc == ETIMEDOUT && c.has_timeout, "run_any returned %d", rc);
            t->timedout++;
        }
        break;
    }
    default: {
        int ordered = (int)rel_below(rng, 2);
        size_t cancel_after = SIZE_MAX, close_after = SIZE_MAX, total;

        o.ordered = ordered;
        o.max_buffered = rel_below(rng, 5);
        if (op == OP_AMAP_CANCEL)
            cancel_after = rel_below(rng, c.n);
        if (op == OP_AMAP_CLOSE)
            close_after = rel_below(rng, c.n);
        if (op == OP_AMAP_CLOSE && rel_below(rng, 2)) {
            rc = aiometer_amap_open_source(&it, job, source_next, &c, &o);
            total = c.n;
        } else {
            c.source_err = SIZE_MAX;
            rc = aiometer_amap_open(&it, job, c.args, c.n, &o);
            total = c.n;
        }
        REL_CHECK(rc == 0, "amap_open returned %d", rc);
        drain_amap(&c, it, ordered, cancel_after, close_after, total, t);
        break;
    }
    }
}

struct mixed_arg {
    int id;
    struct tally t;
};

static void *mixed_thread(void *arg)
{
    struct mixed_arg *m = arg;
    uint64_t rng = UINT64_C(0x5eed) * (uint64_t)(m->id + 1);

    for (long i = 0; i < calls_per_thread; i++)
        one_call(&rng, &m->t, (int)(i & 1));
    return NULL;
}

static void phase_mixed(void)
{
    pthread_t th[NTHREADS];
    struct mixed_arg m[NTHREADS];
    struct tally sum;
    double t0 = rel_now();
    long calls = 0;

    memset(m, 0, sizeof(m));
    memset(&sum, 0, sizeof(sum));
    REL_CHECK(aiometer_pool_create(&shared_pool, 6) == 0, "pool_create");
    REL_CHECK(aiometer_limiter_create(&shared_limiter, 2e5, 64) == 0, "limiter_create");
    for (int i = 0; i < NTHREADS; i++) {
        m[i].id = i;
        REL_CHECK(pthread_create(&th[i], NULL, mixed_thread, &m[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < NTHREADS; i++) {
        REL_CHECK(pthread_join(th[i], NULL) == 0, "pthread_join");
        for (int k = 0; k < OP_COUNT; k++)
            sum.calls[k] += m[i].t.calls[k];
        sum.jobs += m[i].t.jobs;
        sum.failed += m[i].t.failed;
        sum.timedout += m[i].t.timedout;
        sum.cancelled += m[i].t.cancelled;
        sum.closed += m[i].t.closed;
        sum.late_failures += m[i].t.late_failures;
    }
    REL_CHECK(aiometer_limiter_destroy(shared_limiter) == 0, "limiter_destroy");
    REL_CHECK(aiometer_pool_destroy(shared_pool) == 0, "pool_destroy");
    for (int k = 0; k < OP_COUNT; k++)
        calls += sum.calls[k];
    printf("mixed: %d threads x %ld calls = %ld calls (half on the default pool), %ld jobs, "
           "in %.1f s\n",
           NTHREADS, calls_per_thread, calls, sum.jobs, rel_now() - t0);
    printf("mixed:  ");
    for (int k = 0; k < OP_COUNT; k++)
        printf(" %s %ld%s", op_names[k], sum.calls[k], k + 1 < OP_COUNT ? "," : "\n");
    printf("mixed:   ended by a failure %ld, by the deadline %ld, amap cancelled %ld, "
           "amap closed early %ld, failure told by amap_close after the end %ld\n",
           sum.failed, sum.timedout, sum.cancelled, sum.closed, sum.late_failures);
}

/* ---- nested calls on a pool of one thread ------------------------------------------------ */

static aiometer_pool *one_pool;

static void *level3(void *arg)
{
    return (void *)((uintptr_t)arg * 2);
}

/* Level 2: an amap over three values, on the same one-thread pool. */
static void *level2(void *arg)
{
    uintptr_t base = (uintptr_t)arg, sum = 0;
    void *args[3] = { (void *)(base + 1), (void *)(base + 2), (void *)(base + 3) };
    aiometer_options o = { 0 };
    aiometer_amap *it;
    void *r;
    size_t idx;
    int rc;

    o.pool = one_pool;
    o.ordered = (int)(base & 1);
    REL_CHECK(aiometer_amap_open(&it, level3, args, 3, &o) == 0, "nested amap_open");
    while ((rc = aiometer_amap_next(it, &r, &idx)) == 0)
        sum += (uintptr_t)r;
    REL_CHECK(rc == AIOMETER_DONE, "nested amap_next returned %d", rc);
    REL_CHECK(aiometer_amap_close(it) == 0, "nested amap_close");
    REL_CHECK(sum == 2 * (3 * base + 6), "nested amap sum");
    return (void *)sum;
}

/* Level 1: run_all of two level-2 jobs. */
static void *level1(void *arg)
{
    uintptr_t base = (uintptr_t)arg;
    aiometer_job jobs[2] = { { level2, (void *)(base * 10) }, { level2, (void *)(base * 10 + 5) } };
    void *res[2];
    aiometer_options o = { 0 };

    o.pool = one_pool;
    REL_CHECK(aiometer_run_all(jobs, 2, res, &o) == 0, "nested run_all");
    for (int i = 0; i < 2; i++) {
        uintptr_t b = base * 10 + (uintptr_t)(i * 5);
        REL_CHECK((uintptr_t)res[i] == 2 * (3 * b + 6), "nested run_all result %d", i);
    }
    return NULL;
}

static long nested_rounds;
static atomic_long nested_done;

static void *nested_thread(void *arg)
{
    (void)arg;
    for (long r = 0; r < nested_rounds; r++) {
        void *args[3] = { (void *)1, (void *)2, (void *)3 };
        aiometer_options o = { 0 };

        o.pool = one_pool;
        REL_CHECK(aiometer_run_on_each(level1, args, 3, &o) == 0, "nested run_on_each");
        atomic_fetch_add(&nested_done, 1);
    }
    return NULL;
}

static void phase_nested(void)
{
    pthread_t th[2];
    double t0 = rel_now();

    REL_CHECK(aiometer_pool_create(&one_pool, 1) == 0, "pool_create(1)");
    for (int i = 0; i < 2; i++)
        REL_CHECK(pthread_create(&th[i], NULL, nested_thread, NULL) == 0, "pthread_create");
    for (int i = 0; i < 2; i++)
        REL_CHECK(pthread_join(th[i], NULL) == 0, "pthread_join");
    REL_CHECK(aiometer_pool_destroy(one_pool) == 0, "pool_destroy(1)");
    printf("nested: %ld three-deep call trees (each 1 + 3 + 6 calls) on a 1-thread pool, "
           "from 2 threads, in %.1f s\n",
           atomic_load(&nested_done), rel_now() - t0);
}

/* ---- destroy racing with calls ------------------------------------------------------------- */

struct racer {
    aiometer_pool *pool;
    aiometer_limiter *lim;
    atomic_int registered; /* a job of each racer's call has started */
    atomic_int tried;      /* the first destroy attempts have been made */
    atomic_int amap_open;  /* the amap racer has its iterator open */
};

struct racer_job {
    struct racer *r;
    int first;
    atomic_int ran;
};

static void *racer_job(void *arg)
{
    struct racer_job *j = arg;
    double end = rel_now() + 10;

    atomic_fetch_add(&j->ran, 1);
    if (j->first) {
        /* Hold the call open until the destroyer has tried once: then its
         * EBUSY is certain, not a matter of timing. */
        atomic_fetch_add(&j->r->registered, 1);
        while (!atomic_load(&j->r->tried) && rel_now() < end)
            rel_sleep(1e-4);
    } else {
        rel_sleep(1e-5 * (double)(rand() % 30));
    }
    return j;
}

static void *racer_thread(void *arg)
{
    struct racer *r = arg;
    struct racer_job jobs[8];
    void *args[8];
    aiometer_options o = { 0 };

    for (int i = 0; i < 8; i++) {
        jobs[i].r = r;
        jobs[i].first = i == 0;
        atomic_init(&jobs[i].ran, 0);
        args[i] = &jobs[i];
    }
    o.pool = r->pool;
    o.limiter = r->lim;
    o.max_at_once = 3;
    REL_CHECK(aiometer_run_on_each(racer_job, args, 8, &o) == 0, "racer call");
    for (int i = 0; i < 8; i++)
        REL_CHECK(atomic_load(&jobs[i].ran) == 1, "racer job %d ran %d times", i,
                  atomic_load(&jobs[i].ran));
    return NULL;
}

static void phase_destroy(long rounds, int base_threads)
{
    long busy = 0, lbusy = 0;
    double t0 = rel_now();

    for (long round = 0; round < rounds; round++) {
        struct racer r;
        pthread_t th[3];
        aiometer_amap *it;
        void *args[2] = { NULL, NULL };
        void *res;
        int rc;

        memset(&r, 0, sizeof(r));
        atomic_init(&r.registered, 0);
        atomic_init(&r.tried, 0);
        REL_CHECK(aiometer_pool_create(&r.pool, 4) == 0, "pool_create");
        REL_CHECK(aiometer_limiter_create(&r.lim, 1e6, 100) == 0, "limiter_create");
        /* An open amap holds the pool even when it has nothing running. */
        REL_CHECK(aiometer_amap_open(&it, level3, args, 2, &(aiometer_options){ .pool = r.pool }) ==
                      0,
                  "amap_open");
        REL_CHECK(aiometer_amap_next(it, &res, NULL) == 0, "amap_next");
        REL_CHECK(aiometer_pool_destroy(r.pool) == EBUSY, "destroy with an open amap");
        busy++;
        REL_CHECK(aiometer_amap_close(it) == 0, "amap_close");

        for (int i = 0; i < 3; i++)
            REL_CHECK(pthread_create(&th[i], NULL, racer_thread, &r) == 0, "pthread_create");
        {
            double end = rel_now() + 30;
            while (atomic_load(&r.registered) < 3 && rel_now() < end)
                rel_sleep(1e-4);
            REL_CHECK(atomic_load(&r.registered) == 3, "racers did not start");
        }
        REL_CHECK(aiometer_pool_destroy(r.pool) == EBUSY, "destroy during calls");
        REL_CHECK(aiometer_limiter_destroy(r.lim) == EBUSY, "limiter_destroy during calls");
        busy++;
        lbusy++;
        atomic_store(&r.tried, 1);
        /* Now race the calls as they finish: EBUSY until the last has
         * returned, then 0, exactly once. */
        /* A call lets go of its limiter just before its pool, so take
         * turns at which one is raced. */
        if (round % 2) {
            while ((rc = aiometer_pool_destroy(r.pool)) == EBUSY) {
                busy++;
                sched_yield();
            }
            REL_CHECK(rc == 0, "pool_destroy returned %d", rc);
            REL_CHECK(aiometer_limiter_destroy(r.lim) == 0, "limiter held after its calls");
        } else {
            while ((rc = aiometer_limiter_destroy(r.lim)) == EBUSY) {
                lbusy++;
                sched_yield();
            }
            REL_CHECK(rc == 0, "limiter_destroy returned %d", rc);
            while ((rc = aiometer_pool_destroy(r.pool)) == EBUSY) {
                busy++;
                sched_yield();
            }
            REL_CHECK(rc == 0, "pool_destroy returned %d", rc);
        }
        for (int i = 0; i < 3; i++)
            REL_CHECK(pthread_join(th[i], NULL) == 0, "pthread_join");
        REL_CHECK(rel_wait_thread_count_of(rel_thread_count_but_sentinel, base_threads, 10) ==
                      base_threads,
                  "%d threads after destroy, expected %d", rel_thread_count_but_sentinel(),
                  base_threads);
    }
    printf("destroy: %ld rounds, pool_destroy said EBUSY %ld times and limiter_destroy %ld "
           "times before 0, no thread left behind, in %.1f s\n",
           rounds, busy, lbusy, rel_now() - t0);
}

/* ---- fork while busy ------------------------------------------------------------------------ */

static atomic_int keep_busy;
static aiometer_pool *busy_pool;

static void *sleepy(void *arg)
{
    rel_sleep(2e-4);
    return arg;
}

static void *busy_thread(void *arg)
{
    void *args[16];
    long *calls = arg;

    memset(args, 0, sizeof(args));
    while (atomic_load(&keep_busy)) {
        aiometer_options o = { 0 };
        o.pool = (*calls & 1) ? busy_pool : NULL;
        REL_CHECK(aiometer_run_on_each(sleepy, args, 16, &o) == 0, "busy call");
        ++*calls;
    }
    return NULL;
}

/* Set in fork children.  LeakSanitizer's check at exit cannot stop the
 * threads a forked child inherited the records of (they do not exist
 * there) and warns about every one; a child's leaks are not what this phase
 * tests, so it is turned off in children through LSan's documented hook.
 * The hook is harmless in builds without LSan. */
static int in_fork_child;

int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void)
{
    return in_fork_child;
}

static int child_work(void)
{
    void *args[8];
    aiometer_pool *fresh;
    aiometer_amap *it;
    atomic_int count = 0;
    aiometer_job jobs[8];
    void *res[8], *r;
    size_t idx, got = 0;
    int rc;

    in_fork_child = 1;
    rel_watchdog(30, "fork child");
    for (int i = 0; i < 8; i++) {
        args[i] = &count;
        jobs[i].fn = level3;
        jobs[i].arg = (void *)(uintptr_t)i;
    }
    /* The inherited pool, its threads gone: it starts new ones. */
    REL_CHECK(aiometer_run_all(jobs, 8, res, &(aiometer_options){ .pool = busy_pool }) == 0,
              "child: run_all on the inherited pool");
    for (int i = 0; i < 8; i++)
        REL_CHECK(res[i] == (void *)(uintptr_t)(2 * i), "child: result %d", i);
    REL_CHECK(aiometer_amap_open(&it, level3, args, 8, &(aiometer_options){ .pool = busy_pool }) ==
                  0,
              "child: amap_open");
    while ((rc = aiometer_amap_next(it, &r, &idx)) == 0)
        got++;
    REL_CHECK(rc == AIOMETER_DONE && got == 8, "child: amap gave %zu, then %d", got, rc);
    REL_CHECK(aiometer_amap_close(it) == 0, "child: amap_close");
    /* The default pool, also inherited. */
    REL_CHECK(aiometer_run_all(jobs, 8, res, NULL) == 0, "child: run_all on the default pool");
    /* A new pool. */
    REL_CHECK(aiometer_pool_create(&fresh, 2) == 0, "child: pool_create");
    REL_CHECK(aiometer_run_all(jobs, 8, res, &(aiometer_options){ .pool = fresh }) == 0,
              "child: run_all on a new pool");
    REL_CHECK(aiometer_pool_destroy(fresh) == 0, "child: destroy the new pool");
    /* The parent's calls on the inherited pool do not exist here: destroy
     * must not wait for them, nor join the parent's threads. */
    REL_CHECK(aiometer_pool_destroy(busy_pool) == 0, "child: destroy the inherited pool");
    (void)count;
    return 0;
}

static void phase_fork(long forks)
{
    pthread_t th[2];
    long calls[2] = { 0, 0 };
    double t0 = rel_now();

    REL_CHECK(aiometer_pool_create(&busy_pool, 4) == 0, "pool_create");
    atomic_store(&keep_busy, 1);
    for (int i = 0; i < 2; i++)
        REL_CHECK(pthread_create(&th[i], NULL, busy_thread, &calls[i]) == 0, "pthread_create");
    for (long f = 0; f < forks; f++) {
        pid_t pid;
        int status = 0;
        double end;

        rel_sleep(1e-3 * (double)(f % 5));
        fflush(NULL);
        pid = fork();
        REL_CHECK(pid >= 0, "fork");
        if (pid == 0)
            exit(child_work());
        end = rel_now() + 60;
        for (;;) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            REL_CHECK(w >= 0, "waitpid");
            if (w == pid)
                break;
            if (rel_now() > end) {
                kill(pid, SIGKILL);
                REL_CHECK(0, "fork child %ld hung", f);
            }
            rel_sleep(1e-3);
        }
        REL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "fork child %ld: status %#x (signal %d)", f, (unsigned)status,
                  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    atomic_store(&keep_busy, 0);
    for (int i = 0; i < 2; i++)
        REL_CHECK(pthread_join(th[i], NULL) == 0, "pthread_join");
    REL_CHECK(aiometer_pool_destroy(busy_pool) == 0, "pool_destroy");
    printf("fork: %ld forks while %ld calls kept a pool and the default pool busy; every child "
           "used both and a new pool and exited cleanly, in %.1f s\n",
           forks, calls[0] + calls[1], rel_now() - t0);
}

/* n * scale rounded up, at least 1; without libm, which the library does
 * not otherwise need. */
static long rel_scaled(long n, double scale)
{
    double v = (double)n * scale;
    long r = (long)v;

    if ((double)r < v)
        r++;
    return r < 1 ? 1 : r;
}

int main(int argc, char **argv)
{
    double scale = rel_env_double("REL_STRESS_SCALE", 1.0);
    double t0 = rel_now();
    int base, base_fds;
    int skip_fork = getenv("REL_STRESS_NO_FORK") != NULL || REL_UNDER_TSAN;

    (void)argc;
    (void)argv;
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* The default pool's size, unless the user chose one: 256 threads on a
     * small machine would test the scheduler more than the library. */
    setenv("AIOMETER_THREADS", "32", 0);
    calls_per_thread = rel_scaled(CALLS_PER_THREAD, scale);
    nested_rounds = rel_scaled(300, scale);
    rel_watchdog((unsigned)(600 * (scale > 1 ? scale : 1)), "rel_stress");
    printf("rel_stress: scale %g\n", scale);

    base_fds = rel_fd_count();
    phase_mixed();
    phase_nested();
    /* Every call's cancel descriptors are closed when it returns. */
    REL_CHECK(rel_fd_count() == base_fds, "%d descriptors open after the calls, %d before",
              rel_fd_count(), base_fds);
    /* The default pool is kept once made, so count threads from here.
     * Not the sentinel: it may leave during the phase, or come for the
     * amaps there and linger. */
    base = rel_thread_count_but_sentinel();
    phase_destroy(rel_scaled(200, scale), base);
    if (skip_fork)
        printf("fork: skipped (%s)\n", REL_UNDER_TSAN ? "ThreadSanitizer cannot start threads "
                                                         "after a multi-threaded fork"
                                                       : "REL_STRESS_NO_FORK");
    else
        phase_fork(rel_scaled(50, scale));
    REL_CHECK(rel_fd_count() == base_fds, "%d descriptors open at the end, %d at the start",
              rel_fd_count(), base_fds);
    printf("rel_stress: PASS in %.1f s\n", rel_now() - t0);
    return 0;
}
