/*
 * rel_faults.c - every allocation and thread-library call the library makes
 * can fail, and each failure is reported (or absorbed) cleanly.
 *
 * In a build configured with --enable-fault-injection, src/syscalls.c counts
 * the library's fallible calls (allocations, mutex, condition variable and
 * thread creation, and every eventfd, timerfd, epoll set and pipe) and can
 * make the k-th one after aiometer__fault_arm(k) fail.
 * For k = 1, 2, ... this program arms k and runs a workload that touches
 * every entry point, until a run makes fewer than k fallible calls: then
 * every failure point of the workload has been tried.  For each k it checks
 * that
 *   - every call returns 0 or ENOMEM/EAGAIN (or, for a job failure it
 *     provoked, that job's error), and a refused call started no job;
 *   - when a call returned 0 its results are complete, each exactly once;
 *   - no thread is left behind once the pool is destroyed;
 *   - nothing hangs (a watchdog ends the program).
 * Leaks are found by running the program under valgrind or LeakSanitizer
 * (tests/rel_ci.sh does both).
 *
 * The default pool is made once per process and kept, so its failure points
 * are tried in forked children, each a fresh process without one.
 *
 * The hooks are internal to the library (hidden in the shared object), so
 * this program links the static library.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "aiometer.h"
#include "rel_util.h"
#include "syscalls.h"

#ifndef AIOMETER_FAULT_INJECTION
#error "rel_faults needs a build configured with --enable-fault-injection"
#endif

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NJOBS 24

/* What one run of the workload saw. */
struct outcome {
    int refused;  /* calls that returned ENOMEM or EAGAIN */
    int absorbed; /* 1 if no call was refused */
};

struct work;

/* One job's argument: which work it belongs to and its index there. */
struct item {
    struct work *w;
    size_t i;
};

enum behaviour { JOB_PLAIN, JOB_FAIL, JOB_SLEEP, JOB_FD, JOB_NEST };

/* The state of one call of the workload. */
struct work {
    aiometer_pool *pool;
    atomic_int ran[NJOBS];
    int kind[NJOBS];
    struct item items[NJOBS];
    void *args[NJOBS];
    aiometer_job jobs[NJOBS];
    void *results[NJOBS];
    size_t n;
    size_t pulled; /* for the source */
    atomic_int nested_refused;
};

static struct outcome out;
static char step[160];
static long current_k;

/* The step in which the injected failure happened, for the verbose log
 * (REL_FAULTS_VERBOSE=1) and for messages. */
static const char *fault_step, *cur_step;

static void set_step(const char *what)
{
    if (!fault_step && cur_step && current_k > 0 && aiometer__fault_calls() >= current_k)
        fault_step = cur_step;
    cur_step = what;
    snprintf(step, sizeof(step), "k=%ld (fault injected in: %s), step: %s", current_k,
             fault_step ? fault_step : "this step or later", what);
    rel_watchdog(120, step);
}

static void *value_of(size_t i)
{
    return (void *)(uintptr_t)(1000 + i);
}

static void *inner_job(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
    return arg;
}

static void *job(void *arg)
{
    struct item *it = arg;
    struct work *w = it->w;
    int fd;

    atomic_fetch_add(&w->ran[it->i], 1);
    switch (w->kind[it->i]) {
    case JOB_FAIL:
        aiometer_fail(EIO);
        break;
    case JOB_SLEEP: {
        int rc = aiometer_sleep(0.0002);
        REL_CHECK(rc == 0 || rc == ECANCELED, "%s: aiometer_sleep returned %d", step, rc);
        break;
    }
    case JOB_FD:
        errno = 0;
        fd = aiometer_cancel_fd();
        if (fd >= 0) {
            struct pollfd p = { fd, POLLIN, 0 };
            int n;
            while ((n = poll(&p, 1, 0)) < 0 && errno == EINTR)
                ;
            REL_CHECK(n == 0 || (n == 1 && aiometer_cancelled()),
                      "%s: cancel fd readable but the call is not cancelled", step);
        } else {
            REL_CHECK(errno == EMFILE || errno == ENFILE || errno == ENOMEM,
                      "%s: aiometer_cancel_fd: errno %d", step, errno);
        }
        break;
    case JOB_NEST: {
        /* A call from inside a job, on the same pool: its own failure
         * points are part of the workload. */
        atomic_int count = 0;
        void *args[4] = { &count, &count, &count, &count };
        aiometer_options o = { 0 };
        int rc;

        o.pool = w->pool;
        rc = aiometer_run_on_each(inner_job, args, 4, &o);
        if (rc == 0) {
            REL_CHECK(atomic_load(&count) == 4, "%s: nested call ran %d of 4 jobs", step,
                      atomic_load(&count));
        } else {
            REL_CHECK(rc == ENOMEM || rc == EAGAIN, "%s: nested call returned %d", step, rc);
            REL_CHECK(atomic_load(&count) == 0, "%s: refused nested call ran %d jobs", step,
                      atomic_load(&count));
            atomic_fetch_add(&w->nested_refused, 1);
            aiometer_fail(rc);
        }
        break;
    }
    default:
        break;
    }
    return value_of(it->i);
}

static void work_init(struct work *w, aiometer_pool *pool, size_t n, int kind)
{
    memset(w, 0, sizeof(*w));
    w->pool = pool;
    w->n = n;
    for (size_t i = 0; i < n; i++) {
        atomic_init(&w->ran[i], 0);
        w->kind[i] = kind;
        w->items[i].w = w;
        w->items[i].i = i;
        w->args[i] = &w->items[i];
        w->jobs[i].fn = job;
        w->jobs[i].arg = &w->items[i];
        w->results[i] = (void *)(uintptr_t)0xdead;
    }
    atomic_init(&w->nested_refused, 0);
}

/* A refused call: an allowed error, and no job of it ran. */
static int refused(int rc, struct work *w)
{
    if (rc != ENOMEM && rc != EAGAIN)
        return 0;
    for (size_t i = 0; i < w->n; i++)
        REL_CHECK(atomic_load(&w->ran[i]) == 0, "%s: refused with %d, but job %zu ran", step, rc,
                  i);
    out.refused++;
    return 1;
}

static void all_ran_once(struct work *w)
{
    for (size_t i = 0; i < w->n; i++)
        REL_CHECK(atomic_load(&w->ran[i]) == 1, "%s: job %zu ran %d times", step, i,
                  atomic_load(&w->ran[i]));
}

static void none_twice(struct work *w)
{
    for (size_t i = 0; i < w->n; i++)
        REL_CHECK(atomic_load(&w->ran[i]) <= 1, "%s: job %zu ran %d times", step, i,
                  atomic_load(&w->ran[i]));
}

static int counting_source(void *state, void **arg)
{
    struct work *w = state;

    if (w->pulled == w->n)
        return AIOMETER_DONE;
    *arg = &w->items[w->pulled++];
    return 0;
}

/* ---- the steps ----------------------------------------------------------------- */

static void step_run_on_each(aiometer_pool *pool, aiometer_limiter *lim)
{
    struct work w;
    aiometer_options o = { 0 };
    aiometer_stats st;
    int rc;

    set_step("run_on_each");
    work_init(&w, pool, NJOBS, JOB_PLAIN);
    o.pool = pool;
    o.max_at_once = 2;
    o.stats = &st;
    rc = aiometer_run_on_each(job, w.args, w.n, &o);
    if (!refused(rc, &w)) {
        REL_CHECK(rc == 0, "%s: returned %d", step, rc);
        all_ran_once(&w);
        REL_CHECK(st.started == w.n && st.completed == w.n, "%s: stats %zu/%zu", step,
                  st.started, st.completed);
    }

    /* With a deadline the caller only watches, and with a rate and a shared
     * limiter the jobs go through the limiter's path. */
    set_step("run_on_each with rate, limiter and deadline");
    work_init(&w, pool, 12, JOB_SLEEP);
    memset(&o, 0, sizeof(o));
    o.pool = pool;
    o.limiter = lim;
    o.max_per_second = 1e5;
    o.max_burst = 4;
    o.timeout = 60;
    rc = aiometer_run_on_each(job, w.args, w.n, &o);
    if (!refused(rc, &w)) {
        REL_CHECK(rc == 0, "%s: returned %d", step, rc);
        all_ran_once(&w);
    }

    /* The cancel descriptor of a call with a deadline is an epoll set over
     * an eventfd and a timerfd: jobs that ask for it, and jobs that sleep on
     * it, reach each of the three creations and their failure paths. */
    set_step("run_on_each with deadline and cancel descriptors");
    work_init(&w, pool, 12, JOB_SLEEP);
    for (size_t i = 0; i < w.n; i += 2)
        w.kind[i] = JOB_FD;
    memset(&o, 0, sizeof(o));
    o.pool = pool;
    o.timeout = 60;
    rc = aiometer_run_on_each(job, w.args, w.n, &o);
    if (!refused(rc, &w)) {
        REL_CHECK(rc == 0, "%s: returned %d", step, rc);
        all_ran_once(&w);
    }

    /* A limiter with one running slot: jobs that find it taken wait on the
     * call's cancel descriptor, so a descriptor that cannot be made stops
     * the call with that error (EMFILE) and no job runs twice. */
    set_step("run_on_each with a capped limiter");
    {
        aiometer_limiter_options lo = { .max_per_second = 0, .max_burst = 0, .max_at_once = 1 };
        aiometer_limiter *cap = NULL;

        rc = aiometer_limiter_open(&cap, NULL, &lo);
        if (rc != 0) {
            REL_CHECK(rc == ENOMEM || rc == EMFILE, "%s: limiter_open returned %d", step, rc);
            out.refused++;
        } else {
            work_init(&w, pool, 8, JOB_SLEEP);
            memset(&o, 0, sizeof(o));
            o.pool = pool;
            o.limiter = cap;
            rc = aiometer_run_on_each(job, w.args, w.n, &o);
            if (rc == EMFILE) {
                none_twice(&w);
                out.refused++;
            } else if (!refused(rc, &w)) {
                REL_CHECK(rc == 0, "%s: returned %d", step, rc);
                all_ran_once(&w);
            }
            REL_CHECK(aiometer_limiter_destroy(cap) == 0, "%s: limiter busy", step);
        }
    }

    set_step("run_on_each_source");
    work_init(&w, pool, 16, JOB_PLAIN);
    memset(&o, 0, sizeof(o));
    o.pool = pool;
    o.max_at_once = 2;
    rc = aiometer_run_on_each_source(job, counting_source, &w, &o);
    if (!refused(rc, &w)) {
        REL_CHECK(rc == 0, "%s: returned %d", step, rc);
        REL_CHECK(w.pulled == w.n, "%s: pulled %zu of %zu", step, w.pulled, w.n);
        all_ran_once(&w);
    }
}

static void step_run_all(aiometer_pool *pool)
{
    struct work w;
    aiometer_options o = { 0 };
    int rc;

    set_step("run_all");
    work_init(&w, pool, 16, JOB_PLAIN);
    for (size_t i = 0; i < w.n; i += 3)
        w.kind[i] = JOB_FD;
    w.kind[1] = JOB_SLEEP;
    o.pool = pool;
    rc = aiometer_run_all(w.jobs, w.n, w.results, &o);
    if (!refused(rc, &w)) {
        REL_CHECK(rc == 0, "%s: returned %d", step, rc);
        all_ran_once(&w);
        for (size_t i = 0; i < w.n; i++)
            REL_CHECK(w.results[i] == value_of(i), "%s: results[%zu] wrong", step, i);
    }

    /* One job fails: the call returns its error, no job runs twice, and
     * the jobs that never started have NULL results. */
    set_step("run_all with a failure");
    work_init(&w, pool, 16, JOB_PLAIN);
    w.kind[5] = JOB_FAIL;
    o.max_at_once = 1;
    rc = aiometer_run_all(w.jobs, w.n, w.results, &o);
    if (!refused(rc, &w)) {
        REL_CHECK(rc == EIO, "%s: returned %d", step, rc);
        none_twice(&w);
        REL_CHECK(atomic_load(&w.ran[5]) == 1, "%s: the failing job did not run", step);
        for (size_t i = 0; i < w.n; i++)
            REL_CHECK(atomic_load(&w.ran[i]) ? w.results[i] == value_of(i)
                                             : w.results[i] == NULL,
                      "%s: results[%zu] wrong", step, i);
    }
}

static void step_run_any(aiometer_pool *pool)
{
    struct work w;
    aiometer_options o = { 0 };
    void *result = NULL;
    size_t index = SIZE_MAX;
    int rc;

    set_step("run_any");
    work_init(&w, pool, 8, JOB_SLEEP);
    for (size_t i = 0; i < 4; i++)
        w.kind[i] = JOB_FAIL;
    o.pool = pool;
    rc = aiometer_run_any(w.jobs, w.n, &result, &index, &o);
    if (!refused(rc, &w)) {
        REL_CHECK(rc == 0, "%s: returned %d", step, rc);
        REL_CHECK(index >= 4 && index < w.n, "%s: winner %zu is a failing job", step, index);
        REL_CHECK(result == value_of(index), "%s: wrong result", step);
        none_twice(&w);
    }
}

/* Drain an amap, checking each result; returns what ended the drain. */
static int drain(aiometer_amap *it, struct work *w, int ordered, size_t stop_after,
                 size_t *taken)
{
    int seen[NJOBS] = { 0 };
    size_t last = 0, index;
    void *r;
    int rc;

    *taken = 0;
    for (;;) {
        if (*taken == stop_after)
            return -100;
        rc = aiometer_amap_next(it, &r, &index);
        if (rc != 0)
            return rc;
        REL_CHECK(index < w->n, "%s: index %zu out of range", step, index);
        REL_CHECK(!seen[index]++, "%s: result %zu delivered twice", step, index);
        REL_CHECK(r == value_of(index), "%s: wrong result for %zu", step, index);
        REL_CHECK(atomic_load(&w->ran[index]) == 1, "%s: result of a job that ran %d times",
                  step, atomic_load(&w->ran[index]));
        REL_CHECK(!ordered || *taken == 0 || index > last, "%s: out of order", step);
        last = index;
        ++*taken;
    }
}

static void step_amap(aiometer_pool *pool)
{
    struct work w;
    aiometer_options o = { 0 };
    aiometer_amap *it;
    size_t taken;
    int rc;

    for (int ordered = 0; ordered <= 1; ordered++) {
        set_step(ordered ? "amap ordered" : "amap");
        work_init(&w, pool, NJOBS, JOB_PLAIN);
        w.kind[3] = JOB_SLEEP;
        memset(&o, 0, sizeof(o));
        o.pool = pool;
        o.ordered = ordered;
        o.max_buffered = 4;
        it = (aiometer_amap *)&w; /* must stay untouched on failure */
        rc = aiometer_amap_open(&it, job, w.args, w.n, &o);
        if (refused(rc, &w)) {
            REL_CHECK(it == (aiometer_amap *)&w, "%s: *it written on failure", step);
            continue;
        }
        REL_CHECK(rc == 0, "%s: open returned %d", step, rc);
        rc = drain(it, &w, ordered, SIZE_MAX, &taken);
        REL_CHECK(rc == AIOMETER_DONE, "%s: next returned %d", step, rc);
        REL_CHECK(taken == w.n, "%s: %zu of %zu results", step, taken, w.n);
        all_ran_once(&w);
        REL_CHECK(aiometer_amap_close(it) == 0, "%s: close", step);
    }

    set_step("amap_open_source, closed early");
    work_init(&w, pool, 20, JOB_PLAIN);
    memset(&o, 0, sizeof(o));
    o.pool = pool;
    o.max_at_once = 2;
    rc = aiometer_amap_open_source(&it, job, counting_source, &w, &o);
    if (!refused(rc, &w)) {
        REL_CHECK(rc == 0, "%s: open returned %d", step, rc);
        rc = drain(it, &w, 0, 3, &taken);
        REL_CHECK(rc == -100 && taken == 3, "%s: next returned %d after %zu", step, rc, taken);
        REL_CHECK(aiometer_amap_close(it) == 0, "%s: close", step);
        none_twice(&w);
    }

    set_step("amap cancelled");
    work_init(&w, pool, NJOBS, JOB_SLEEP);
    memset(&o, 0, sizeof(o));
    o.pool = pool;
    o.max_at_once = 2;
    rc = aiometer_amap_open(&it, job, w.args, w.n, &o);
    if (!refused(rc, &w)) {
        REL_CHECK(rc == 0, "%s: open returned %d", step, rc);
        rc = drain(it, &w, 0, 2, &taken);
        REL_CHECK(rc == -100, "%s: next returned %d", step, rc);
        REL_CHECK(aiometer_amap_cancel(it) == 0, "%s: cancel", step);
        rc = drain(it, &w, 0, SIZE_MAX, &taken);
        REL_CHECK(rc == ECANCELED || rc == AIOMETER_DONE, "%s: next returned %d", step, rc);
        REL_CHECK(aiometer_amap_close(it) == 0, "%s: close", step);
        none_twice(&w);
    }
}

static void step_nested(aiometer_pool *pool)
{
    struct work w;
    aiometer_options o = { 0 };
    int rc;

    set_step("nested run_on_each");
    work_init(&w, pool, 3, JOB_NEST);
    o.pool = pool;
    rc = aiometer_run_on_each(job, w.args, w.n, &o);
    if (rc == 0) {
        all_ran_once(&w);
        REL_CHECK(atomic_load(&w.nested_refused) == 0, "%s: a nested failure was lost", step);
    } else if (atomic_load(&w.nested_refused) > 0) {
        /* A nested call was refused and its job passed the error up. */
        REL_CHECK(rc == ENOMEM || rc == EAGAIN, "%s: returned %d", step, rc);
        none_twice(&w);
        out.refused++;
    } else {
        REL_CHECK(refused(rc, &w), "%s: returned %d", step, rc);
    }
}

/* The whole workload on an explicit pool of 3 threads. */
static void workload(int base_threads, int base_fds)
{
    aiometer_pool *pool = (aiometer_pool *)&out;
    aiometer_limiter *lim = (aiometer_limiter *)&out;
    int rc;

    set_step("pool_create");
    rc = aiometer_pool_create(&pool, 3);
    if (rc != 0) {
        REL_CHECK(rc == ENOMEM || rc == EAGAIN, "%s: returned %d", step, rc);
        REL_CHECK(pool == (aiometer_pool *)&out, "%s: *pool written on failure", step);
        out.refused++;
        /* Only one call fails per run, so this one succeeds. */
        REL_CHECK(aiometer_pool_create(&pool, 3) == 0, "%s: second try failed", step);
    }
    set_step("limiter_create");
    rc = aiometer_limiter_create(&lim, 1e5, 4);
    if (rc != 0) {
        REL_CHECK(rc == ENOMEM, "%s: returned %d", step, rc);
        REL_CHECK(lim == (aiometer_limiter *)&out, "%s: *lim written on failure", step);
        out.refused++;
        REL_CHECK(aiometer_limiter_create(&lim, 1e5, 4) == 0, "%s: second try failed", step);
    }

    step_run_on_each(pool, lim);
    step_run_all(pool);
    step_run_any(pool);
    step_amap(pool);
    step_nested(pool);

    set_step("limiter_destroy");
    REL_CHECK(aiometer_limiter_destroy(lim) == 0, "%s: returned EBUSY or EINVAL", step);
    set_step("pool_destroy");
    rc = aiometer_pool_destroy(pool);
    REL_CHECK(rc == 0, "%s: returned %d", step, rc);
    REL_CHECK(rel_wait_thread_count(base_threads, 10.0) == base_threads,
              "%s: %d threads left, expected %d", step, rel_thread_count(), base_threads);
    /* Cancel descriptors (an eventfd or a pipe, per call) are closed. */
    REL_CHECK(rel_fd_count() == base_fds, "%s: %d descriptors open, expected %d", step,
              rel_fd_count(), base_fds);
}

/* The default pool, in a child: returns the number of fallible calls the
 * run made, which the child writes to its parent. */
static long default_pool_child(long k)
{
    long calls;
    struct work w;
    aiometer_amap *it;
    size_t taken;
    int rc;

    current_k = k;
    fault_step = cur_step = NULL;
    aiometer__fault_arm(k);
    set_step("run_on_each on the default pool");
    work_init(&w, NULL, 8, JOB_PLAIN);
    rc = aiometer_run_on_each(job, w.args, w.n, NULL);
    if (!refused(rc, &w)) {
        REL_CHECK(rc == 0, "%s: returned %d", step, rc);
        all_ran_once(&w);
    }
    set_step("amap on the default pool");
    work_init(&w, NULL, 8, JOB_PLAIN);
    rc = aiometer_amap_open(&it, job, w.args, w.n, NULL);
    if (!refused(rc, &w)) {
        REL_CHECK(rc == 0, "%s: open returned %d", step, rc);
        rc = drain(it, &w, 0, SIZE_MAX, &taken);
        REL_CHECK(rc == AIOMETER_DONE && taken == w.n, "%s: %d after %zu", step, rc, taken);
        REL_CHECK(aiometer_amap_close(it) == 0, "%s: close", step);
    }
    calls = aiometer__fault_calls();
    aiometer__fault_arm(0);
    return calls;
}

/* Run default_pool_child(k) in a fresh child; returns its call count. */
static long in_child(long k)
{
    int fd[2], status;
    long calls = -1;
    pid_t pid;

    REL_CHECK(pipe(fd) == 0, "pipe");
    pid = fork();
    REL_CHECK(pid >= 0, "fork failed");
    if (pid == 0) {
        close(fd[0]);
        calls = default_pool_child(k);
        if (write(fd[1], &calls, sizeof(calls)) != (ssize_t)sizeof(calls))
            _exit(2);
        close(fd[1]);
        /* exit(), not _exit(): the library's destructor stops the default
         * pool, and a leak checker looks at the child as it ends. */
        exit(0);
    }
    close(fd[1]);
    if (read(fd[0], &calls, sizeof(calls)) != (ssize_t)sizeof(calls))
        calls = -1;
    close(fd[0]);
    REL_CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    REL_CHECK(WIFEXITED(status), "k=%ld: default-pool child died with signal %d", k,
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    REL_CHECK(WEXITSTATUS(status) == 0, "k=%ld: default-pool child exited with %d", k,
              WEXITSTATUS(status));
    REL_CHECK(calls >= 0, "k=%ld: no call count from the child", k);
    return calls;
}

int main(void)
{
    long k, calls, most = 0, injected = 0, refusals = 0, absorbed = 0;
    long dk, dmost = 0, dinjected = 0;
    int base, base_fds, verbose = getenv("REL_FAULTS_VERBOSE") != NULL;

    setvbuf(stdout, NULL, _IOLBF, 0);
    base = rel_thread_count();
    REL_CHECK(base >= 1, "cannot count threads in /proc/self/task");
    base_fds = rel_fd_count();
    REL_CHECK(base_fds >= 0, "cannot count descriptors in /proc/self/fd");

    /* Explicit pools, in this process.  How many threads a run starts
     * depends on timing (an idle worker may take a call instead of a new
     * one starting), so runs differ by a few fallible calls: k goes on
     * until it is past the most calls any run made, and a run with fewer
     * calls than k (nothing injected) must simply succeed. */
    for (k = 1;; k++) {
        current_k = k;
        memset(&out, 0, sizeof(out));
        fault_step = cur_step = NULL;
        aiometer__fault_arm(k);
        workload(base, base_fds);
        calls = aiometer__fault_calls();
        aiometer__fault_arm(0);
        if (calls > most)
            most = calls;
        if (verbose)
            printf("k=%ld: %ld calls, failure in %s: %s\n", k, calls,
                   calls < k ? "(none)" : fault_step ? fault_step : cur_step,
                   out.refused ? "refused" : "absorbed");
        if (calls < k) {
            REL_CHECK(out.refused == 0, "k=%ld: a call was refused with no fault injected", k);
            if (k > most)
                break;
            continue;
        }
        injected++;
        if (out.refused)
            refusals++;
        else
            absorbed++;
    }
    rel_watchdog(0, NULL);
    printf("rel_faults: explicit pool: k = 1..%ld tried, %ld runs with a failure injected "
           "(%ld reported ENOMEM/EAGAIN, %ld absorbed); runs made %ld fallible calls at most\n",
           k - 1, injected, refusals, absorbed, most);

    /* The default pool, one fresh child per k.  The parent never makes the
     * default pool, so each child starts without one. */
    for (dk = 1;; dk++) {
        calls = in_child(dk);
        if (calls > dmost)
            dmost = calls;
        if (calls >= dk)
            dinjected++;
        else if (dk > dmost)
            break;
    }
    printf("rel_faults: default pool: k = 1..%ld tried, %ld runs with a failure injected, each "
           "in a fresh child; runs made %ld fallible calls at most\n",
           dk - 1, dinjected, dmost);
    printf("rel_faults: PASS: every k tried up to the most fallible calls a run made "
           "(%ld + %ld); %ld runs had a failure injected\n",
           most, dmost, injected + dinjected);
    return 0;
}
