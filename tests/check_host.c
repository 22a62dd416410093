/*
 * check_host.c - host-wide named limiters (aiometer_limiter_open with a
 * name): a rate and a running cap shared by real forked and exec'd
 * processes, SIGKILLed owners whose slots come back, restarts that continue
 * the schedule, unlink, a new boot, rates so small that the schedule would
 * wrap, and every error the man page lists.
 *
 * Jobs record what they see in memory shared by the test's processes (an
 * anonymous MAP_SHARED area made before fork): their start and end times
 * and how many jobs of all processes run at once.  Children report failure
 * through their exit status, never through Check's assertions.
 *
 * Bounds: a start can only be seen after its booked time, so lower bounds
 * on start times are strict (EPS for rounding); upper bounds allow for a
 * loaded machine, but not for valgrind's slowdown: the tests that have
 * them run twice, without those bounds in their own TCase and with them
 * in the TCase tagged "timing", which the valgrind runs leave out.
 *
 * The valgrind runs also use CK_FORK=no, where a failed assertion ends a
 * test by a longjmp and the next test runs in the same process; see `left`
 * below for what keeps one failure from turning into crashes and leaks.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "aiometer.h"
#include "testutil.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

#define EPS 0.0005
#define LATE 0.050
#define MAX_RECS 65536
#define KILLS 200 /* t_kill_loop's children */

/* ---- what jobs of every process record --------------------------------------- */

typedef struct rec {
    _Atomic uint64_t start, end; /* CLOCK_MONOTONIC ns; end 0: never seen */
    _Atomic int who;             /* which process (the test's numbering) */
} rec;

typedef struct area {
    _Atomic int running, peak;
    _Atomic size_t n;
    _Atomic int flag;
    _Atomic uint64_t killed_at[KILLS + 1]; /* t_kill_loop: who -> when it was killed */
    rec r[MAX_RECS];
} area;

/* ---- what a test leaves behind when an assertion ends it -------------------------
 *
 * Under CK_FORK=no a failed assertion longjmps out of the test, and what the
 * test had going on would live on: children holding slots, a thread whose
 * call still runs jobs on the test's data, limiters and memory.  The thread
 * would crash on the dead stack frame, and valgrind would report the
 * memory as lost - in this process and in every child forked later, which
 * inherits the lost blocks and so exits with valgrind's error status.  So
 * while a test uses such things they are kept here, where they stay
 * reachable, and the checked teardown (which Check runs after a failed
 * test too when it does not fork) ends them: it kills the children first,
 * so that a call waiting for their slots returns, then stops and joins the
 * thread, whose data is static for that reason, then frees the rest.  In
 * fork mode a failed test's process exits at once; its children die with
 * it (PR_SET_PDEATHSIG). */
#define LEFT_MAX 8

static struct {
    pid_t pid[LEFT_MAX];   /* 0: free */
    void *lim[LEFT_MAX];   /* aiometer_limiter * */
    void *area[LEFT_MAX];  /* area * */
    void *mem[LEFT_MAX];   /* malloc'd */
    pthread_t th;
    int has_th;
    _Atomic int *stop; /* set before joining th, unless NULL */
} left;

static void keep(void **v, void *p)
{
    for (size_t i = 0; i < LEFT_MAX; i++)
        if (!v[i]) {
            v[i] = p;
            return;
        }
    ck_abort_msg("more than %d things of one kind to clean up", LEFT_MAX);
}

static void drop(void **v, void *p)
{
    for (size_t i = 0; i < LEFT_MAX; i++)
        if (v[i] == p)
            v[i] = NULL;
}

static area *area_new(void)
{
    area *a = mmap(NULL, sizeof(area), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(a, MAP_FAILED);
    keep(left.area, a);
    return a; /* zero-filled */
}

static void area_free(area *a)
{
    drop(left.area, a);
    munmap(a, sizeof(area));
}

static void *mem_new(size_t size)
{
    void *p = malloc(size);

    ck_assert_ptr_nonnull(p);
    keep(left.mem, p);
    return p;
}

static void mem_free(void *p)
{
    drop(left.mem, p);
    free(p);
}

static void destroy_ok(aiometer_limiter *l)
{
    drop(left.lim, l);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
}

/* Start fn(arg) on the test's one background thread; arg must be static. */
static void bg_start(void *(*fn)(void *), void *arg, _Atomic int *stop)
{
    ck_assert(!left.has_th);
    left.stop = stop;
    tu_thread_start(&left.th, fn, arg);
    left.has_th = 1;
}

static void bg_join(void)
{
    left.has_th = 0;
    tu_thread_join(left.th);
}

static void forget_pid(pid_t pid)
{
    for (size_t i = 0; i < LEFT_MAX; i++)
        if (left.pid[i] == pid)
            left.pid[i] = 0;
}

static void remove_names(void);

static void left_cleanup(void)
{
    for (size_t i = 0; i < LEFT_MAX; i++)
        if (left.pid[i]) {
            kill(left.pid[i], SIGKILL);
            waitpid(left.pid[i], NULL, 0);
            left.pid[i] = 0;
        }
    if (left.has_th) {
        if (left.stop)
            atomic_store(left.stop, 1);
        bg_join();
    }
    for (size_t i = 0; i < LEFT_MAX; i++) {
        if (left.lim[i])
            aiometer_limiter_destroy(left.lim[i]);
        if (left.area[i])
            munmap(left.area[i], sizeof(area));
        free(left.mem[i]);
    }
    memset(&left, 0, sizeof left);
    /* And a failed test's names, so that the next test's are fresh. */
    remove_names();
}

typedef struct jobctx {
    area *a;
    int who;
    double hold; /* seconds each job sleeps */
} jobctx;

static void *rec_job(void *arg)
{
    jobctx *j = arg;
    area *a = j->a;
    size_t i = atomic_fetch_add(&a->n, 1);
    int run, peak;

    if (i < MAX_RECS) {
        atomic_store(&a->r[i].who, j->who);
        atomic_store(&a->r[i].start, tu_now_ns());
    }
    run = atomic_fetch_add(&a->running, 1) + 1;
    peak = atomic_load(&a->peak);
    while (run > peak && !atomic_compare_exchange_weak(&a->peak, &peak, run))
        ;
    if (j->hold > 0)
        tu_sleep(j->hold);
    atomic_fetch_sub(&a->running, 1);
    if (i < MAX_RECS)
        atomic_store(&a->r[i].end, tu_now_ns());
    return arg;
}

/* Run n rec_jobs under lim on a pool of `threads`; the call's result. */
static int run_recs(aiometer_limiter *lim, jobctx *j, size_t n, size_t threads, double timeout)
{
    aiometer_pool *pool;
    aiometer_options o = { 0 };
    void **args = malloc(n * sizeof *args);
    int rc;

    if (!args || aiometer_pool_create(&pool, threads))
        abort();
    for (size_t i = 0; i < n; i++)
        args[i] = j;
    o.pool = pool;
    o.limiter = lim;
    o.max_at_once = threads;
    o.timeout = timeout;
    rc = aiometer_run_on_each(rec_job, args, n, &o);
    aiometer_pool_destroy(pool);
    free(args);
    return rc;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

/* The recorded start times, sorted, in a static buffer (nothing to free
 * if an assertion ends the test); *n set to their number. */
static uint64_t starts_buf[MAX_RECS];

static uint64_t *sorted_starts(area *a, size_t *n)
{
    size_t k = atomic_load(&a->n), m = 0;
    uint64_t *s = starts_buf;

    for (size_t i = 0; i < k && i < MAX_RECS; i++)
        if (atomic_load(&a->r[i].start))
            s[m++] = atomic_load(&a->r[i].start);
    qsort(s, m, sizeof *s, cmp_u64);
    *n = m;
    return s;
}

/* ---- processes ----------------------------------------------------------------- */

/* In a child: report a failed check through the exit status. */
#define CHILD_CHECK(cond)                                                               \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: child check failed: %s\n", __FILE__, __LINE__, #cond); \
            _exit(3);                                                                   \
        }                                                                               \
    } while (0)

/* In a new child: die when the process (thread) that forked it does. */
static void die_with_parent(pid_t parent)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(5);
}

static pid_t spawn(void (*fn)(void *), void *arg)
{
    pid_t parent = getpid(), pid = fork();

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        die_with_parent(parent);
        fn(arg);
        _exit(0);
    }
    for (size_t i = 0; i < LEFT_MAX; i++)
        if (!left.pid[i]) {
            left.pid[i] = pid;
            return pid;
        }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    ck_abort_msg("more than %d children to clean up", LEFT_MAX);
    return -1;
}

static void reap_ok(pid_t pid)
{
    int st;

    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    forget_pid(pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d failed (status %#x)",
                  (int)pid, st);
}

/* SIGKILL a child and reap it. */
static void reap_killed(pid_t pid)
{
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
    forget_pid(pid);
}

/* Names carry the runner's pid and the test's: each test unlinks its own,
 * and a test that fails half way leaves its names to the runner's unchecked
 * teardown, which removes every name of this runner (and no other run's). */
static long runner_pid;

static void runner_setup(void)
{
    runner_pid = (long)getpid();
}

static void remove_names(void)
{
    char prefix[64], path[512];
    struct dirent *e;
    DIR *d = opendir("/dev/shm");

    snprintf(prefix, sizeof prefix, "aiometer.chk%ld.", runner_pid);
    while (d && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
            snprintf(path, sizeof path, "/dev/shm/%s", e->d_name);
            unlink(path);
        }
    }
    if (d)
        closedir(d);
}

static void runner_teardown(void)
{
    remove_names();
}

static void name_of(char *buf, size_t size, const char *tag)
{
    snprintf(buf, size, "chk%ld.%ld.%s", runner_pid, (long)getpid(), tag);
}

static aiometer_limiter *open_ok(const char *name, double rate, size_t burst, size_t cap)
{
    aiometer_limiter_options lo = { .max_per_second = rate, .max_burst = burst, .max_at_once = cap };
    aiometer_limiter *l = NULL;
    int err = aiometer_limiter_open(&l, name, &lo);

    ck_assert_msg(err == 0, "open %s: %s", name, aiometer_strerror(err));
    keep(left.lim, l);
    return l;
}

static void shm_file(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "/dev/shm/aiometer.%s", name);
}

/* ---- rate across processes ---------------------------------------------------- */

typedef struct rate_child {
    area *a;
    const char *name;
    int who;
    uint64_t t0; /* every child starts its call then */
} rate_child;

static void rate_child_run(void *arg)
{
    rate_child *rc = arg;
    jobctx j = { rc->a, rc->who, 0 };
    aiometer_limiter_options lo = { .max_per_second = 200, .max_burst = 5, .max_at_once = 0 };
    aiometer_limiter *l;
    uint64_t now;
    double left_s;
    int err;

    CHILD_CHECK(aiometer_limiter_open(&l, rc->name, &lo) == 0);
    now = tu_now_ns();
    if (now < rc->t0)
        tu_sleep((double)(rc->t0 - now) / 1e9);
    /* Until t0 + 2 s; a child that valgrind made start after that still
     * runs a little, since a timeout of 0 would mean none. */
    left_s = 2.0 - (double)(tu_now_ns() - rc->t0) / 1e9;
    err = run_recs(l, &j, 2000, 4, left_s > 0.1 ? left_s : 0.1);
    CHILD_CHECK(err == ETIMEDOUT || err == 0);
    CHILD_CHECK(aiometer_limiter_destroy(l) == 0);
}

/* _i 1 (TCase timing) also asserts the throughput. */
START_TEST(t_rate_4x4)
{
    char name[64];
    area *a = area_new();
    rate_child rc[4];
    pid_t pid[4];
    uint64_t t0 = tu_now_ns() + 300000000u, *s;
    size_t n, in_time = 0;
    const double rate = 200, burst = 5;

    name_of(name, sizeof name, "rate");
    for (int i = 0; i < 4; i++) {
        rc[i] = (rate_child){ a, name, i, t0 };
        pid[i] = spawn(rate_child_run, &rc[i]);
    }
    for (int i = 0; i < 4; i++)
        reap_ok(pid[i]);
    s = sorted_starts(a, &n);
    for (size_t i = 0; i < n; i++) {
        /* The k-th start (from 1) is booked no sooner than
         * t0 + (k - burst) / rate: the schedule was fresh at t0. */
        double at = (double)(s[i] - t0) / 1e9, bound = ((double)(i + 1) - burst) / rate;
        ck_assert_msg(at >= bound - EPS, "start %zu at %.4f s, GCRA allows %.4f s", i, at, bound);
        if (at <= 2.0)
            in_time++;
    }
    /* Any window, allowing LATE for starts seen late (a process that the
     * loaded machine did not run for a while starts its due jobs at once):
     * separate budgets per process would still fail this by far. */
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            ck_assert_msg((double)(j - i + 1) <= burst + ((double)(s[j] - s[i]) / 1e9 + LATE) * rate,
                          "%zu starts in %.4f s", j - i + 1, (double)(s[j] - s[i]) / 1e9);
    if (_i)
        ck_assert_msg(in_time >= 0.95 * (burst + 2.0 * rate), "only %zu starts in 2 s", in_time);
    else
        ck_assert_msg(n > burst, "only %zu starts: the rate was never the limit", n);
    aiometer_limiter_unlink(name);
    area_free(a);
}
END_TEST

/* ---- the running cap across processes ------------------------------------------ */

typedef struct cap_child {
    area *a;
    const char *name;
    size_t cap, jobs;
    double hold;
} cap_child;

static void cap_child_run(void *arg)
{
    cap_child *cc = arg;
    jobctx j = { cc->a, (int)getpid(), cc->hold };
    aiometer_limiter *l;
    aiometer_limiter_options lo = { .max_per_second = 0, .max_burst = 0, .max_at_once = cc->cap };

    CHILD_CHECK(aiometer_limiter_open(&l, cc->name, &lo) == 0);
    /* Start together, so that the processes compete for the slots. */
    atomic_fetch_add(&cc->a->flag, 1);
    while (atomic_load(&cc->a->flag) < 3)
        tu_sleep(0.001);
    CHILD_CHECK(run_recs(l, &j, cc->jobs, cc->cap, 0) == 0);
    CHILD_CHECK(aiometer_limiter_destroy(l) == 0);
}

static void cap_across(size_t cap, size_t jobs, double hold)
{
    char name[64];
    area *a = area_new();
    cap_child cc;
    pid_t pid[3];

    name_of(name, sizeof name, "cap");
    cc = (cap_child){ a, name, cap, jobs, hold };
    for (int i = 0; i < 3; i++)
        pid[i] = spawn(cap_child_run, &cc);
    for (int i = 0; i < 3; i++)
        reap_ok(pid[i]);
    ck_assert_int_eq(atomic_load(&a->n), 3 * jobs);
    ck_assert_msg(atomic_load(&a->peak) == (int)cap, "peak %d with a cap of %zu",
                  atomic_load(&a->peak), cap);
    if (cap == 1) {
        /* No two jobs of any processes overlap. */
        size_t n = 3 * jobs;
        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; k < n; k++)
                if (i != k)
                    ck_assert(atomic_load(&a->r[i].end) <= atomic_load(&a->r[k].start) ||
                              atomic_load(&a->r[k].end) <= atomic_load(&a->r[i].start));
    }
    aiometer_limiter_unlink(name);
    area_free(a);
}

START_TEST(t_cap6)
{
    cap_across(6, 12, 0.050);
}
END_TEST

START_TEST(t_cap1)
{
    cap_across(1, 8, 0.010);
}
END_TEST

/* ---- crashes ----------------------------------------------------------------------- */

typedef struct hog {
    area *a;
    const char *name;
    size_t cap;
} hog;

/* Take every slot with jobs that never return, until killed. */
static void hog_run(void *arg)
{
    hog *hg = arg;
    jobctx j = { hg->a, 1, 1000 };
    aiometer_limiter *l;
    aiometer_limiter_options lo = { .max_per_second = 0, .max_burst = 0, .max_at_once = hg->cap };

    CHILD_CHECK(aiometer_limiter_open(&l, hg->name, &lo) == 0);
    run_recs(l, &j, hg->cap, hg->cap, 0);
    _exit(4); /* not reached: the jobs sleep until the test kills us */
}

static void wait_running(area *a, int n)
{
    uint64_t t = tu_now_ns();

    while (atomic_load(&a->running) < n) {
        ck_assert_msg(tu_since(t) < 5, "the child never ran %d jobs", n);
        tu_sleep(0.001);
    }
}

typedef struct waiter {
    aiometer_limiter *l;
    jobctx j;
    size_t jobs;
    double timeout;
    int rc;
} waiter;

static void *waiter_run(void *arg)
{
    waiter *w = arg;

    w->rc = run_recs(w->l, &w->j, w->jobs, w->jobs, w->timeout);
    return NULL;
}

/* _i 1 (TCase timing) also bounds how soon the slots come back. */
START_TEST(t_sigkill_holder)
{
    static waiter w; /* static: the thread may outlive a failed test */
    char name[64];
    area *a = area_new(), *mine = area_new();
    hog hg;
    pid_t pid;
    uint64_t killed, first;
    size_t n;
    uint64_t *s;

    name_of(name, sizeof name, "kill");
    hg = (hog){ a, name, 5 };
    pid = spawn(hog_run, &hg);
    wait_running(a, 5);
    w = (waiter){ open_ok(name, 0, 0, 5), { mine, 2, 0 }, 3, 5.0, -1 };
    bg_start(waiter_run, &w, NULL);
    /* The parent's jobs wait for the child's slots... */
    tu_sleep(0.2);
    ck_assert_int_eq(atomic_load(&mine->n), 0);
    /* ...until the child dies.  It is left a zombie until the end: a dead
     * owner is dead before anyone reaps it. */
    killed = tu_now_ns();
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    bg_join();
    ck_assert_int_eq(w.rc, 0);
    s = sorted_starts(mine, &n);
    ck_assert_int_eq(n, 3);
    first = s[0];
    ck_assert_msg(first >= killed, "a start %.3f s before the kill",
                  (double)(killed - first) / 1e9);
    if (_i)
        ck_assert_msg((double)(first - killed) / 1e9 < 1.0, "first start %.3f s after the kill",
                      (double)(first - killed) / 1e9);
    ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
    forget_pid(pid);
    destroy_ok(w.l);
    aiometer_limiter_unlink(name);
    area_free(a);
    area_free(mine);
}
END_TEST

/* A cancelled or timed-out call ends its wait for a slot; _i 1 (TCase
 * timing): promptly. */
START_TEST(t_wait_ends_at_deadline)
{
    char name[64];
    area *a = area_new(), *mine = area_new();
    hog hg;
    pid_t pid;
    jobctx j = { mine, 2, 0 };
    aiometer_limiter *l;
    uint64_t t;
    int rc;

    name_of(name, sizeof name, "dl");
    hg = (hog){ a, name, 2 };
    pid = spawn(hog_run, &hg);
    wait_running(a, 2);
    l = open_ok(name, 0, 0, 2);
    t = tu_now_ns();
    rc = run_recs(l, &j, 4, 4, 0.2);
    ck_assert_int_eq(rc, ETIMEDOUT);
    ck_assert_int_eq(atomic_load(&mine->n), 0);
    if (_i)
        ck_assert_msg(tu_since(t) < 0.2 + 0.1, "the call took %.3f s", tu_since(t));
    reap_killed(pid);
    destroy_ok(l);
    aiometer_limiter_unlink(name);
    area_free(a);
    area_free(mine);
}
END_TEST

/* Children that run jobs under the limiter, killed at random points (in
 * open, while booking, while holding slots), 200 times, while the parent
 * runs jobs of its own under it all along. */
#define LOOP_CAP 4
#define LOOP_RATE 2000.0
#define LOOP_BURST 10

typedef struct loop_child {
    area *a;
    const char *name;
    int who;
} loop_child;

static void loop_child_run(void *arg)
{
    loop_child *lc = arg;
    jobctx j = { lc->a, lc->who, 0.001 };
    aiometer_limiter *l;
    aiometer_limiter_options lo = { .max_per_second = LOOP_RATE, .max_burst = LOOP_BURST, .max_at_once = LOOP_CAP };

    CHILD_CHECK(aiometer_limiter_open(&l, lc->name, &lo) == 0);
    run_recs(l, &j, 100000, LOOP_CAP, 0);
    _exit(0);
}

typedef struct loop_parent {
    aiometer_limiter *l;
    jobctx j;
    _Atomic int stop;
    int rc;
} loop_parent;

static int loop_source(void *state, void **arg)
{
    loop_parent *lp = state;

    if (atomic_load(&lp->stop))
        return AIOMETER_DONE;
    *arg = &lp->j;
    return 0;
}

static void *loop_parent_run(void *arg)
{
    loop_parent *lp = arg;
    aiometer_pool *pool;
    aiometer_options o = { 0 };

    if (aiometer_pool_create(&pool, LOOP_CAP))
        abort();
    o.pool = pool;
    o.limiter = lp->l;
    o.max_at_once = LOOP_CAP;
    lp->rc = aiometer_run_on_each_source(rec_job, loop_source, lp, &o);
    aiometer_pool_destroy(pool);
    return NULL;
}

/* The children are forked by a single-threaded forker process, not by the
 * test process whose call runs on threads: a fork of a multi-threaded
 * process is what ThreadSanitizer cannot follow. */
typedef struct forker {
    area *a;
    const char *name;
} forker;

static void forker_run(void *arg)
{
    forker *fk = arg;
    uint64_t seed = (uint64_t)getpid();
    pid_t me = getpid();

    for (int i = 1; i <= KILLS; i++) {
        loop_child lc = { fk->a, fk->name, i };
        pid_t pid = fork();

        CHILD_CHECK(pid >= 0);
        if (pid == 0) {
            die_with_parent(me);
            loop_child_run(&lc);
            _exit(0);
        }
        /* Up to 20 ms: some die opening, most with slots held. */
        tu_sleep((double)(tu_rand_next(&seed) % 20000) / 1e6);
        /* Taken before the kill: the child's unfinished jobs surely ran
         * until then (after it, this process may be preempted while the
         * child's slots are already taken back and given to others). */
        atomic_store(&fk->a->killed_at[i], tu_now_ns());
        CHILD_CHECK(kill(pid, SIGKILL) == 0);
        CHILD_CHECK(waitpid(pid, NULL, 0) == pid);
    }
}

START_TEST(t_kill_loop)
{
    /* Static: the thread may outlive a failed test; so may the events. */
    static loop_parent lp;
    static uint64_t ev[2 * MAX_RECS];
    char name[64];
    area *a = area_new();
    forker fk;
    pid_t pid;
    uint64_t t;
    size_t n, k = 0, parent_jobs = 0;
    int64_t run = 0;

    name_of(name, sizeof name, "loop");
    lp.l = open_ok(name, LOOP_RATE, LOOP_BURST, LOOP_CAP);
    lp.j = (jobctx){ a, 0, 0.001 };
    lp.rc = -1;
    atomic_store(&lp.stop, 0);
    fk = (forker){ a, name };
    pid = spawn(forker_run, &fk);
    bg_start(loop_parent_run, &lp, &lp.stop);
    reap_ok(pid);
    /* The parent still gets slots and bookings once the killing stops. */
    t = tu_now_ns();
    n = atomic_load(&a->n);
    while (atomic_load(&a->n) < n + 20) {
        ck_assert_msg(tu_since(t) < 2.0, "the parent is stuck");
        tu_sleep(0.001);
    }
    atomic_store(&lp.stop, 1);
    bg_join();
    ck_assert_int_eq(lp.rc, 0);

    /* Every job held a slot from its start to its end (or to its process's
     * death, of which killed_at is a lower bound): at no moment were more
     * than LOOP_CAP of them running.  Sweep the starts (+1) and ends (-1)
     * in time order; at equal times the end comes first. */
    n = atomic_load(&a->n);
    ck_assert_uint_lt(n, MAX_RECS);
    for (size_t i = 0; i < n; i++) {
        uint64_t s = atomic_load(&a->r[i].start), e = atomic_load(&a->r[i].end);
        int who = atomic_load(&a->r[i].who);

        if (!s)
            continue;
        if (!e)
            e = who ? atomic_load(&a->killed_at[who]) : UINT64_MAX >> 1;
        if (e <= s)
            continue; /* started as its process was being killed */
        if (!who)
            parent_jobs++;
        ev[k++] = (s << 1) | 1;
        ev[k++] = e << 1;
    }
    qsort(ev, k, sizeof *ev, cmp_u64);
    for (size_t i = 0; i < k; i++) {
        run += (ev[i] & 1) ? 1 : -1;
        ck_assert_msg(run <= LOOP_CAP, "%lld jobs running at once", (long long)run);
    }
    ck_assert_uint_gt(parent_jobs, 20);
    destroy_ok(lp.l);
    aiometer_limiter_unlink(name);
    area_free(a);
}
END_TEST

/* ---- the schedule outlives processes -------------------------------------------- */

typedef struct restart_child {
    area *a;
    const char *name;
    int who;
    size_t jobs;
} restart_child;

static void restart_run(void *arg)
{
    restart_child *rc = arg;
    jobctx j = { rc->a, rc->who, 0 };
    aiometer_limiter *l;
    aiometer_limiter_options lo = { .max_per_second = 10, .max_burst = 1, .max_at_once = 0 };

    CHILD_CHECK(aiometer_limiter_open(&l, rc->name, &lo) == 0);
    CHILD_CHECK(run_recs(l, &j, rc->jobs, 1, 0) == 0);
    CHILD_CHECK(aiometer_limiter_destroy(l) == 0);
}

/* _i 1 (TCase timing): and not much later. */
START_TEST(t_restart)
{
    char name[64];
    area *a = area_new();
    restart_child first, second;
    uint64_t s0, s10, *s;
    size_t n;

    name_of(name, sizeof name, "restart");
    first = (restart_child){ a, name, 1, 10 };
    reap_ok(spawn(restart_run, &first));
    second = (restart_child){ a, name, 2, 1 };
    reap_ok(spawn(restart_run, &second));
    s = sorted_starts(a, &n);
    ck_assert_int_eq(n, 11);
    s0 = s[0];
    s10 = s[10];
    /* 10 starts at 10/s leave the schedule at s0 + 1 s; the second
     * process's first start may not come sooner. */
    ck_assert_int_eq(atomic_load(&a->r[10].who), 2);
    ck_assert_msg((double)(s10 - s0) / 1e9 >= 1.0 - EPS, "second run started after %.4f s",
                  (double)(s10 - s0) / 1e9);
    if (_i)
        ck_assert_msg((double)(s10 - s0) / 1e9 < 1.0 + 0.3, "second run started after %.4f s",
                      (double)(s10 - s0) / 1e9);
    aiometer_limiter_unlink(name);
    area_free(a);
}
END_TEST

/* Two exec'd programs (tests/host_helper), not forks of this one, share a
 * name: their starts together obey one rate.  HOST_HELPER is the helper's
 * absolute path in the build tree (a libtool wrapper script in a shared
 * build), which is where it is in every layout: in-tree, out-of-tree and
 * distcheck's, whose source tree is read-only. */
typedef struct exec_child {
    int fds[2];
    const char *name;
} exec_child;

static void exec_child_run(void *arg)
{
    exec_child *ec = arg;

    dup2(ec->fds[1], 1);
    close(ec->fds[0]);
    execl(HOST_HELPER, HOST_HELPER, ec->name, "20", "10", (char *)NULL);
    fprintf(stderr, "exec %s: %s\n", HOST_HELPER, strerror(errno));
    _exit(127);
}

START_TEST(t_exec_share)
{
    char name[64], line[64];
    uint64_t st[64];
    size_t n = 0;
    exec_child ec;
    pid_t pid[2];
    FILE *f;

    /* Said here rather than as a child's exit status 127. */
    ck_assert_msg(access(HOST_HELPER, X_OK) == 0,
                  "%s: %s (building tests/check_aiometer builds it)", HOST_HELPER,
                  strerror(errno));
    name_of(name, sizeof name, "exec");
    ck_assert_int_eq(pipe(ec.fds), 0);
    ec.name = name;
    for (int i = 0; i < 2; i++)
        pid[i] = spawn(exec_child_run, &ec);
    close(ec.fds[1]);
    f = fdopen(ec.fds[0], "r");
    ck_assert_ptr_nonnull(f);
    while (n < 64 && fgets(line, sizeof line, f))
        st[n++] = strtoull(line, NULL, 10);
    fclose(f);
    reap_ok(pid[0]);
    reap_ok(pid[1]);
    ck_assert_int_eq(n, 20);
    qsort(st, n, sizeof *st, cmp_u64);
    /* 20/s, burst 1: the i-th start is at least i / 20 s after the first. */
    for (size_t i = 1; i < n; i++)
        ck_assert_msg((double)(st[i] - st[0]) / 1e9 >= (double)i / 20 - EPS,
                      "start %zu after %.4f s", i, (double)(st[i] - st[0]) / 1e9);
    aiometer_limiter_unlink(name);
}
END_TEST

static size_t started_within(aiometer_limiter *l, size_t jobs, double timeout, int *rc)
{
    area *a = area_new();
    jobctx j = { a, 0, 0 };
    size_t n;

    *rc = run_recs(l, &j, jobs, jobs, timeout);
    n = atomic_load(&a->n);
    area_free(a);
    return n;
}

START_TEST(t_unlink_fresh)
{
    char name[64];
    aiometer_limiter *old, *fresh;
    int rc;

    name_of(name, sizeof name, "unlink");
    old = open_ok(name, 0.01, 1, 0);
    ck_assert_int_eq(started_within(old, 1, 0, &rc), 1);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(aiometer_limiter_unlink(name), 0);
    /* The old handle keeps the old schedule: the next start is 100 s away. */
    ck_assert_int_eq(started_within(old, 1, 0.2, &rc), 0);
    ck_assert_int_eq(rc, ETIMEDOUT);
    /* A new open is a new budget: a start now, not in 100 s (the 5 s
     * allow for valgrind). */
    fresh = open_ok(name, 0.01, 1, 0);
    ck_assert_int_eq(started_within(fresh, 1, 5.0, &rc), 1);
    ck_assert_int_eq(rc, 0);
    destroy_ok(old);
    destroy_ok(fresh);
    ck_assert_int_eq(aiometer_limiter_unlink(name), 0);
    ck_assert_int_eq(aiometer_limiter_unlink(name), ENOENT);
}
END_TEST

/* Read a file's first `size` bytes; 0 or -1. */
static int read_file(const char *path, void *buf, size_t size)
{
    int fd = open(path, O_RDONLY);
    ssize_t n = fd < 0 ? -1 : pread(fd, buf, size, 0);

    if (fd >= 0)
        close(fd);
    return n == (ssize_t)size ? 0 : -1;
}

static void write_at(const char *path, off_t off, const void *buf, size_t size)
{
    int fd = open(path, O_WRONLY);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, buf, size, off), (ssize_t)size);
    close(fd);
}

/* A state from another boot: its schedule and its slot owners mean nothing
 * now.  The test edits the boot id in the header (found as text) and puts
 * a live owner's token (pid 1: pid in the low 22 bits, start time above)
 * in the slot table, which starts at byte 4096. */
START_TEST(t_new_boot)
{
    char name[64], path[128], hdr[4096], boot[37] = { 0 }, stat[1024] = { 0 }, *p;
    aiometer_limiter *l, *again;
    unsigned long long start1;
    uint64_t token;
    int rc, fd;

    if (read_file("/proc/sys/kernel/random/boot_id", boot, 36) != 0)
        return; /* no boot id here: nothing to tell boots apart by */
    fd = open("/proc/1/stat", O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_gt(read(fd, stat, sizeof stat - 1), 0);
    close(fd);
    p = strrchr(stat, ')');
    ck_assert_ptr_nonnull(p);
    for (int i = 2; i < 22; i++)
        p = strchr(p + 1, ' ');
    start1 = strtoull(p + 1, NULL, 10);
    token = ((uint64_t)start1 << 22) | 1;

    name_of(name, sizeof name, "boot");
    shm_file(path, sizeof path, name);
    l = open_ok(name, 0.01, 1, 1);
    ck_assert_int_eq(started_within(l, 1, 0, &rc), 1); /* the next start: in 100 s */
    write_at(path, 4096, &token, sizeof token);         /* the slot: held by init */
    again = open_ok(name, 0.01, 1, 1);
    ck_assert_int_eq(started_within(again, 1, 0.2, &rc), 0);
    ck_assert_int_eq(rc, ETIMEDOUT);
    destroy_ok(again);

    ck_assert_int_eq(read_file(path, hdr, sizeof hdr), 0);
    p = memmem(hdr, sizeof hdr, boot, 36);
    ck_assert_ptr_nonnull(p);
    p[0] = p[0] == '0' ? '1' : '0';
    write_at(path, p - hdr, p, 1);
    /* A start now, not in 100 s (the 5 s allow for valgrind). */
    again = open_ok(name, 0.01, 1, 1);
    ck_assert_int_eq(started_within(again, 1, 5.0, &rc), 1);
    ck_assert_int_eq(rc, 0);
    destroy_ok(again);
    destroy_ok(l);
    aiometer_limiter_unlink(name);
}
END_TEST

/* Rates so small that max(TAT, now) + T would pass 2^64 after a few
 * bookings: the schedule saturates and stays shut, in this process and in
 * any other that opens the name. */
typedef struct tiny_child {
    const char *name;
} tiny_child;

static void tiny_child_run(void *arg)
{
    tiny_child *tc = arg;
    aiometer_limiter *l;
    aiometer_limiter_options lo = { .max_per_second = 1000, .max_burst = 1, .max_at_once = 0 };
    int rc;

    CHILD_CHECK(aiometer_limiter_open(&l, tc->name, &lo) == 0);
    CHILD_CHECK(started_within(l, 2, 0.2, &rc) == 0);
    CHILD_CHECK(rc == ETIMEDOUT);
    CHILD_CHECK(aiometer_limiter_destroy(l) == 0);
}

START_TEST(t_tiny_rates)
{
    const double rates[] = { 1e-300, 5e-324, DBL_MIN };
    char name[64];
    aiometer_limiter *l;
    tiny_child tc;
    int rc;

    name_of(name, sizeof name, "tiny");
    for (int round = 0; round < 2; round++) {
        l = open_ok(name, rates[_i], 1, 0);
        /* A fresh schedule starts one job, whenever it gets to (no
         * timeout: how soon depends on the machine's speed)... */
        if (round == 0) {
            ck_assert_int_eq(started_within(l, 1, 0, &rc), 1);
            ck_assert_int_eq(rc, 0);
        }
        /* ...then no more: 12 bookings at once, of which the fifth would
         * start with a wrapping sum. */
        ck_assert_int_eq(started_within(l, 12, 0.3, &rc), 0);
        ck_assert_int_eq(rc, ETIMEDOUT);
        destroy_ok(l);
    }
    tc.name = name;
    reap_ok(spawn(tiny_child_run, &tc));
    ck_assert_int_eq(aiometer_limiter_unlink(name), 0);
}
END_TEST

/* ---- errors -------------------------------------------------------------------------- */

static int try_open(const char *name, double rate, size_t burst, size_t cap)
{
    aiometer_limiter_options lo = { .max_per_second = rate, .max_burst = burst, .max_at_once = cap };
    aiometer_limiter *l = NULL;
    int err = aiometer_limiter_open(&l, name, &lo);

    if (!err)
        aiometer_limiter_destroy(l);
    return err;
}

START_TEST(t_bad_names_and_values)
{
    char name[64], longest[202];
    const char *bad[] = { "", "a/b", "a b", "x\xc3\xa4", "/x", "a\n", "*" };
    aiometer_limiter_options lo = { .max_per_second = 10, .max_burst = 1, .max_at_once = 0 };
    aiometer_limiter *l = NULL;

    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_int_eq(try_open(bad[i], 10, 1, 0), EINVAL);
        ck_assert_int_eq(aiometer_limiter_unlink(bad[i]), EINVAL);
    }
    memset(longest, 'a', 201);
    longest[201] = '\0';
    ck_assert_int_eq(try_open(longest, 10, 1, 0), EINVAL);
    longest[200] = '\0';
    snprintf(longest, 200, "chk%ld.%ld.", runner_pid, (long)getpid());
    longest[strlen(longest)] = 'a';
    ck_assert_int_eq(strlen(longest), 200);
    ck_assert_int_eq(try_open(longest, 10, 1, 0), 0);
    ck_assert_int_eq(aiometer_limiter_unlink(longest), 0);
    ck_assert_int_eq(aiometer_limiter_unlink(NULL), EINVAL);

    name_of(name, sizeof name, "vals");
    ck_assert_int_eq(aiometer_limiter_open(NULL, name, &lo), EINVAL);
    ck_assert_int_eq(aiometer_limiter_open(&l, name, NULL), EINVAL);
    ck_assert_int_eq(try_open(name, 0, 0, 0), EINVAL);        /* limits nothing */
    ck_assert_int_eq(try_open(name, INFINITY, 0, 0), EINVAL); /* likewise */
    ck_assert_int_eq(try_open(name, NAN, 0, 1), EINVAL);
    ck_assert_int_eq(try_open(name, -1, 0, 1), EINVAL);
    ck_assert_int_eq(try_open(name, 2e9, 0, 1), EINVAL);
    ck_assert_int_eq(try_open(name, 0, 0, 65536), EINVAL);
    ck_assert_int_eq(aiometer_limiter_unlink(name), ENOENT); /* none was made */

    /* The largest cap, and one past 32767, work. */
    ck_assert_int_eq(try_open(name, 0, 0, 65535), 0);
    ck_assert_int_eq(aiometer_limiter_unlink(name), 0);
    {
        area *a = area_new();
        jobctx j = { a, 0, 0.05 };

        l = open_ok(name, 0, 0, 40000);
        ck_assert_int_eq(run_recs(l, &j, 64, 64, 0), 0);
        ck_assert_int_eq(atomic_load(&a->n), 64);
        ck_assert_int_ge(atomic_load(&a->peak), 2);
        destroy_ok(l);
        area_free(a);
    }
    /* The cap is the creator's: the same value or 0 uses it, another is EEXIST. */
    ck_assert_int_eq(try_open(name, 0, 0, 40000), 0);
    ck_assert_int_eq(try_open(name, 5, 0, 0), 0);
    ck_assert_int_eq(try_open(name, 0, 0, 4), EEXIST);
    ck_assert_int_eq(aiometer_limiter_unlink(name), 0);
    ck_assert_int_eq(try_open(name, 0, 0, 4), 0);
    ck_assert_int_eq(aiometer_limiter_unlink(name), 0);
}
END_TEST

/* Files at a limiter's name that are not limiters: EPROTO, left as they were. */
START_TEST(t_not_a_limiter)
{
    char name[64], path[128], real[128], *copy, *after;
    struct stat st;
    size_t size;
    int fd;

    name_of(name, sizeof name, "proto");
    shm_file(path, sizeof path, name);

    /* Wrong size. */
    fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "0123456789", 10), 10);
    close(fd);
    ck_assert_int_eq(try_open(name, 10, 1, 0), EPROTO);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_size, 10);
    ck_assert_int_eq(aiometer_limiter_unlink(name), 0);

    /* A real state, copied with its magic, then its version, spoilt. */
    {
        char rname[64];
        name_of(rname, sizeof rname, "real");
        ck_assert_int_eq(try_open(rname, 10, 1, 3), 0);
        shm_file(real, sizeof real, rname);
        ck_assert_int_eq(stat(real, &st), 0);
        size = (size_t)st.st_size;
        copy = mem_new(size);
        after = mem_new(size);
        ck_assert_int_eq(read_file(real, copy, size), 0);
        ck_assert_int_eq(aiometer_limiter_unlink(rname), 0);
    }
    for (int spoil = 0; spoil < 2; spoil++) {
        copy[spoil ? 8 : 0] ^= 0x55; /* byte 0: magic; byte 8: version */
        fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0600);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, copy, size), (ssize_t)size);
        close(fd);
        ck_assert_int_eq(try_open(name, 10, 1, 0), EPROTO);
        ck_assert_int_eq(read_file(path, after, size), 0);
        ck_assert(memcmp(copy, after, size) == 0);
        ck_assert_int_eq(aiometer_limiter_unlink(name), 0);
        copy[spoil ? 8 : 0] ^= 0x55;
    }
    mem_free(copy);
    mem_free(after);

    /* A symlink is not followed. */
    ck_assert_int_eq(symlink("/dev/null", path), 0);
    ck_assert_int_eq(try_open(name, 10, 1, 0), ELOOP);
    ck_assert_int_eq(aiometer_limiter_unlink(name), EACCES);
    ck_assert_int_eq(unlink(path), 0);
}
END_TEST

/* Ownership: the state's mode, another user's state, and group access.
 * The tests run as root; a forked child becomes 'nobody'. */
typedef struct other_user {
    const char *mine, *theirs, *group;
    uid_t uid;
    gid_t gid;
} other_user;

static void other_user_run(void *arg)
{
    other_user *ou = arg;

    /* Group root, so that a 0660 state of root's is open to us. */
    CHILD_CHECK(setgroups(0, NULL) == 0 && setgid(0) == 0 && setuid(ou->uid) == 0);
    CHILD_CHECK(try_open(ou->mine, 10, 1, 0) == EACCES);
    CHILD_CHECK(aiometer_limiter_unlink(ou->mine) == EACCES);
    CHILD_CHECK(try_open(ou->group, 10, 1, 0) == 0);
    CHILD_CHECK(try_open(ou->theirs, 10, 1, 0) == 0); /* creates it, as nobody */
}

START_TEST(t_ownership)
{
    char mine[64], theirs[64], group[64], path[128];
    struct passwd *pw = getpwnam("nobody");
    aiometer_limiter_options lo = { .max_per_second = 10, .max_burst = 1, .group_access = 1 };
    aiometer_limiter *l;
    other_user ou;
    struct stat st;
    mode_t old = umask(077);

    name_of(mine, sizeof mine, "mine");
    name_of(theirs, sizeof theirs, "theirs");
    name_of(group, sizeof group, "group");
    ck_assert_int_eq(try_open(mine, 10, 1, 0), 0);
    shm_file(path, sizeof path, mine);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    ck_assert_int_eq(aiometer_limiter_open(&l, group, &lo), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
    shm_file(path, sizeof path, group);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0660); /* the umask took nothing away */
    umask(old);

    if (geteuid() != 0 || !pw) {
        aiometer_limiter_unlink(mine);
        aiometer_limiter_unlink(group);
        return; /* the cross-user half needs root */
    }
    ou = (other_user){ mine, theirs, group, pw->pw_uid, pw->pw_gid };
    reap_ok(spawn(other_user_run, &ou));
    /* nobody's state: root may not use it or remove it through the library. */
    ck_assert_int_eq(try_open(theirs, 10, 1, 0), EACCES);
    ck_assert_int_eq(aiometer_limiter_unlink(theirs), EACCES);
    shm_file(path, sizeof path, theirs);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_uid, pw->pw_uid);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(aiometer_limiter_unlink(mine), 0);
    ck_assert_int_eq(aiometer_limiter_unlink(group), 0);
}
END_TEST

/* A TCase with this file's fixtures: the unchecked one removes a failed
 * forked test's names after the TCase, the checked one what a failed
 * test left (see `left`). */
static TCase *host_tcase(const char *name, double timeout)
{
    TCase *tc = tcase_create(name);

    tcase_add_unchecked_fixture(tc, runner_setup, runner_teardown);
    tcase_add_checked_fixture(tc, NULL, left_cleanup);
    tcase_set_timeout(tc, timeout);
    return tc;
}

Suite *host_suite(void)
{
    Suite *s = suite_create("host");
    TCase *tc;

    /* Loop index 0: without the bounds that need a fast machine. */
    tc = host_tcase("core", 30);
    tcase_add_loop_test(tc, t_rate_4x4, 0, 1);
    tcase_add_test(tc, t_cap6);
    tcase_add_test(tc, t_cap1);
    tcase_add_loop_test(tc, t_restart, 0, 1);
    tcase_add_test(tc, t_exec_share);
    tcase_add_test(tc, t_unlink_fresh);
    tcase_add_test(tc, t_new_boot);
    tcase_add_loop_test(tc, t_tiny_rates, 0, 3);
    suite_add_tcase(s, tc);

    tc = host_tcase("crash", 60);
    tcase_add_loop_test(tc, t_sigkill_holder, 0, 1);
    tcase_add_loop_test(tc, t_wait_ends_at_deadline, 0, 1);
    tcase_add_test(tc, t_kill_loop);
    suite_add_tcase(s, tc);

    tc = host_tcase("errors", 30);
    tcase_add_test(tc, t_bad_names_and_values);
    tcase_add_test(tc, t_not_a_limiter);
    tcase_add_test(tc, t_ownership);
    suite_add_tcase(s, tc);

    /* Loop index 1: the same tests with their upper bounds on time, which
     * hold on a loaded machine but not under valgrind. */
    tc = host_tcase("timing", 60);
    tcase_set_tags(tc, "timing");
    tcase_add_loop_test(tc, t_rate_4x4, 1, 2);
    tcase_add_loop_test(tc, t_restart, 1, 2);
    tcase_add_loop_test(tc, t_sigkill_holder, 1, 2);
    tcase_add_loop_test(tc, t_wait_ends_at_deadline, 1, 2);
    suite_add_tcase(s, tc);
    return s;
}
