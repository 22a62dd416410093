/*
 * check_defects.c - the defects of issue 17, found by trying to break 0.1.0,
 * one TCase per item: a thread cancelled inside a call, a job that calls
 * pthread_exit, a lazy source that calls the job-side functions, a pool that
 * cannot start threads, GCRA wrap-around at tiny rates, a child forked inside
 * a job, and two consumers of one amap iterator.
 *
 * Most of these bugs were hangs, so every TCase has a short timeout.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "aiometer.h"
#include "testutil.h"

#include <check.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Every test here takes a second or two when the library is right; a hang
 * must fail within this many seconds.  TCases that measure time or CPU are
 * tagged "timing", which the valgrind runs leave out (tests/rel_ci.sh). */
#define DEFECT_TIMEOUT 15

/* ThreadSanitizer does not follow a child forked from a multi-threaded
 * process; the fork test of item 6 is left to the other builds there. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

/* ---- item 1: pthread_cancel of a thread inside a call ----------------------- */

enum { CANCEL_JOBS = 4 };

/* What a cancelled thread and its jobs share with the test. */
typedef struct cancel_case {
    aiometer_pool *pool;
    aiometer_amap *it; /* the amap variant: the test opens it */
    int which;         /* which entry point the thread calls */
    int with_deadline; /* opts.timeout set: the caller waits instead of working */
    tu_gate gate;      /* every job arrives here first */
    atomic_int finished;   /* jobs that returned */
    atomic_int sleep_errs; /* aiometer_sleep calls that did not return 0 */
} cancel_case;

enum { VIA_RUN_ALL, VIA_RUN_ON_EACH, VIA_RUN_ANY, VIA_AMAP_NEXT };

/* Sleeps through aiometer_sleep, a wait that polls the call's descriptor:
 * on the calling thread it is where a cancellation would strike. */
static void *cancel_job(void *arg)
{
    cancel_case *cc = arg;

    tu_gate_arrive(&cc->gate);
    if (aiometer_sleep(0.3) != 0)
        atomic_fetch_add(&cc->sleep_errs, 1);
    atomic_fetch_add(&cc->finished, 1);
    return cc;
}

static void *cancel_thread(void *arg)
{
    cancel_case *cc = arg;
    aiometer_options o = { 0 };
    aiometer_job jobs[CANCEL_JOBS];
    void *args[CANCEL_JOBS], *results[CANCEL_JOBS], *r;

    o.pool = cc->pool;
    if (cc->with_deadline)
        o.timeout = 30;
    for (int i = 0; i < CANCEL_JOBS; i++) {
        jobs[i].fn = cancel_job;
        jobs[i].arg = cc;
        args[i] = cc;
    }
    switch (cc->which) {
    case VIA_RUN_ALL:
        aiometer_run_all(jobs, CANCEL_JOBS, results, &o);
        break;
    case VIA_RUN_ON_EACH:
        aiometer_run_on_each(cancel_job, args, CANCEL_JOBS, &o);
        break;
    case VIA_RUN_ANY:
        aiometer_run_any(jobs, CANCEL_JOBS, &r, NULL, &o);
        break;
    case VIA_AMAP_NEXT:
        while (aiometer_amap_next(cc->it, &r, NULL) == 0)
            ;
        break;
    }
    /* A thread whose cancellation was deferred until the library returned
     * is cancelled here at the latest. */
    pthread_testcancel();
    return NULL;
}

/* Start a thread in entry point `which`, cancel it once its jobs run, join
 * it, and check that nothing was left behind: the call is whole (every job
 * that started ran to its end), the thread was cancelled, and the pool can
 * be destroyed. */
static void cancel_inside(int which, int with_deadline)
{
    cancel_case cc;
    pthread_t t;
    void *ret;
    void *args[CANCEL_JOBS]; /* the amap's input: read while its jobs run */

    memset(&cc, 0, sizeof cc);
    tu_gate_init(&cc.gate);
    cc.which = which;
    cc.with_deadline = with_deadline;
    ck_assert_int_eq(aiometer_pool_create(&cc.pool, 2), 0);
    if (which == VIA_AMAP_NEXT) {
        aiometer_options o = { 0 };
        o.pool = cc.pool;
        for (int i = 0; i < CANCEL_JOBS; i++)
            args[i] = &cc;
        ck_assert_int_eq(aiometer_amap_open(&cc.it, cancel_job, args, CANCEL_JOBS, &o), 0);
    }
    tu_thread_start(&t, cancel_thread, &cc);
    ck_assert_int_eq(tu_gate_wait_arrived(&cc.gate, 2, 5.0), 0);
    tu_sleep(0.05); /* the thread is now waiting inside the library */
    ck_assert_int_eq(pthread_cancel(t), 0);
    ret = tu_thread_join(t);
    ck_assert_msg(ret == PTHREAD_CANCELED, "the thread was not cancelled");
    if (cc.it)
        aiometer_amap_close(cc.it);
    ck_assert_int_eq(aiometer_pool_destroy(cc.pool), 0);
    /* Every job that began ran to its end, and its sleep was not cut. */
    ck_assert_int_eq(atomic_load(&cc.finished), (int)tu_gate_arrived(&cc.gate));
    if (which != VIA_RUN_ANY) /* there, the win cancels the other sleeps */
        ck_assert_int_eq(atomic_load(&cc.sleep_errs), 0);
    tu_gate_destroy(&cc.gate);
}

START_TEST(test_cancel_run_all)
{
    cancel_inside(VIA_RUN_ALL, 1);
}
END_TEST

START_TEST(test_cancel_run_on_each)
{
    cancel_inside(VIA_RUN_ON_EACH, 1);
}
END_TEST

START_TEST(test_cancel_run_any)
{
    cancel_inside(VIA_RUN_ANY, 1);
}
END_TEST

START_TEST(test_cancel_amap_next)
{
    cancel_inside(VIA_AMAP_NEXT, 0);
}
END_TEST

/* No deadline: the cancelled thread runs jobs of its call itself, so the
 * cancellation finds it inside aiometer_sleep. */
START_TEST(test_cancel_in_sleep)
{
    cancel_inside(VIA_RUN_ON_EACH, 0);
}
END_TEST

/* ---- item 2: a job that calls pthread_exit ---------------------------------- */

enum { EXIT_JOBS = 6 };

typedef struct exit_case {
    pthread_t victim; /* the job on this thread exits (unset: any worker) */
    int on_worker;    /* exit on whichever pool thread gets a job first */
    atomic_int exited;
    atomic_int started;
    atomic_int finished;
    int ret;          /* what the call returned, when the caller survives */
} exit_case;

static pthread_t exit_case_main;

static void *exit_job(void *arg)
{
    exit_case *ec = arg;
    int mine;

    atomic_fetch_add(&ec->started, 1);
    if (ec->on_worker)
        mine = !pthread_equal(pthread_self(), exit_case_main);
    else
        mine = pthread_equal(pthread_self(), ec->victim);
    if (mine && atomic_exchange(&ec->exited, 1) == 0)
        pthread_exit(NULL);
    tu_sleep(0.02);
    atomic_fetch_add(&ec->finished, 1);
    return NULL;
}

/* A job on a pool thread calls pthread_exit: the call fails with
 * EOWNERDEAD rather than wait for ever, and the pool still works. */
START_TEST(test_exit_on_worker)
{
    exit_case ec;
    aiometer_pool *pool;
    aiometer_options o = { 0 };
    void *args[EXIT_JOBS];

    memset(&ec, 0, sizeof ec);
    ec.on_worker = 1;
    exit_case_main = pthread_self();
    for (int i = 0; i < EXIT_JOBS; i++)
        args[i] = &ec;
    ck_assert_int_eq(aiometer_pool_create(&pool, 2), 0);
    o.pool = pool;
    o.timeout = 30; /* the caller watches: jobs run on the pool's threads */
    ck_assert_int_eq(aiometer_run_on_each(exit_job, args, EXIT_JOBS, &o), EOWNERDEAD);
    ck_assert_int_eq(atomic_load(&ec.exited), 1);
    /* The pool lost a thread and makes up for it: a new call runs. */
    atomic_store(&ec.finished, 0);
    ec.on_worker = 0;
    ec.victim = pthread_self();
    atomic_store(&ec.exited, 1);
    ck_assert_int_eq(aiometer_run_on_each(exit_job, args, EXIT_JOBS, &o), 0);
    ck_assert_int_eq(atomic_load(&ec.finished), EXIT_JOBS);
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
}
END_TEST

typedef struct exit_thread_arg {
    exit_case *ec;
    aiometer_pool *pool;
} exit_thread_arg;

static void *exit_caller_thread(void *arg)
{
    exit_thread_arg *a = arg;
    aiometer_options o = { 0 };
    void *args[EXIT_JOBS];

    a->ec->victim = pthread_self();
    for (int i = 0; i < EXIT_JOBS; i++)
        args[i] = a->ec;
    o.pool = a->pool;
    /* No deadline: this thread runs jobs of its call, one of which ends
     * the thread. */
    a->ec->ret = aiometer_run_on_each(exit_job, args, EXIT_JOBS, &o);
    return a; /* not reached when the job exited this thread */
}

/* A job that the calling thread runs calls pthread_exit: the thread ends,
 * but only once its call has: the pool's threads are done with it, and the
 * pool can be destroyed. */
START_TEST(test_exit_on_caller)
{
    exit_case ec;
    exit_thread_arg a;
    pthread_t t;
    void *ret;

    memset(&ec, 0, sizeof ec);
    exit_case_main = pthread_self();
    a.ec = &ec;
    ck_assert_int_eq(aiometer_pool_create(&a.pool, 2), 0);
    tu_thread_start(&t, exit_caller_thread, &a);
    ret = tu_thread_join(t);
    ck_assert_int_eq(atomic_load(&ec.exited), 1);
    ck_assert_msg(ret == NULL, "the job did not end its thread");
    ck_assert_int_eq(aiometer_pool_destroy(a.pool), 0);
    /* Every job that started, but the one that exited, ran to its end
     * before the thread did: none is left running. */
    ck_assert_int_eq(atomic_load(&ec.finished), atomic_load(&ec.started) - 1);
}
END_TEST

/* A tiny job, but the first one from index 500 that a pool thread runs
 * ends that thread. */
enum { EXIT_BATCH_JOBS = 1000 };
static atomic_int exit_batch_done;

static void *exit_batch_job(void *arg)
{
    if ((uintptr_t)arg >= EXIT_BATCH_JOBS / 2 && !pthread_equal(pthread_self(), exit_case_main) &&
        atomic_exchange(&exit_batch_done, 1) == 0)
        pthread_exit(NULL);
    return arg;
}

/* A thread that ends inside a batch of tiny jobs: the jobs of that batch
 * are counted when the batch ends (runjob.c), so the thread's unwinding
 * must count those it ran; every job that started has completed or
 * failed. */
START_TEST(test_exit_in_batch_stats)
{
    static aiometer_job jobs[EXIT_BATCH_JOBS];
    static void *results[EXIT_BATCH_JOBS];
    aiometer_pool *pool;
    aiometer_options o = { 0 };
    aiometer_stats st;

    exit_case_main = pthread_self();
    atomic_store(&exit_batch_done, 0);
    for (uintptr_t i = 0; i < EXIT_BATCH_JOBS; i++) {
        jobs[i].fn = exit_batch_job;
        jobs[i].arg = (void *)i;
    }
    ck_assert_int_eq(aiometer_pool_create(&pool, 2), 0);
    o.pool = pool;
    o.timeout = 30; /* the caller watches: jobs run on the pool's threads */
    o.stats = &st;
    ck_assert_int_eq(aiometer_run_all(jobs, EXIT_BATCH_JOBS, results, &o), EOWNERDEAD);
    ck_assert_int_eq(atomic_load(&exit_batch_done), 1);
    ck_assert_uint_eq(st.failed, 1);
    /* (Jobs claimed before the stop but not yet run are skipped, so how
     * many started depends on the other thread's timing.) */
    ck_assert_uint_eq(st.started, st.completed + st.failed);
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
}
END_TEST

/* An amap consumer runs jobs itself when no pool thread can (call.c,
 * aiometer__call_help_if_alone_locked); one of them ends the consumer's
 * thread.  The iterator stays whole for another thread: it tells the
 * failure, then the end, and closes; every result it gave was right and
 * given once.  Both pool threads are held by the jobs of another amap,
 * whose results nobody takes yet, while the consumer runs: the jobs can
 * only run on the consumer. */
enum { EXIT_AMAP_JOBS = 2000, EXIT_AMAP_HOLDERS = 2 };
static pthread_t exit_amap_victim;
static atomic_int exit_amap_done;
static tu_gate exit_amap_hold;

static void *exit_amap_job(void *arg)
{
    if ((uintptr_t)arg >= EXIT_AMAP_JOBS / 2 && pthread_equal(pthread_self(), exit_amap_victim) &&
        atomic_exchange(&exit_amap_done, 1) == 0)
        pthread_exit(NULL);
    return (void *)(2 * (uintptr_t)arg + 1);
}

/* Holds its pool thread until the test opens the gate (a time-out only
 * lets the thread go: the test's own waits fail first). */
static void *exit_amap_holder(void *arg)
{
    (void)arg;
    tu_gate_arrive(&exit_amap_hold);
    (void)tu_gate_wait_open(&exit_amap_hold, 60);
    return NULL;
}

typedef struct exit_amap_state {
    aiometer_amap *it;
    unsigned char seen[EXIT_AMAP_JOBS];
    size_t taken;
} exit_amap_state;

static int exit_amap_take(exit_amap_state *st)
{
    void *r;
    size_t idx;
    int rc;

    while ((rc = aiometer_amap_next(st->it, &r, &idx)) == 0) {
        ck_assert_uint_lt(idx, EXIT_AMAP_JOBS);
        ck_assert_msg(!st->seen[idx]++, "result %zu given twice", idx);
        ck_assert_ptr_eq(r, (void *)(2 * (uintptr_t)idx + 1));
        st->taken++;
    }
    return rc;
}

static void *exit_amap_consumer(void *arg)
{
    exit_amap_victim = pthread_self();
    exit_amap_take(arg);
    return arg; /* not reached when a job ended this thread */
}

START_TEST(test_exit_in_amap_consumer)
{
    static exit_amap_state st;
    static void *args[EXIT_AMAP_JOBS];
    static void *hargs[EXIT_AMAP_HOLDERS];
    aiometer_pool *pool;
    aiometer_amap *holder;
    aiometer_options o = { 0 };
    pthread_t t;
    void *r;
    int rc;

    for (uintptr_t i = 0; i < EXIT_AMAP_JOBS; i++)
        args[i] = (void *)i;
    ck_assert_int_eq(aiometer_pool_create(&pool, EXIT_AMAP_HOLDERS), 0);
    o.pool = pool;
    tu_gate_init(&exit_amap_hold);
    /* Nobody consumes the holding amap yet, so only pool threads run its
     * jobs: both are held once both jobs have arrived. */
    ck_assert_int_eq(aiometer_amap_open(&holder, exit_amap_holder, hargs, EXIT_AMAP_HOLDERS, &o), 0);
    ck_assert_int_eq(tu_gate_wait_arrived(&exit_amap_hold, EXIT_AMAP_HOLDERS, 30), 0);

    memset(&st, 0, sizeof st);
    atomic_store(&exit_amap_done, 0);
    ck_assert_int_eq(aiometer_amap_open(&st.it, exit_amap_job, args, EXIT_AMAP_JOBS, &o), 0);
    tu_thread_start(&t, exit_amap_consumer, &st);
    ck_assert_msg(tu_thread_join(t) == NULL, "no job ended the consumer's thread");
    ck_assert_int_eq(atomic_load(&exit_amap_done), 1);
    /* The consumer took every result before the job that ended it. */
    ck_assert_uint_ge(st.taken, EXIT_AMAP_JOBS / 2);
    tu_gate_open(&exit_amap_hold);
    while ((rc = aiometer_amap_next(holder, &r, NULL)) == 0)
        ;
    ck_assert_int_eq(rc, AIOMETER_DONE);
    ck_assert_int_eq(aiometer_amap_close(holder), 0);

    /* This thread takes over: what is left, the failure, the end. */
    rc = exit_amap_take(&st);
    if (rc == EOWNERDEAD)
        rc = exit_amap_take(&st);
    ck_assert_int_eq(rc, AIOMETER_DONE);
    ck_assert_uint_lt(st.taken, EXIT_AMAP_JOBS);
    rc = aiometer_amap_close(st.it);
    ck_assert_msg(rc == 0 || rc == EOWNERDEAD, "amap_close: %d", rc);
    tu_gate_destroy(&exit_amap_hold);
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
}
END_TEST

/* A source that ends its pool thread fails the call in the same way. */
static atomic_int exit_source_pulls;

static int exiting_source(void *state, void **arg)
{
    (void)state;
    if (atomic_fetch_add(&exit_source_pulls, 1) == 3 &&
        !pthread_equal(pthread_self(), exit_case_main))
        pthread_exit(NULL);
    if (atomic_load(&exit_source_pulls) > 40)
        return AIOMETER_DONE;
    *arg = NULL;
    return 0;
}

static void *short_job(void *arg)
{
    tu_sleep(0.002);
    return arg;
}

START_TEST(test_exit_in_source)
{
    aiometer_pool *pool;
    aiometer_options o = { 0 };
    void *args[4] = { 0 };

    exit_case_main = pthread_self();
    atomic_store(&exit_source_pulls, 0);
    ck_assert_int_eq(aiometer_pool_create(&pool, 2), 0);
    o.pool = pool;
    o.timeout = 30; /* the caller watches: the source runs on pool threads */
    ck_assert_int_eq(aiometer_run_on_each_source(short_job, exiting_source, NULL, &o),
                     EOWNERDEAD);
    ck_assert_int_eq(aiometer_run_on_each(short_job, args, 4, &o), 0);
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
}
END_TEST

/* pthread_cancel of a pool thread does nothing: the job it runs goes on
 * through its own cancellation points and returns. */
typedef struct pool_cancel_case {
    tu_gate gate;
    pthread_t worker;
    atomic_int done;
} pool_cancel_case;

static void *cancelled_worker_job(void *arg)
{
    pool_cancel_case *pc = arg;

    pc->worker = pthread_self();
    tu_gate_arrive(&pc->gate);
    if (tu_gate_wait_open(&pc->gate, 5.0) != 0)
        return NULL;
    tu_sleep(0.02);     /* clock_nanosleep: a cancellation point */
    aiometer_sleep(0.02);
    atomic_store(&pc->done, 1);
    return pc;
}

START_TEST(test_cancel_pool_thread)
{
    pool_cancel_case pc;
    aiometer_pool *pool;
    aiometer_amap *pc_it;
    aiometer_options o = { 0 };
    void *arg = &pc;

    memset(&pc, 0, sizeof pc);
    tu_gate_init(&pc.gate);
    ck_assert_int_eq(aiometer_pool_create(&pool, 2), 0);
    o.pool = pool;
    /* amap: the job runs on a pool thread while this one is free to
     * cancel that thread. */
    ck_assert_int_eq(aiometer_amap_open(&pc_it, cancelled_worker_job, &arg, 1, &o), 0);
    ck_assert_int_eq(tu_gate_wait_arrived(&pc.gate, 1, 5.0), 0);
    ck_assert(!pthread_equal(pc.worker, pthread_self()));
    ck_assert_int_eq(pthread_cancel(pc.worker), 0);
    tu_gate_open(&pc.gate);
    {
        void *r = NULL;
        ck_assert_int_eq(aiometer_amap_next(pc_it, &r, NULL), 0);
        ck_assert_ptr_eq(r, &pc);
        ck_assert_int_eq(aiometer_amap_next(pc_it, &r, NULL), AIOMETER_DONE);
    }
    ck_assert_int_eq(aiometer_amap_close(pc_it), 0);
    ck_assert_int_eq(atomic_load(&pc.done), 1);
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
    tu_gate_destroy(&pc.gate);
}
END_TEST

/* ---- item 3: a source that calls the job-side functions ----------------------- */

enum { SRC_JOBS = 20 };

typedef struct source_case {
    int what; /* which job-side function the source calls */
    size_t next;
    int odd;  /* the function did not behave as "outside a job" */
    double late; /* the first pull takes this long: past a short deadline */
} source_case;

enum { SRC_SLEEP, SRC_FAIL, SRC_CANCELLED, SRC_CANCEL_FD };

static int calling_source(void *state, void **arg)
{
    source_case *sc = state;

    if (sc->next == SRC_JOBS)
        return AIOMETER_DONE;
    if (sc->next == 0 && sc->late > 0)
        tu_sleep(sc->late);
    switch (sc->what) {
    case SRC_SLEEP:
        if (aiometer_sleep(0.001) != 0)
            sc->odd = 1;
        break;
    case SRC_FAIL:
        aiometer_fail(EIO); /* outside a job: does nothing */
        break;
    case SRC_CANCELLED:
        if (aiometer_cancelled() != 0)
            sc->odd = 1;
        break;
    case SRC_CANCEL_FD:
        errno = 0;
        if (aiometer_cancel_fd() != -1 || errno != EPERM)
            sc->odd = 1;
        break;
    }
    *arg = (void *)(uintptr_t)(++sc->next);
    return 0;
}

static void *count_job(void *arg)
{
    return arg;
}

/* Loop index: the function the source calls; each through run_on_each_source
 * without a deadline, with one, with one that passes while the source runs,
 * and through amap.  The source is outside any job: the functions do what
 * they do there, and nothing deadlocks. */
START_TEST(test_source_calls_job_functions)
{
    for (int mode = 0; mode < 4; mode++) {
        source_case sc = { _i, 0, 0, 0 };
        aiometer_pool *pool;
        aiometer_options o = { 0 };
        aiometer_stats st;

        ck_assert_int_eq(aiometer_pool_create(&pool, 3), 0);
        o.pool = pool;
        o.stats = &st;
        if (mode == 1)
            o.timeout = 10;
        if (mode == 2) {
            o.timeout = 0.1;
            sc.late = 0.15;
            ck_assert_int_eq(aiometer_run_on_each_source(count_job, calling_source, &sc, &o),
                             ETIMEDOUT);
        } else if (mode < 2) {
            ck_assert_int_eq(aiometer_run_on_each_source(count_job, calling_source, &sc, &o), 0);
            ck_assert_uint_eq(st.completed, SRC_JOBS);
        } else {
            aiometer_amap *it;
            void *r;
            size_t got = 0;
            ck_assert_int_eq(aiometer_amap_open_source(&it, count_job, calling_source, &sc, &o),
                             0);
            while (aiometer_amap_next(it, &r, NULL) == 0)
                got++;
            ck_assert_int_eq(aiometer_amap_close(it), 0);
            ck_assert_uint_eq(got, SRC_JOBS);
        }
        ck_assert_msg(!sc.odd, "function %d misbehaved in a source (mode %d)", _i, mode);
        ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
    }
}
END_TEST

/* ---- item 4: a pool that cannot start threads --------------------------------- */

/* In a forked child (so that the limit binds nobody else), drop to the
 * user nobody when root (RLIMIT_NPROC does not bind root) and forbid new
 * threads; then run `body`, whose return value is the child's exit status.
 * `before` runs first, while threads can still start.  alarm() kills a
 * child that hangs. */
static void in_thread_starved_child(void (*before)(void), int (*body)(void))
{
    pid_t pid;
    int status;

    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct rlimit rl = { 1, 1 };
        alarm(12);
        if (geteuid() == 0) {
            struct passwd *pw = getpwnam("nobody");
            if (!pw || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
                _exit(90);
        }
        if (before)
            before();
        if (setrlimit(RLIMIT_NPROC, &rl) != 0)
            _exit(91);
        _exit(body());
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status), "the child died of signal %d",
                  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    ck_assert_msg(WEXITSTATUS(status) == 0, "the child said %d", WEXITSTATUS(status));
}

static void *tiny_sleep_job(void *arg)
{
    tu_sleep(0.005);
    return arg;
}

/* amap with a deadline on a pool that could start no thread: the consumer
 * runs the jobs. */
static int starved_amap(void)
{
    enum { N = 20 };
    aiometer_pool *pool;
    aiometer_amap *it;
    aiometer_options o = { 0 };
    void *args[N], *r;
    size_t got = 0;
    int rc;
    uint64_t t0 = tu_now_ns();

    for (int i = 0; i < N; i++)
        args[i] = (void *)(uintptr_t)(i + 1);
    if (aiometer_pool_create(&pool, 4) != 0)
        return 2;
    o.pool = pool;
    o.timeout = 5;
    if (aiometer_amap_open(&it, tiny_sleep_job, args, N, &o) != 0)
        return 3;
    while ((rc = aiometer_amap_next(it, &r, NULL)) == 0)
        got++;
    if (rc != AIOMETER_DONE)
        return 4; /* ETIMEDOUT before the fix */
    if (aiometer_amap_close(it) != 0 || got != N)
        return 5;
    if (tu_since(t0) > 3)
        return 6;
    return aiometer_pool_destroy(pool) == 0 ? 0 : 7;
}

START_TEST(test_starved_amap_deadline)
{
    in_thread_starved_child(NULL, starved_amap);
}
END_TEST

/* The nested case: the pool has one thread (started before the limit),
 * busy with a job of an outer call, and that job makes an inner call with
 * a deadline that no new thread can help with. */
static aiometer_pool *starved_pool;
static atomic_int inner_rc;

static void start_one_thread(void)
{
    aiometer_options o = { 0 };
    void *arg = NULL;

    if (aiometer_pool_create(&starved_pool, 4) != 0)
        _exit(80);
    o.pool = starved_pool;
    o.timeout = 5; /* the caller watches, so one pool thread starts */
    if (aiometer_run_on_each(tiny_sleep_job, &arg, 1, &o) != 0)
        _exit(81);
}

static void *outer_job(void *arg)
{
    enum { N = 8 };
    aiometer_options o = { 0 };
    void *args[N] = { 0 };

    (void)arg;
    o.pool = starved_pool;
    o.timeout = 5;
    atomic_store(&inner_rc, aiometer_run_on_each(tiny_sleep_job, args, N, &o));
    return NULL;
}

static int starved_nested(void)
{
    aiometer_options o = { 0 };
    void *arg = NULL;
    uint64_t t0 = tu_now_ns();

    o.pool = starved_pool;
    o.timeout = 8;
    if (aiometer_run_on_each(outer_job, &arg, 1, &o) != 0)
        return 2;
    if (atomic_load(&inner_rc) != 0)
        return 3; /* ETIMEDOUT before the fix */
    if (tu_since(t0) > 3)
        return 4;
    return aiometer_pool_destroy(starved_pool) == 0 ? 0 : 5;
}

START_TEST(test_starved_nested_deadline)
{
    in_thread_starved_child(start_one_thread, starved_nested);
}
END_TEST

/* ---- item 5: GCRA wrap-around at tiny rates ------------------------------------ */

static const double tiny_rates[] = { 1e-300, 5e-324, DBL_MIN };

static void *count_start(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
    return NULL;
}

/* Run 8 jobs on 8 threads under opts `o` for 0.3 s; how many started. */
static int starts_in_window(aiometer_options *o)
{
    enum { N = 8 };
    atomic_int started = 0;
    void *args[N];

    for (int i = 0; i < N; i++)
        args[i] = &started;
    o->max_at_once = N;
    o->timeout = 0.3;
    ck_assert_int_eq(aiometer_run_on_each(count_start, args, N, o), ETIMEDOUT);
    return atomic_load(&started);
}

/* Loop index: which tiny rate.  One start, then none for the life of the
 * process: the fifth booking must not wrap round to "now". */
START_TEST(test_tiny_call_rate)
{
    aiometer_pool *pool;
    aiometer_options o = { 0 };

    ck_assert_int_eq(aiometer_pool_create(&pool, 8), 0);
    o.pool = pool;
    o.max_per_second = tiny_rates[_i];
    ck_assert_int_eq(starts_in_window(&o), 1);
    /* A burst tolerance past 2^62 ns is held there, so a burst of 3 may
     * give fewer starts; never more. */
    o.max_burst = 3;
    int n = starts_in_window(&o);
    ck_assert_msg(n >= 1 && n <= 3, "%d starts with a burst of 3", n);
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
}
END_TEST

/* Loop index: rate index * 2 + (0: aiometer_limiter_create, 1:
 * aiometer_limiter_open with no name).  A shared limiter keeps its budget
 * across calls, so after the first start no call gets another. */
START_TEST(test_tiny_shared_rate)
{
    aiometer_pool *pool;
    aiometer_limiter *lim;
    aiometer_options o = { 0 };
    double rate = tiny_rates[_i / 2];

    ck_assert_int_eq(aiometer_pool_create(&pool, 8), 0);
    if (_i % 2 == 0) {
        ck_assert_int_eq(aiometer_limiter_create(&lim, rate, 1), 0);
    } else {
        aiometer_limiter_options lo = { .max_per_second = rate, .max_burst = 1, .max_at_once = 0 };
        ck_assert_int_eq(aiometer_limiter_open(&lim, NULL, &lo), 0);
    }
    o.pool = pool;
    o.limiter = lim;
    ck_assert_int_eq(starts_in_window(&o), 1);
    ck_assert_int_eq(starts_in_window(&o), 0);
    ck_assert_int_eq(starts_in_window(&o), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
}
END_TEST

/* ---- item 6: a child forked inside a job ---------------------------------------- */

typedef struct fork_case {
    int go[2];   /* the job tells the child that the call is cancelled */
    pid_t child;
} fork_case;

#ifndef UNDER_TSAN
/* CPU time of this process in seconds. */
static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* In the child: after the parent's call is cancelled, aiometer_sleep must
 * be a plain sleep.  Exit status 0 when it is. */
static void fork_child_body(fork_case *fc)
{
    char b;
    double cpu0;
    uint64_t t0;
    int rc;

    alarm(10);
    if (read(fc->go[0], &b, 1) != 1)
        _exit(2);
    cpu0 = cpu_seconds();
    t0 = tu_now_ns();
    rc = aiometer_sleep(1.0);
    if (rc != 0)
        _exit(5);
    if (tu_since(t0) < 0.99)
        _exit(6);
    /* A plain sleep costs next to no CPU; the spin cost most of a second
     * (on a loaded machine, at least a good part of one). */
    if (cpu_seconds() - cpu0 > 0.1)
        _exit(7);
    /* The child runs no job: the job-side functions say so. */
    if (aiometer_cancelled() != 0)
        _exit(3);
    errno = 0;
    if (aiometer_cancel_fd() != -1 || errno != EPERM)
        _exit(4);
    _exit(0);
}

static void *forking_job(void *arg)
{
    fork_case *fc = arg;

    /* The call's cancel descriptor exists before the fork, so the child
     * shares it. */
    if (aiometer_cancel_fd() < 0)
        return NULL;
    fc->child = fork();
    if (fc->child == 0)
        fork_child_body(fc);
    aiometer_fail(EIO); /* the call is cancelled now */
    if (write(fc->go[1], "g", 1) != 1)
        return NULL;
    return fc;
}
#endif

START_TEST(test_fork_in_job_sleep)
{
#ifdef UNDER_TSAN
    return;
#else
    fork_case fc;
    aiometer_pool *pool;
    aiometer_options o = { 0 };
    void *arg = &fc;
    int status;

    ck_assert_int_eq(pipe(fc.go), 0);
    fc.child = -1;
    ck_assert_int_eq(aiometer_pool_create(&pool, 2), 0);
    o.pool = pool;
    ck_assert_int_eq(aiometer_run_on_each(forking_job, &arg, 1, &o), EIO);
    ck_assert_int_gt(fc.child, 0);
    ck_assert_int_eq(waitpid(fc.child, &status, 0), fc.child);
    ck_assert_msg(WIFEXITED(status), "the child died of signal %d",
                  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    ck_assert_msg(WEXITSTATUS(status) == 0, "the child said %d (7: it spun)",
                  WEXITSTATUS(status));
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
    close(fc.go[0]);
    close(fc.go[1]);
#endif
}
END_TEST

/* ---- item 7: two consumers of one amap iterator --------------------------------- */

enum { MC_JOBS = 20000, MC_CONSUMERS = 4 };

typedef struct mc_case {
    aiometer_amap *it;
    atomic_int seen[MC_JOBS];
    atomic_int ends;      /* consumers that saw AIOMETER_DONE */
    atomic_int bad_index; /* an index that does not match its result */
} mc_case;

static void *index_job(void *arg)
{
    return arg;
}

static void *mc_consumer(void *arg)
{
    mc_case *mc = arg;
    void *r;
    size_t idx;
    int rc;

    while ((rc = aiometer_amap_next(mc->it, &r, &idx)) == 0) {
        size_t v = (size_t)(uintptr_t)r - 1;
        if (v >= MC_JOBS || v != idx) {
            atomic_store(&mc->bad_index, 1);
            continue;
        }
        atomic_fetch_add(&mc->seen[v], 1);
    }
    if (rc == AIOMETER_DONE)
        atomic_fetch_add(&mc->ends, 1);
    return NULL;
}

/* Loop index: 0 in completion order, 1 in input order.  Every result goes
 * to exactly one consumer, and every consumer sees the end. */
START_TEST(test_amap_several_consumers)
{
    static mc_case mc;
    static void *args[MC_JOBS];
    aiometer_pool *pool;
    aiometer_options o = { 0 };
    pthread_t t[MC_CONSUMERS];
    int dup = 0, lost = 0;

    memset(&mc, 0, sizeof mc);
    for (size_t i = 0; i < MC_JOBS; i++)
        args[i] = (void *)(uintptr_t)(i + 1);
    ck_assert_int_eq(aiometer_pool_create(&pool, 4), 0);
    o.pool = pool;
    o.ordered = _i;
    ck_assert_int_eq(aiometer_amap_open(&mc.it, index_job, args, MC_JOBS, &o), 0);
    for (int k = 0; k < MC_CONSUMERS; k++)
        tu_thread_start(&t[k], mc_consumer, &mc);
    for (int k = 0; k < MC_CONSUMERS; k++)
        tu_thread_join(t[k]);
    ck_assert_int_eq(aiometer_amap_close(mc.it), 0);
    for (size_t i = 0; i < MC_JOBS; i++) {
        int s = atomic_load(&mc.seen[i]);
        if (s > 1)
            dup += s - 1;
        else if (s == 0)
            lost++;
    }
    ck_assert_msg(dup == 0 && lost == 0, "%d duplicated and %d lost of %d", dup, lost, MC_JOBS);
    ck_assert_int_eq(atomic_load(&mc.bad_index), 0);
    ck_assert_int_eq(atomic_load(&mc.ends), MC_CONSUMERS);
    ck_assert_int_eq(aiometer_pool_destroy(pool), 0);
}
END_TEST

/* ---- the final progress report ends the thread ------------------------------ */

/* The progress callback calls pthread_exit in the report that closes the
 * call (the interval is infinite, so that is the only report, and it runs
 * on the thread that made the call).  The thread ends; the call must not
 * stay counted among the pool's and the limiter's users, or neither could
 * ever be destroyed (EBUSY), and an amap's iterator must be freed (the
 * memcheck and ASan runs of this suite see a leak). */
enum { FINAL_EACH, FINAL_ANY, FINAL_AMAP, FINAL_CASES };
enum { FINAL_JOBS = 8 };

typedef struct final_case {
    int kind;
    aiometer_pool *pool;
    aiometer_limiter *lim;
    atomic_int reports;
    atomic_int ran;
    int reached_end; /* set if the call returned, which it must not */
} final_case;

static void final_report_exits(const aiometer_progress *p, void *user)
{
    final_case *fc = user;

    (void)p;
    atomic_fetch_add(&fc->reports, 1);
    pthread_exit(NULL);
}

static void *final_job(void *arg)
{
    final_case *fc = arg;

    atomic_fetch_add(&fc->ran, 1);
    return arg;
}

static void *final_thread(void *arg)
{
    final_case *fc = arg;
    aiometer_options o = { 0 };
    aiometer_job jobs[FINAL_JOBS];
    void *args[FINAL_JOBS], *res;
    aiometer_stats st;
    size_t idx;

    for (int i = 0; i < FINAL_JOBS; i++) {
        jobs[i].fn = final_job;
        jobs[i].arg = args[i] = fc;
    }
    o.pool = fc->pool;
    o.limiter = fc->lim;
    o.progress = final_report_exits;
    o.progress_arg = fc;
    o.progress_interval = INFINITY;
    o.stats = &st;
    if (fc->kind == FINAL_EACH) {
        aiometer_run_on_each(final_job, args, FINAL_JOBS, &o);
    } else if (fc->kind == FINAL_ANY) {
        aiometer_run_any(jobs, FINAL_JOBS, &res, &idx, &o);
    } else {
        aiometer_amap *it;
        ck_assert_int_eq(aiometer_amap_open(&it, final_job, args, FINAL_JOBS, &o), 0);
        while (aiometer_amap_next(it, &res, &idx) == 0)
            ;
        aiometer_amap_close(it);
    }
    fc->reached_end = 1;
    return fc;
}

START_TEST(test_exit_in_final_report)
{
    final_case fc;
    pthread_t t;

    memset(&fc, 0, sizeof fc);
    fc.kind = _i;
    ck_assert_int_eq(aiometer_pool_create(&fc.pool, 2), 0);
    ck_assert_int_eq(aiometer_limiter_create(&fc.lim, 1e6, 1000), 0);
    tu_thread_start(&t, final_thread, &fc);
    ck_assert_ptr_null(tu_thread_join(t));
    ck_assert_int_eq(fc.reached_end, 0);
    ck_assert_int_eq(atomic_load(&fc.reports), 1);
    ck_assert_int_ge(atomic_load(&fc.ran), 1);
    ck_assert_int_eq(aiometer_limiter_destroy(fc.lim), 0);
    ck_assert_int_eq(aiometer_pool_destroy(fc.pool), 0);
}
END_TEST

/* ---- aiometer_strerror of a program's own error value ------------------------- */

static void *fail_with_arg(void *arg)
{
    aiometer_fail((int)(intptr_t)arg);
    return NULL;
}

/* A job may fail with a value of the program's own.  The message for it
 * is static, as aiometer_strerror(3) says: a later call, for another such
 * value, neither changes nor frees it (glibc's strerror() did both: its
 * "Unknown error N" lives in a buffer that its next call frees, which the
 * ASan run of this suite reports as a use after free). */
START_TEST(test_strerror_own_values_stay)
{
    void *a1[] = { (void *)(intptr_t)1001 }, *a2[] = { (void *)(intptr_t)1002 };
    int e1 = aiometer_run_on_each(fail_with_arg, a1, 1, NULL);
    int e2 = aiometer_run_on_each(fail_with_arg, a2, 1, NULL);
    const char *m1, *m2, *known;
    char copy[128];

    ck_assert_int_eq(e1, 1001);
    ck_assert_int_eq(e2, 1002);
    m1 = aiometer_strerror(e1);
    ck_assert_ptr_nonnull(m1);
    ck_assert_uint_gt(strlen(m1), 0);
    snprintf(copy, sizeof copy, "%s", m1);
    m2 = aiometer_strerror(e2);
    ck_assert_ptr_nonnull(m2);
    ck_assert_str_eq(m1, copy);
    ck_assert_ptr_nonnull(aiometer_strerror(-12345));
    ck_assert_str_eq(m1, copy);
    /* Values the system knows keep their own messages. */
    known = aiometer_strerror(EINVAL);
    ck_assert_str_ne(known, m1);
    ck_assert_str_ne(aiometer_strerror(ETIMEDOUT), known);
    ck_assert_str_eq(aiometer_strerror(AIOMETER_DONE), "No more results");
}
END_TEST

Suite *defects_suite(void)
{
    Suite *s = suite_create("defects");
    TCase *tc;

    tc = tcase_create("thread_cancel");
    tcase_set_timeout(tc, DEFECT_TIMEOUT);
    tcase_add_test(tc, test_cancel_run_all);
    tcase_add_test(tc, test_cancel_run_on_each);
    tcase_add_test(tc, test_cancel_run_any);
    tcase_add_test(tc, test_cancel_amap_next);
    tcase_add_test(tc, test_cancel_in_sleep);
    tcase_add_test(tc, test_cancel_pool_thread);
    suite_add_tcase(s, tc);

    tc = tcase_create("thread_exit");
    tcase_set_timeout(tc, DEFECT_TIMEOUT);
    tcase_add_test(tc, test_exit_on_worker);
    tcase_add_test(tc, test_exit_on_caller);
    tcase_add_test(tc, test_exit_in_source);
    tcase_add_test(tc, test_exit_in_batch_stats);
    tcase_add_loop_test(tc, test_exit_in_final_report, 0, FINAL_CASES);
    suite_add_tcase(s, tc);

    tc = tcase_create("thread_exit_consumer");
    tcase_set_timeout(tc, DEFECT_TIMEOUT);
    tcase_add_test(tc, test_exit_in_amap_consumer);
    suite_add_tcase(s, tc);

    tc = tcase_create("source_calls");
    tcase_set_timeout(tc, DEFECT_TIMEOUT);
    tcase_add_loop_test(tc, test_source_calls_job_functions, SRC_SLEEP, SRC_CANCEL_FD + 1);
    suite_add_tcase(s, tc);

    tc = tcase_create("starved_pool");
    tcase_set_timeout(tc, DEFECT_TIMEOUT);
    tcase_set_tags(tc, "timing");
    tcase_add_test(tc, test_starved_amap_deadline);
    tcase_add_test(tc, test_starved_nested_deadline);
    suite_add_tcase(s, tc);

    tc = tcase_create("tiny_rate");
    tcase_set_timeout(tc, DEFECT_TIMEOUT);
    tcase_set_tags(tc, "timing");
    tcase_add_loop_test(tc, test_tiny_call_rate, 0, 3);
    tcase_add_loop_test(tc, test_tiny_shared_rate, 0, 6);
    suite_add_tcase(s, tc);

    tc = tcase_create("fork_in_job");
    tcase_set_timeout(tc, DEFECT_TIMEOUT);
    tcase_set_tags(tc, "timing");
    tcase_add_test(tc, test_fork_in_job_sleep);
    suite_add_tcase(s, tc);

    tc = tcase_create("strerror");
    tcase_set_timeout(tc, DEFECT_TIMEOUT);
    tcase_add_test(tc, test_strerror_own_values_stay);
    suite_add_tcase(s, tc);

    tc = tcase_create("amap_consumers");
    tcase_set_timeout(tc, DEFECT_TIMEOUT);
    tcase_add_loop_test(tc, test_amap_several_consumers, 0, 2);
    suite_add_tcase(s, tc);

    return s;
}
