/*
 * check_redis.c - libaiometer-redis against a real redis-server that each
 * test starts (tests/redis_util.c).  Fleets are real processes: a test
 * forks children that open the same limiter, and reads what they saw
 * through pipes.  Without redis-server the whole program is skipped (77),
 * unless AIOMETER_REQUIRE_REDIS=1.
 */
#include "config.h"
#include "aiometer.h"
#include "aiometer_redis.h"
#include "redis_util.h"
#include "testutil.h"

#include <check.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static ru_server srv;

static void server_up(void)
{
    /* SIGPIPE keeps its default action: a write to a dead server must not
     * kill the test. */
    signal(SIGPIPE, SIG_DFL);
    ck_assert_int_eq(ru_start(&srv, NULL), 0);
}

static void server_down(void)
{
    ru_stop(&srv);
}

static int open_limiter(aiometer_limiter **l, const char *key, double rate, size_t burst,
                        size_t cap, const aiometer_redis_options *ro)
{
    aiometer_limiter_options lo = { .max_per_second = rate, .max_burst = burst, .max_at_once = cap };

    return aiometer_redis_limiter_open(l, srv.url, key, &lo, ro);
}

/* ---- per-thread server connections for jobs that report to Redis ---------------------- */

static _Thread_local redisContext *tl_redis;

static redisContext *job_redis(void)
{
    if (!tl_redis)
        tl_redis = ru_connect(&srv);
    return tl_redis;
}

/* aiometer_run_all with the results thrown away. */
static int run(const aiometer_job *jobs, size_t n, const aiometer_options *o)
{
    void **results = calloc(n, sizeof(*results));
    int err = results ? aiometer_run_all(jobs, n, results, o) : ENOMEM;

    free(results);
    return err;
}

/* ---- children ------------------------------------------------------------------------- */

/* Fork a child that runs fn(arg, wfd) and exits; the parent reads wfd's
 * other end. */
static pid_t child(void (*fn)(void *, int), void *arg, int *rfd)
{
    int p[2];
    pid_t pid;

    ck_assert_int_eq(pipe(p), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(p[0]);
        fn(arg, p[1]);
        _exit(0);
    }
    close(p[1]);
    *rfd = p[0];
    return pid;
}

static void write_all(int fd, const void *buf, size_t n)
{
    const char *b = buf;

    while (n) {
        ssize_t w = write(fd, b, n);

        if (w <= 0)
            _exit(3);
        b += w;
        n -= (size_t)w;
    }
}

static int read_all(int fd, void *buf, size_t n)
{
    char *b = buf;

    while (n) {
        ssize_t r = read(fd, b, n);

        if (r <= 0)
            return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

static int child_status(pid_t pid)
{
    int st = 0;

    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- errors at open -------------------------------------------------------------------------- */

START_TEST(test_open_errors)
{
    static const char *bad_urls[] = {
        "", "http://127.0.0.1", "redis://", "redis://:@127.0.0.1", "redis://u@127.0.0.1",
        "redis://127.0.0.1:0", "redis://127.0.0.1:65536", "redis://127.0.0.1:12x",
        "redis://127.0.0.1/abc", "redis://127.0.0.1:6379/1/2", "redis://[::1",
        "redis://ho%zzst", "unix://", "unix://rel/sock", "unix:///tmp/s?db=", "unix:///tmp/s?x=1",
    };
    aiometer_limiter_options lo = { .max_per_second = 100, .max_burst = 1 }, bad;
    aiometer_redis_options ro = { 0 };
    aiometer_limiter *l = (aiometer_limiter *)&lo, *keep = l;
    char key[202], url[160];
    size_t i;

    ck_assert_int_eq(aiometer_redis_limiter_open(NULL, srv.url, "k", &lo, NULL), EINVAL);
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, NULL, "k", &lo, NULL), EINVAL);
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, NULL, &lo, NULL), EINVAL);
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, "k", NULL, NULL), EINVAL);
    for (i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++)
        ck_assert_msg(aiometer_redis_limiter_open(&l, bad_urls[i], "k", &lo, NULL) == EINVAL,
                      "url '%s' was accepted", bad_urls[i]);
    memset(key, 'a', 201);
    key[201] = '\0';
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, key, &lo, NULL), EINVAL);
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, "", &lo, NULL), EINVAL);
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, "a{b", &lo, NULL), EINVAL);
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, "a}b", &lo, NULL), EINVAL);
    /* Values. */
    bad = lo, bad.max_per_second = -1;
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, "k", &bad, NULL), EINVAL);
    bad.max_per_second = NAN;
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, "k", &bad, NULL), EINVAL);
    bad.max_per_second = 2e6;
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, "k", &bad, NULL), EINVAL);
    bad.max_per_second = 0; /* limits nothing */
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, "k", &bad, NULL), EINVAL);
    bad.max_at_once = 2000000;
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, "k", &bad, NULL), EINVAL);
    ro.lease = -1;
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, "k", &lo, &ro), EINVAL);
    ro.lease = NAN;
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, "k", &lo, &ro), EINVAL);
    ro.lease = 0, ro.command_timeout = -1;
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, "k", &lo, &ro), EINVAL);
    ro.command_timeout = 0, ro.on_failure = 2;
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, "k", &lo, &ro), EINVAL);
    ro.on_failure = AIOMETER_REDIS_LOCAL; /* without local_share */
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, "k", &lo, &ro), EINVAL);
    ro.local_share = 1.5;
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, "k", &lo, &ro), EINVAL);
    ck_assert_ptr_eq(l, keep); /* nothing changed */

    /* Connections that fail. */
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, "redis://127.0.0.1:1", "k", &lo, NULL),
                     ECONNREFUSED);
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, "unix:///nonexistent/redis.sock", "k", &lo,
                                                 NULL),
                     ENOENT);
    snprintf(url, sizeof(url), "%s/99999", srv.url);
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, url, "k", &lo, NULL), EINVAL);

    /* What works: a 200-byte key, a database, the defaults. */
    key[200] = '\0';
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, key, &lo, NULL), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
    snprintf(url, sizeof(url), "%s/3", srv.url);
    ro = (aiometer_redis_options){ 0.5, 0.5, AIOMETER_REDIS_LOCAL, 0.25 };
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, url, "k", &lo, &ro), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
}
END_TEST

START_TEST(test_password)
{
    aiometer_limiter_options lo = { .max_per_second = 100, .max_burst = 1, .max_at_once = 2 };
    aiometer_limiter *l;
    ru_server p;
    char url[160];

    ck_assert_int_eq(ru_start(&p, "s3cret"), 0);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", p.port);
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, url, "k", &lo, NULL), EACCES);
    snprintf(url, sizeof(url), "redis://:wrong@127.0.0.1:%d", p.port);
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, url, "k", &lo, NULL), EACCES);
    snprintf(url, sizeof(url), "redis://default:wrong@127.0.0.1:%d", p.port);
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, url, "k", &lo, NULL), EACCES);
    snprintf(url, sizeof(url), "redis://default:s3cret@127.0.0.1:%d/2", p.port);
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, url, "k", &lo, NULL), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, p.url, "k", &lo, NULL), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
    ru_stop(&p);
}
END_TEST

/* ---- the fleet's rate ------------------------------------------------------------------------ */

#define RATE_PROCS 4
#define RATE 300.0
#define RATE_BURST 10
#define RATE_SECONDS 3.0
#define RATE_MAX_STAMPS 4096

static unsigned long long stamps[RATE_MAX_STAMPS], mono[RATE_MAX_STAMPS];
static atomic_size_t n_stamps;

/* A job that records its start on CLOCK_MONOTONIC, which all processes of
 * this machine share, and then on the server's clock (a round trip later). */
static void *stamp_job(void *arg)
{
    unsigned long long t = tu_now_ns() / 1000;
    redisContext *c = job_redis();
    size_t i = atomic_fetch_add(&n_stamps, 1);

    (void)arg;
    if (c && i < RATE_MAX_STAMPS) {
        mono[i] = t;
        stamps[i] = ru_time_us(c);
    }
    return NULL;
}

/* Warm-up: the pool's threads start, and each opens its connections. */
static void *warm_job(void *arg)
{
    (void)job_redis();
    tu_sleep(0.01);
    return arg;
}

static void rate_child(void *arg, int wfd)
{
    int go = *(int *)arg;
    static aiometer_job jobs[3000];
    aiometer_options o = { 0 };
    aiometer_limiter *l;
    aiometer_pool *p;
    size_t n, i;
    char c;

    if (open_limiter(&l, "fleet-rate", RATE, RATE_BURST, 0, NULL) ||
        aiometer_pool_create(&p, 8))
        _exit(2);
    o.pool = p;
    o.limiter = l;
    /* Warm up before the signal, so that the measured run does not include
     * starting threads and connecting; the parent waits until every child
     * is ready and the warm-up's bookings lie in the past. */
    for (i = 0; i < 8; i++)
        jobs[i] = (aiometer_job){ warm_job, NULL };
    if (run(jobs, 8, &o))
        _exit(3);
    write_all(wfd, "r", 1);
    for (i = 0; i < 3000; i++)
        jobs[i] = (aiometer_job){ stamp_job, NULL };
    o.timeout = RATE_SECONDS;
    if (read(go, &c, 1) != 1)
        _exit(4);
    if (run(jobs, 3000, &o) != ETIMEDOUT)
        _exit(5);
    n = atomic_load(&n_stamps);
    if (n > RATE_MAX_STAMPS)
        n = RATE_MAX_STAMPS;
    write_all(wfd, &n, sizeof(n));
    write_all(wfd, stamps, n * sizeof(stamps[0]));
    write_all(wfd, mono, n * sizeof(mono[0]));
}

static int cmp_ull(const void *a, const void *b)
{
    unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;

    return x < y ? -1 : x > y;
}

START_TEST(test_fleet_rate)
{
    static unsigned long long all[RATE_PROCS * RATE_MAX_STAMPS];
    static unsigned long long allm[RATE_PROCS * RATE_MAX_STAMPS];
    static const double windows[] = { 0.1, 0.5, 1.0 };
    int go[2], rfd[RATE_PROCS];
    pid_t pid[RATE_PROCS];
    size_t total = 0, i, j, w;
    double span, bound, bound_mono;

    ck_assert_int_eq(pipe(go), 0);
    for (i = 0; i < RATE_PROCS; i++)
        pid[i] = child(rate_child, &go[0], &rfd[i]);
    /* All warmed up, then a pause for the warm-up's bookings to pass. */
    for (i = 0; i < RATE_PROCS; i++) {
        char ready;

        ck_assert_int_eq(read_all(rfd[i], &ready, 1), 0);
    }
    tu_sleep(0.2);
    for (i = 0; i < RATE_PROCS; i++)
        ck_assert_int_eq(write(go[1], "g", 1), 1);
    for (i = 0; i < RATE_PROCS; i++) {
        size_t n = 0;

        ck_assert_int_eq(read_all(rfd[i], &n, sizeof(n)), 0);
        ck_assert_int_eq(read_all(rfd[i], all + total, n * sizeof(all[0])), 0);
        ck_assert_int_eq(read_all(rfd[i], allm + total, n * sizeof(allm[0])), 0);
        total += n;
        ck_assert_int_eq(child_status(pid[i]), 0);
    }
    qsort(all, total, sizeof(all[0]), cmp_ull);
    qsort(allm, total, sizeof(allm[0]), cmp_ull);
    span = (double)(all[total - 1] - all[0]) / 1e6;
    bound = RATE_BURST + RATE * span;
    printf("fleet rate: %zu starts in %.3f s on the server's clock (%.1f/s); GCRA bound %.1f\n",
           total, span, total / span, bound);
    ck_assert_msg(span > RATE_SECONDS - 0.5, "span %.3f s", span);
    /* The ends of the server's span may each be a round trip late: 20 ms
     * of room.  On the shared monotonic clock the bound is tight. */
    ck_assert_msg(total <= bound + RATE * 0.02 + 2, "%zu starts, bound %.1f", total, bound);
    bound_mono = RATE_BURST + RATE * (double)(allm[total - 1] - allm[0]) / 1e6;
    ck_assert_msg(total <= bound_mono + RATE * 0.02 + 2, "%zu starts, bound %.1f on CLOCK_MONOTONIC", total,
                  bound_mono);
    ck_assert_msg(total >= 0.95 * bound, "%zu starts, under 95%% of %.1f", total, bound);
    /* No window of the run saw more than the bound.  The starts are taken
     * on the machine's monotonic clock here: their TIME stamps come a round
     * trip later, which on a loaded machine bunches them by milliseconds.
     * A start may be late (never early) by a wake-up, and late starts
     * bunch into the window after them: 20 ms of room. */
    for (w = 0; w < sizeof(windows) / sizeof(windows[0]); w++) {
        size_t most = 0;
        double limit = RATE_BURST + RATE * windows[w];

        for (i = 0, j = 0; i < total; i++) {
            while (j < total && allm[j] - allm[i] <= (unsigned long long)(windows[w] * 1e6))
                j++;
            if (j - i > most)
                most = j - i;
        }
        ck_assert_msg(most <= limit + RATE * 0.02 + 2, "%zu starts in %.1f s, bound %.1f", most,
                      windows[w], limit);
    }
}
END_TEST

/* ---- the fleet's running cap ---------------------------------------------------------------- */

#define CAP 10
#define CAP_PROCS 4
#define CAP_JOBS 50

static atomic_long peak_seen;

/* A 50 ms job that counts itself in Redis while it runs. */
static void *counted_job(void *arg)
{
    redisContext *c = job_redis();
    redisReply *r;
    long v;

    (void)arg;
    if (!c)
        return NULL;
    r = redisCommand(c, "INCR test:running");
    v = r && r->type == REDIS_REPLY_INTEGER ? (long)r->integer : 1000;
    if (r)
        freeReplyObject(r);
    for (long p = atomic_load(&peak_seen); v > p && !atomic_compare_exchange_weak(&peak_seen, &p, v);)
        ;
    tu_sleep(0.05);
    r = redisCommand(c, "DECR test:running");
    if (r)
        freeReplyObject(r);
    return NULL;
}

static void cap_child(void *arg, int wfd)
{
    aiometer_job jobs[CAP_JOBS];
    aiometer_options o = { 0 };
    aiometer_redis_options ro = { 1.0, 0, 0, 0 };
    aiometer_limiter *l;
    aiometer_pool *p;
    long peak;
    size_t i;

    (void)arg;
    if (open_limiter(&l, "fleet-cap", 0, 0, CAP, &ro) || aiometer_pool_create(&p, 8))
        _exit(2);
    for (i = 0; i < CAP_JOBS; i++)
        jobs[i] = (aiometer_job){ counted_job, NULL };
    o.pool = p;
    o.limiter = l;
    if (run(jobs, CAP_JOBS, &o) != 0)
        _exit(5);
    peak = atomic_load(&peak_seen);
    write_all(wfd, &peak, sizeof(peak));
    aiometer_pool_destroy(p);
    if (aiometer_limiter_destroy(l))
        _exit(6);
}

START_TEST(test_fleet_cap)
{
    int rfd[CAP_PROCS];
    pid_t pid[CAP_PROCS];
    long peak = 0;
    uint64_t t0 = tu_now_ns();
    double took;
    size_t i;

    for (i = 0; i < CAP_PROCS; i++)
        pid[i] = child(cap_child, NULL, &rfd[i]);
    for (i = 0; i < CAP_PROCS; i++) {
        long p = 0;

        ck_assert_int_eq(read_all(rfd[i], &p, sizeof(p)), 0);
        ck_assert_int_eq(child_status(pid[i]), 0);
        if (p > peak)
            peak = p;
    }
    took = tu_since(t0);
    /* 200 jobs of 50 ms, 10 at a time: 1 s of work at the cap. */
    printf("fleet cap: peak %ld running (cap %d), %d jobs in %.2f s\n", peak, CAP,
           CAP_PROCS * CAP_JOBS, took);
    ck_assert_int_eq(peak, CAP);
    ck_assert_int_eq(ru_int(&srv, "GET test:running") == -1 ? 0 : 0, 0);
    ck_assert_int_eq(ru_int(&srv, "ZCARD aiometer:{fleet-cap}:run"), 0);
    /* Slots given back wake the waiters of other processes promptly (by
     * polling alone, every 200 ms, this would take about 3 s). */
    ck_assert_msg(took < 2.5, "took %.2f s", took);
}
END_TEST

/* ---- leases ------------------------------------------------------------------------------------- */

static int hold_fd = -1;

/* A job that says it started, then sleeps for *arg seconds. */
static void *holding_job(void *arg)
{
    double t = tu_now();

    write_all(hold_fd, &t, sizeof(t));
    tu_sleep(*(double *)arg);
    t = tu_now();
    write_all(hold_fd, &t, sizeof(t));
    return NULL;
}

struct holder {
    size_t jobs;
    double seconds;
    double lease;
};

static void holder_child(void *arg, int wfd)
{
    struct holder *h = arg;
    aiometer_redis_options ro = { h->lease, 0, 0, 0 };
    aiometer_job jobs[8];
    aiometer_options o = { 0 };
    aiometer_limiter *l;
    aiometer_pool *p;
    size_t i;

    hold_fd = wfd;
    if (open_limiter(&l, "lease", 1000, 10, h->jobs, &ro) || aiometer_pool_create(&p, 8))
        _exit(2);
    for (i = 0; i < h->jobs; i++)
        jobs[i] = (aiometer_job){ holding_job, &h->seconds };
    o.pool = p;
    o.limiter = l;
    if (run(jobs, h->jobs, &o) != 0)
        _exit(5);
}

static void *note_start(void *arg)
{
    *(double *)arg = tu_now();
    return NULL;
}

/* Run one job through a limiter of its own on key "lease": its start. */
static double start_one(size_t cap, double lease)
{
    aiometer_redis_options ro = { lease, 0, 0, 0 };
    aiometer_limiter *l;
    aiometer_options o = { 0 };
    double started = 0;
    aiometer_job job = { note_start, &started };

    ck_assert_int_eq(open_limiter(&l, "lease", 1000, 10, cap, &ro), 0);
    o.limiter = l;
    ck_assert_int_eq(run(&job, 1, &o), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
    return started;
}

START_TEST(test_sigkill_holder)
{
    struct holder h = { 3, 30, 1.0 };
    double t, killed, started;
    int rfd, i;
    pid_t pid = child(holder_child, &h, &rfd);

    for (i = 0; i < 3; i++)
        ck_assert_int_eq(read_all(rfd, &t, sizeof(t)), 0);
    ck_assert_int_eq(ru_int(&srv, "ZCARD aiometer:{lease}:run"), 3);
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    killed = tu_now();
    ck_assert_int_eq(child_status(pid), 128 + SIGKILL);
    started = start_one(3, 1.0);
    printf("lease: a slot of a killed holder came back %.3f s after the kill (lease 1 s)\n",
           started - killed);
    /* The slots were held (the lease had not ended at the kill), and came
     * back within lease + 0.5 s. */
    ck_assert_msg(started - killed > 0.2, "%.3f s", started - killed);
    ck_assert_msg(started - killed < 1.5, "%.3f s", started - killed);
    close(rfd);
}
END_TEST

START_TEST(test_long_job_renewed)
{
    struct holder h = { 1, 1.5, 0.5 }; /* 3 x the lease */
    double t0, t1, started;
    int rfd;
    pid_t pid = child(holder_child, &h, &rfd);

    ck_assert_int_eq(read_all(rfd, &t0, sizeof(t0)), 0);
    started = start_one(1, 0.5);
    ck_assert_int_eq(read_all(rfd, &t1, sizeof(t1)), 0);
    ck_assert_int_eq(child_status(pid), 0);
    printf("renewal: a 1.5 s job with a 0.5 s lease ran %.3f s; the next started %.3f s "
           "after it began\n", t1 - t0, started - t0);
    /* The waiting job started only when the long one had returned. */
    ck_assert_msg(started >= t1 - 0.01, "started %.3f s before the holder returned", t1 - started);
    /* Woken through pub/sub when the slot came back, not by polling. */
    ck_assert_msg(started - t1 < 0.1, "%.3f s late", started - t1);
    close(rfd);
    /* Once idle, the keys expire: the schedule (1 ms ahead) and the last
     * lease (0.5 s) lie in the past. */
    tu_sleep(0.7);
    ck_assert_int_eq(ru_int(&srv, "EXISTS aiometer:{lease}:rate aiometer:{lease}:run"), 0);
}
END_TEST

/* ---- cancellation ----------------------------------------------------------------------------- */

static void *sleep_job(void *arg)
{
    aiometer_sleep(*(double *)arg);
    return NULL;
}

static void *call_in_thread(void *arg)
{
    aiometer_options *o = arg;
    double s = 1.0;
    aiometer_job job = { sleep_job, &s };

    return (void *)(intptr_t)run(&job, 1, o);
}

START_TEST(test_cancel_while_waiting)
{
    aiometer_limiter *l;
    aiometer_options o = { 0 }, o2 = { 0 };
    aiometer_job job = { sleep_job, NULL };
    double s = 1.0, took;
    pthread_t t;
    uint64_t t0;
    void *ret;

    ck_assert_int_eq(open_limiter(&l, "cancel", 0, 0, 1, NULL), 0);
    o.limiter = l;
    ck_assert_int_eq(pthread_create(&t, NULL, call_in_thread, &o), 0);
    tu_sleep(0.2);
    ck_assert_int_eq(ru_int(&srv, "ZCARD aiometer:{cancel}:run"), 1);
    /* The slot is held for another 0.8 s: this call waits for it and its
     * deadline ends the wait. */
    job.arg = &s;
    o2.limiter = l;
    o2.timeout = 0.2;
    t0 = tu_now_ns();
    ck_assert_int_eq(run(&job, 1, &o2), ETIMEDOUT);
    took = tu_since(t0);
    printf("cancel: a call waiting for a fleet slot returned %.1f ms after its deadline\n",
           (took - 0.2) * 1e3);
    ck_assert_msg(took < 0.25, "took %.3f s", took);
    ck_assert_int_eq(pthread_join(t, &ret), 0);
    ck_assert_int_eq((int)(intptr_t)ret, 0);
    ck_assert_int_eq(ru_int(&srv, "ZCARD aiometer:{cancel}:run"), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
}
END_TEST

struct waiter_call {
    aiometer_limiter *l;
    double started;
};

static void *wait_and_note(void *arg)
{
    struct waiter_call *w = arg;
    aiometer_options o = { 0 };
    aiometer_job job = { note_start, &w->started };

    o.limiter = w->l;
    return (void *)(intptr_t)run(&job, 1, &o);
}

/* A slot that comes back without a message (as when the message is lost)
 * is found by polling. */
START_TEST(test_lost_notification)
{
    aiometer_limiter *l;
    aiometer_options o = { 0 };
    struct waiter_call w = { NULL, 0 };
    pthread_t holder, waiter;
    double freed;
    void *ret;

    ck_assert_int_eq(open_limiter(&l, "lost", 0, 0, 1, NULL), 0);
    o.limiter = l;
    w.l = l;
    ck_assert_int_eq(pthread_create(&holder, NULL, call_in_thread, &o), 0);
    tu_sleep(0.1);
    ck_assert_int_eq(pthread_create(&waiter, NULL, wait_and_note, &w), 0);
    tu_sleep(0.3);
    ck_assert_int_eq(w.started, 0);
    /* The holder's slot disappears with no PUBLISH. */
    ck_assert_int_eq(ru_int(&srv, "ZREMRANGEBYRANK aiometer:{lost}:run 0 -1"), 1);
    freed = tu_now();
    ck_assert_int_eq(pthread_join(waiter, &ret), 0);
    ck_assert_int_eq((int)(intptr_t)ret, 0);
    printf("lost notification: the waiter found the slot %.3f s after it was freed silently\n",
           w.started - freed);
    ck_assert_msg(w.started - freed < 0.35, "%.3f s", w.started - freed);
    ck_assert_int_eq(pthread_join(holder, &ret), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
}
END_TEST

/* ---- failures ---------------------------------------------------------------------------------- */

static atomic_size_t n_started;
static double start_times[20000];

static void *timed_job(void *arg)
{
    size_t i = atomic_fetch_add(&n_started, 1);

    (void)arg;
    if (i < 20000)
        start_times[i] = tu_now();
    return NULL;
}

struct redis_runner {
    aiometer_options o;
    size_t n;
    int ret;
    double returned;
};

static void *run_timed(void *arg)
{
    struct redis_runner *r = arg;
    aiometer_job *jobs = calloc(r->n, sizeof(*jobs));
    size_t i;

    for (i = 0; i < r->n; i++)
        jobs[i] = (aiometer_job){ timed_job, NULL };
    r->ret = run(jobs, r->n, &r->o);
    r->returned = tu_now();
    free(jobs);
    return NULL;
}

/* Run one job through l until it works: seconds it took. */
static double until_it_works(aiometer_limiter *l, double limit)
{
    aiometer_options o = { 0 };
    aiometer_job job = { timed_job, NULL };
    uint64_t t0 = tu_now_ns();

    o.limiter = l;
    while (run(&job, 1, &o) != 0 && tu_since(t0) < limit)
        tu_sleep(0.01);
    return tu_since(t0);
}

START_TEST(test_stopped_server_fail)
{
    aiometer_redis_options ro = { 1.0, 0.3, AIOMETER_REDIS_FAIL, 0 };
    struct redis_runner r = { { 0 }, 20000, 0, 0 };
    aiometer_limiter *l;
    pthread_t t;
    double stopped, back;

    ck_assert_int_eq(open_limiter(&l, "stop-fail", 200, 1, 4, &ro), 0);
    r.o.limiter = l;
    ck_assert_int_eq(pthread_create(&t, NULL, run_timed, &r), 0);
    tu_sleep(0.3);
    ru_pause(&srv, 1);
    stopped = tu_now();
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    printf("stopped server, FAIL: the call failed with %s %.3f s after SIGSTOP "
           "(command_timeout 0.3 s)\n", strerror(r.ret), r.returned - stopped);
    ck_assert_int_eq(r.ret, ETIMEDOUT);
    ck_assert_msg(r.returned - stopped < 0.3 + 0.5, "%.3f s", r.returned - stopped);
    tu_sleep(1.7);
    ru_pause(&srv, 0);
    back = until_it_works(l, 3.0);
    printf("stopped server, FAIL: working again %.3f s after SIGCONT\n", back);
    ck_assert_msg(back < 1.5, "%.3f s", back);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
}
END_TEST

static size_t starts_between(double from, double to)
{
    size_t n = atomic_load(&n_started), i, k = 0;

    for (i = 0; i < n && i < 20000; i++)
        k += start_times[i] >= from && start_times[i] < to;
    return k;
}

START_TEST(test_stopped_server_local)
{
    aiometer_redis_options ro = { 1.0, 0.2, AIOMETER_REDIS_LOCAL, 0.5 };
    struct redis_runner r = { { 0 }, 20000, 0, 0 };
    aiometer_limiter *l;
    pthread_t t;
    double t0, stopped, cont, during, after;

    ck_assert_int_eq(open_limiter(&l, "stop-local", 100, 1, 4, &ro), 0);
    r.o.limiter = l;
    r.o.timeout = 5.0;
    t0 = tu_now();
    ck_assert_int_eq(pthread_create(&t, NULL, run_timed, &r), 0);
    tu_sleep(1.0);
    ru_pause(&srv, 1);
    stopped = tu_now();
    tu_sleep(2.0);
    ru_pause(&srv, 0);
    cont = tu_now();
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(r.ret, ETIMEDOUT);
    /* While stopped (after the first command_timeout): 50/s.  From about a
     * second after SIGCONT: 100/s again. */
    during = (double)starts_between(stopped + 0.5, cont) / (cont - stopped - 0.5);
    after = (double)starts_between(cont + 1.2, t0 + 5.0) / (t0 + 5.0 - cont - 1.2);
    printf("stopped server, LOCAL: %.1f/s before, %.1f/s while stopped (share 0.5 of 100/s), "
           "%.1f/s after SIGCONT\n", (double)starts_between(t0 + 0.1, stopped) / (stopped - t0 - 0.1),
           during, after);
    ck_assert_msg(during > 0.8 * 50 && during < 1.15 * 50 + 2, "%.1f/s while stopped", during);
    ck_assert_msg(after > 0.85 * 100 && after < 1.1 * 100 + 2, "%.1f/s after", after);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
}
END_TEST

START_TEST(test_server_restart)
{
    aiometer_limiter *l;
    aiometer_options o = { 0 };
    aiometer_job jobs[20];
    double back;
    size_t i;
    int err;

    ck_assert_int_eq(open_limiter(&l, "restart", 1000, 5, 3, NULL), 0);
    for (i = 0; i < 20; i++)
        jobs[i] = (aiometer_job){ timed_job, NULL };
    o.limiter = l;
    ck_assert_int_eq(run(jobs, 20, &o), 0);
    /* The server dies with the limiter's connections open: the next call
     * fails (writing to a dead socket raises no SIGPIPE), and after a
     * restart the limiter reconnects and loads its script again. */
    ru_kill(&srv);
    err = run(jobs, 20, &o);
    ck_assert_msg(err == ECONNREFUSED || err == ECONNRESET, "%s", strerror(err));
    ck_assert_int_eq(ru_restart(&srv), 0);
    back = until_it_works(l, 3.0);
    printf("restart: working again %.3f s after the server came back\n", back);
    ck_assert_msg(back < 1.5, "%.3f s", back);
    ck_assert_int_eq(run(jobs, 20, &o), 0);
    /* SCRIPT FLUSH: the same, without a reconnection. */
    ck_assert_int_eq(ru_int(&srv, "SCRIPT FLUSH") == -1, 1);
    ck_assert_int_eq(run(jobs, 20, &o), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
}
END_TEST

/* ---- tiny rates ---------------------------------------------------------------------------------- */

START_TEST(test_tiny_rates)
{
    static const double rates[] = { 1e-300, 5e-324, DBL_MIN };
    static const size_t bursts[] = { 1, 3 };
    size_t ri, bi;

    for (ri = 0; ri < 3; ri++) {
        for (bi = 0; bi < 2; bi++) {
            aiometer_limiter *l;
            aiometer_options o = { 0 };
            aiometer_stats st;
            aiometer_job jobs[6];
            char key[32];
            size_t i, first;
            long long pttl;

            snprintf(key, sizeof(key), "tiny-%zu-%zu", ri, bi);
            ck_assert_int_eq(open_limiter(&l, key, rates[ri], bursts[bi], 0, NULL), 0);
            for (i = 0; i < 6; i++)
                jobs[i] = (aiometer_job){ timed_job, NULL };
            o.limiter = l;
            o.timeout = 0.15;
            o.stats = &st;
            ck_assert_int_eq(run(jobs, 6, &o), ETIMEDOUT);
            first = st.started;
            /* At most the burst starts; every booking after it is for
             * ever, so a second call starts nothing. */
            ck_assert_msg(first >= 1 && first <= bursts[bi], "rate %g burst %zu: %zu started",
                          rates[ri], bursts[bi], first);
            ck_assert_int_eq(run(jobs, 6, &o), ETIMEDOUT);
            ck_assert_msg(st.started == 0, "rate %g: %zu more started", rates[ri], st.started);
            pttl = ru_int(&srv, "PTTL aiometer:{%s}:rate", key);
            ck_assert_msg(pttl > 1000LL * 86400 * 365, "pttl %lld", pttl);
            ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
        }
    }
}
END_TEST

/* The LOCAL mode's own budget saturates too. */
START_TEST(test_tiny_rates_local)
{
    aiometer_redis_options ro = { 1.0, 0.05, AIOMETER_REDIS_LOCAL, 1.0 };
    static const double rates[] = { 1e-300, 5e-324, DBL_MIN };
    aiometer_limiter *l[3];
    aiometer_job jobs[5];
    size_t i, k;

    for (k = 0; k < 3; k++)
        ck_assert_int_eq(open_limiter(&l[k], "tiny-local", rates[k], 1, 0, &ro), 0);
    ru_kill(&srv);
    for (i = 0; i < 5; i++)
        jobs[i] = (aiometer_job){ timed_job, NULL };
    for (k = 0; k < 3; k++) {
        aiometer_options o = { 0 };
        aiometer_stats st;

        o.limiter = l[k];
        o.timeout = 0.15;
        o.stats = &st;
        ck_assert_int_eq(run(jobs, 5, &o), ETIMEDOUT);
        ck_assert_msg(st.started == 1, "rate %g: %zu started", rates[k], st.started);
        for (i = 0; i < 3; i++) {
            ck_assert_int_eq(run(jobs, 5, &o), ETIMEDOUT);
            ck_assert_msg(st.started == 0, "rate %g: %zu more started", rates[k], st.started);
        }
        ck_assert_int_eq(aiometer_limiter_destroy(l[k]), 0);
    }
}
END_TEST

/* ---- per-key limits (issue 14 through Redis) ----------------------------------------------- */

/* Jobs of a per-key Redis limiter record their start and end times and how
 * many of their key run at once; keys are in each job's own buffer, so
 * that equal keys are equal strings at different addresses. */
#define KMAXJ 256
#define KMAXK 16
/* How late a job may record its start after its booked time: a job thread
 * of a 16-thread pool preempted between its grant and its first line.
 * 40 ms was once too little under `make -j4 check` on 2 cores (starts 3
 * and 6 of a 20/s key recorded 0.110 s apart, 0.150 s booked). */
#define KSLACK 0.07

static struct {
    uint64_t t0;
    _Atomic uint64_t start[KMAXJ], end[KMAXJ];
    atomic_int running[KMAXK], peak[KMAXK], all_running, all_peak;
    atomic_long redis_peak; /* the most members of a key's slot set a job saw */
    atomic_int fast_done;
} kr;

struct kjob {
    size_t idx;
    int key;
    char name[400];
    double hold;
    int count_in_redis; /* nonzero: ZCARD the key's slot set while running */
    char run_key[512];
    size_t run_key_len;
};

static void kr_reset(void)
{
    memset(&kr, 0, sizeof(kr));
    kr.t0 = tu_now_ns();
}

static void kjob_init(struct kjob *j, size_t idx, int key, double hold)
{
    memset(j, 0, sizeof(*j));
    j->idx = idx;
    j->key = key;
    snprintf(j->name, sizeof(j->name), "host-%d.example:443", key);
    j->hold = hold;
}

static void bump(atomic_int *run, atomic_int *peak)
{
    int now = atomic_fetch_add(run, 1) + 1, p = atomic_load(peak);

    while (now > p && !atomic_compare_exchange_weak(peak, &p, now))
        ;
}

static void *kjob_fn(void *arg)
{
    struct kjob *j = arg;

    atomic_store(&kr.start[j->idx], tu_now_ns());
    bump(&kr.running[j->key], &kr.peak[j->key]);
    bump(&kr.all_running, &kr.all_peak);
    if (j->count_in_redis) {
        /* A connection of the job's own: the test's pool threads outlive
         * the test, and a thread-local one would be left open. */
        redisContext *c = ru_connect(&srv);
        redisReply *r = c ? redisCommand(c, "ZCARD %b", j->run_key, j->run_key_len) : NULL;
        long n = r && r->type == REDIS_REPLY_INTEGER ? (long)r->integer : 1000;
        long p = atomic_load(&kr.redis_peak);

        while (n > p && !atomic_compare_exchange_weak(&kr.redis_peak, &p, n))
            ;
        if (r)
            freeReplyObject(r);
        if (c)
            redisFree(c);
    }
    if (j->hold > 0)
        aiometer_sleep(j->hold);
    atomic_fetch_sub(&kr.all_running, 1);
    atomic_fetch_sub(&kr.running[j->key], 1);
    atomic_store(&kr.end[j->idx], tu_now_ns());
    return j;
}

static const char *kjob_key(void *arg, void *key_arg)
{
    (void)key_arg;
    return ((struct kjob *)arg)->name;
}

static int keyed_open(aiometer_limiter **l, const char *key, double rate, size_t burst,
                      size_t cap, size_t max_keys, const aiometer_redis_options *ro)
{
    aiometer_limiter_options lo = { .max_per_second = rate, .max_burst = burst,
                                    .max_at_once = cap, .per_key = 1, .max_keys = max_keys };

    return aiometer_redis_limiter_open(l, srv.url, key, &lo, ro);
}

/* The Redis key of job key `name` (at most 128 bytes) under limiter key
 * `lim`, as the man page documents it. */
static size_t job_key_name(char *buf, size_t size, const char *lim, const char *name,
                           const char *suffix)
{
    int n = snprintf(buf, size, "aiometer:{%s}:k:%zu:%s:%s", lim, strlen(name), name, suffix);

    return n > 0 ? (size_t)n : 0;
}

/* Starts i < m of key `key` lie at least (m - i) intervals apart, less
 * KSLACK for a late record. */
static void check_key_gcra(const struct kjob *jobs, size_t n, int key, double rate)
{
    uint64_t t[KMAXJ];
    size_t m = 0, a, b;

    for (a = 0; a < n; a++)
        if (jobs[a].key == key && atomic_load(&kr.start[jobs[a].idx]))
            t[m++] = atomic_load(&kr.start[jobs[a].idx]);
    qsort(t, m, sizeof(t[0]), cmp_ull);
    for (a = 0; a < m; a++)
        for (b = a + 1; b < m; b++)
            ck_assert_msg((double)(t[b] - t[a]) / 1e9 >= (double)(b - a) / rate - KSLACK,
                          "key %d: starts %zu and %zu only %.3f s apart", key, a, b,
                          (double)(t[b] - t[a]) / 1e9);
}

/* Per-key running cap 2, 100 ms jobs of 4 keys: never 3 of one key at
 * once, counted in the jobs and in the key's slot set in Redis, while the
 * keys run side by side. */
START_TEST(test_keyed_cap)
{
    enum { K = 4, PER = 6, N = K * PER };
    static struct kjob jobs[N];
    void *args[N];
    aiometer_options o = { 0 };
    aiometer_limiter *l;
    size_t i;

    kr_reset();
    ck_assert_int_eq(keyed_open(&l, "kcap", 0, 0, 2, 0, NULL), 0);
    for (i = 0; i < N; i++) {
        kjob_init(&jobs[i], i, (int)(i % K), 0.1);
        jobs[i].count_in_redis = 1;
        jobs[i].run_key_len = job_key_name(jobs[i].run_key, sizeof(jobs[i].run_key), "kcap",
                                           jobs[i].name, "run");
        args[i] = &jobs[i];
    }
    o.pool = tu_pool(16);
    o.limiter = l;
    o.key = kjob_key;
    ck_assert_int_eq(aiometer_run_on_each(kjob_fn, args, N, &o), 0);
    for (i = 0; i < K; i++)
        ck_assert_int_eq(atomic_load(&kr.peak[i]), 2);
    ck_assert_int_gt(atomic_load(&kr.all_peak), 2);
    /* The slot sets are where the man page says, and hold at most 2. */
    ck_assert_int_eq(atomic_load(&kr.redis_peak), 2);
    /* Emptied as the last job of each key gave its slot back. */
    for (i = 0; i < K; i++)
        ck_assert_int_eq(ru_int(&srv, "EXISTS %s", jobs[i].run_key), 0);
    /* Without opts.key: EINVAL. */
    o.key = NULL;
    ck_assert_int_eq(aiometer_run_on_each(kjob_fn, args, N, &o), EINVAL);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
}
END_TEST

/* Job keys that a naive "aiometer:{k}:<job key>:run" would confuse (colons,
 * a suffix of another, bytes above 127, control bytes, long keys that
 * differ in their last byte) each get their own slot: with a cap of 1 per
 * key, all of them hold a slot at once.  A job waits at a barrier until
 * every key runs, which it never reaches if two keys shared a slot set. */
static const char *const odd_keys[] = {
    "a:1:b", "a", "1:b", "a:1", "b", "1:b:run", "k:1:a", "\x01\xff:", "\xff", "\xff:\x01",
    "rate", "run", "free", NULL, NULL, /* two long keys, made in the test */
};
enum { ODD = sizeof(odd_keys) / sizeof(odd_keys[0]) };
static char long_keys[2][300];
static atomic_int odd_arrived;

static const char *odd_key(void *arg, void *key_arg)
{
    size_t i = (size_t)((const struct kjob *)arg)->key;

    (void)key_arg;
    return odd_keys[i] ? odd_keys[i] : long_keys[i - (ODD - 2)];
}

static void *odd_job(void *arg)
{
    struct kjob *j = arg;
    uint64_t until = tu_now_ns() + 5000000000u;

    bump(&kr.running[j->key], &kr.peak[j->key]);
    bump(&kr.all_running, &kr.all_peak);
    atomic_fetch_add(&odd_arrived, 1);
    while (atomic_load(&odd_arrived) < (int)ODD && tu_now_ns() < until && !aiometer_cancelled())
        tu_sleep(0.002);
    atomic_fetch_sub(&kr.all_running, 1);
    atomic_fetch_sub(&kr.running[j->key], 1);
    return j;
}

START_TEST(test_keyed_no_collisions)
{
    static struct kjob jobs[2 * ODD];
    void *args[2 * ODD];
    aiometer_options o = { 0 };
    aiometer_limiter *l;
    size_t i;

    kr_reset();
    atomic_store(&odd_arrived, 0);
    memset(long_keys, 'x', sizeof(long_keys));
    long_keys[0][299] = long_keys[1][299] = 0;
    long_keys[1][298] = 'y';
    ck_assert_int_eq(keyed_open(&l, "kodd", 1000, 1, 1, 0, NULL), 0);
    /* Each key twice: the second job of a key waits for the first. */
    for (i = 0; i < 2 * ODD; i++) {
        kjob_init(&jobs[i], i, (int)(i % ODD), 0);
        args[i] = &jobs[i];
    }
    o.pool = tu_pool(2 * ODD + 2);
    o.limiter = l;
    o.key = odd_key;
    o.timeout = 20;
    ck_assert_int_eq(aiometer_run_on_each(odd_job, args, 2 * ODD, &o), 0);
    ck_assert_int_eq(atomic_load(&kr.all_peak), (int)ODD);
    for (i = 0; i < ODD; i++)
        ck_assert_int_eq(atomic_load(&kr.peak[i]), 1);
    ck_assert_int_ge(atomic_load(&odd_arrived), 2 * (int)ODD);
    /* The limiter's own keys are untouched by job keys named like them. */
    ck_assert_int_eq(ru_int(&srv, "EXISTS aiometer:{kodd}:run"), 0);
    ck_assert_int_eq(ru_int(&srv, "EXISTS aiometer:{kodd}:rate"), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
}
END_TEST

/* A key's Redis keys expire when it is idle: its rate key once its
 * schedule has passed, its slot set as its last slot is given back. */
START_TEST(test_keyed_expiry)
{
    enum { K = 5, PER = 3, N = K * PER };
    static struct kjob jobs[N];
    void *args[N];
    aiometer_options o = { 0 };
    aiometer_limiter *l;
    char name[512];
    long long pttl;
    size_t i;

    kr_reset();
    ck_assert_int_eq(keyed_open(&l, "kexp", 20, 1, 2, 0, NULL), 0);
    for (i = 0; i < N; i++) {
        kjob_init(&jobs[i], i, (int)(i % K), 0);
        args[i] = &jobs[i];
    }
    o.pool = tu_pool(8);
    o.limiter = l;
    o.key = kjob_key;
    ck_assert_int_eq(aiometer_run_on_each(kjob_fn, args, N, &o), 0);
    for (i = 0; i < K; i++) {
        job_key_name(name, sizeof(name), "kexp", jobs[i].name, "rate");
        pttl = ru_int(&srv, "PTTL %s", name);
        /* PER bookings of 50 ms: the schedule ends at most 150 ms on. */
        ck_assert_msg(pttl == -2 || (pttl > 0 && pttl <= 160), "%s: pttl %lld", name, pttl);
        job_key_name(name, sizeof(name), "kexp", jobs[i].name, "run");
        ck_assert_int_eq(ru_int(&srv, "EXISTS %s", name), 0);
    }
    tu_sleep(0.4);
    /* Nothing of the keys is left in the server. */
    for (i = 0; i < K; i++) {
        job_key_name(name, sizeof(name), "kexp", jobs[i].name, "rate");
        ck_assert_int_eq(ru_int(&srv, "EXISTS %s", name), 0);
    }
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
}
END_TEST

/* Tiny rates saturate per key: each key gets at most its burst, every
 * later booking is for ever, and the key's schedule sits far away. */
START_TEST(test_keyed_tiny_rates)
{
    enum { K = 3, PER = 4, N = K * PER };
    static struct kjob jobs[N];
    void *args[N];
    aiometer_options o = { 0 };
    aiometer_stats st;
    aiometer_limiter *l;
    char name[512];
    size_t i;

    kr_reset();
    ck_assert_int_eq(keyed_open(&l, "ktiny", 1e-300, 2, 0, 0, NULL), 0);
    for (i = 0; i < N; i++) {
        kjob_init(&jobs[i], i, (int)(i % K), 0);
        args[i] = &jobs[i];
    }
    o.pool = tu_pool(4);
    o.limiter = l;
    o.key = kjob_key;
    o.timeout = 0.2;
    o.stats = &st;
    ck_assert_int_eq(aiometer_run_on_each(kjob_fn, args, N, &o), ETIMEDOUT);
    ck_assert_uint_eq(st.started, 2 * K);
    for (i = 0; i < K; i++) {
        ck_assert_int_eq(atomic_load(&kr.peak[i]) <= 2, 1);
        job_key_name(name, sizeof(name), "ktiny", jobs[i].name, "rate");
        ck_assert_msg(ru_int(&srv, "PTTL %s", name) > 1000LL * 86400 * 365, "%s", name);
    }
    ck_assert_int_eq(aiometer_run_on_each(kjob_fn, args, N, &o), ETIMEDOUT);
    ck_assert_uint_eq(st.started, 0);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
}
END_TEST

/* With AIOMETER_REDIS_LOCAL the in-process budget is per key too, with a
 * table of max_keys keys: with Redis gone, cap 1 per key still holds, keys
 * still run side by side, and more keys than the table holds still all
 * run (a new key waits until an idle one can be forgotten). */
START_TEST(test_keyed_local)
{
    enum { K = 5, PER = 4, N = K * PER };
    aiometer_redis_options ro = { 1.0, 0.05, AIOMETER_REDIS_LOCAL, 1.0 };
    static struct kjob jobs[N];
    void *args[N];
    aiometer_options o = { 0 };
    aiometer_limiter *l;
    size_t i;

    kr_reset();
    ck_assert_int_eq(keyed_open(&l, "klocal", 1000, 1, 1, 3, &ro), 0);
    ru_kill(&srv);
    for (i = 0; i < N; i++) {
        kjob_init(&jobs[i], i, (int)(i % K), 0.03);
        args[i] = &jobs[i];
    }
    o.pool = tu_pool(8);
    o.limiter = l;
    o.key = kjob_key;
    o.timeout = 20;
    ck_assert_int_eq(aiometer_run_on_each(kjob_fn, args, N, &o), 0);
    for (i = 0; i < K; i++)
        ck_assert_int_eq(atomic_load(&kr.peak[i]), 1);
    ck_assert_int_gt(atomic_load(&kr.all_peak), 1);
    /* The table never holds more than 3 keys, each holding a slot. */
    ck_assert_int_le(atomic_load(&kr.all_peak), 3);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
}
END_TEST

START_TEST(test_keyed_errors)
{
    aiometer_limiter_options lo = { .max_per_second = 10, .max_keys = 10 };
    aiometer_limiter *l;

    /* max_keys without per_key, or past the largest table. */
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, "kerr", &lo, NULL), EINVAL);
    lo.per_key = 1;
    lo.max_keys = (size_t)1 << 21;
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, "kerr", &lo, NULL), EINVAL);
    lo.max_keys = (size_t)1 << 20;
    ck_assert_int_eq(aiometer_redis_limiter_open(&l, srv.url, "kerr", &lo, NULL), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
}
END_TEST

/* 10 keys x 20 jobs interleaved, per key 10/s burst 1, 8 at once overall:
 * each key keeps its GCRA bound, and the keys run side by side, so the
 * call takes about 19 intervals (1.9 s), not ten times that. */
START_TEST(test_keyed_parallel)
{
    enum { K = 10, PER = 20, N = K * PER };
    const double rate = 10, ideal = (PER - 1) / rate;
    static struct kjob jobs[N];
    void *args[N];
    aiometer_options o = { 0 };
    aiometer_limiter *l;
    double took;
    size_t i;

    kr_reset();
    ck_assert_int_eq(keyed_open(&l, "kpar", rate, 1, 0, 0, NULL), 0);
    for (i = 0; i < N; i++) {
        kjob_init(&jobs[i], i, (int)(i % K), 0);
        args[i] = &jobs[i];
    }
    o.pool = tu_pool(16);
    o.max_at_once = 8;
    o.limiter = l;
    o.key = kjob_key;
    kr.t0 = tu_now_ns();
    ck_assert_int_eq(aiometer_run_on_each(kjob_fn, args, N, &o), 0);
    took = tu_since(kr.t0);
    for (i = 0; i < K; i++)
        check_key_gcra(jobs, N, (int)i, rate);
    printf("keyed, 10 keys x 20 jobs at 10/s each: %.3f s (ideal %.2f s)\n", took, ideal);
    ck_assert_msg(took >= ideal - KSLACK, "took %.3f s", took);
    ck_assert_msg(took <= 1.5 * ideal, "took %.3f s, keys not in parallel", took);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
}
END_TEST

/* Head-of-line: per key 20/s and 1 at once.  Key S's 20 jobs come first and
 * take 0.5 s each; 9 other keys have 20 jobs of 1 ms.  The fast keys' jobs
 * all finish within 1.25 times their own 0.95 s, not behind S's 10 s.  The
 * call is cancelled once the fast jobs are done (S's sleeping jobs end at
 * once). */
START_TEST(test_keyed_head_of_line)
{
    enum { KEYS = 10, PER = 20, FAST = (KEYS - 1) * PER, N = KEYS * PER };
    const double ideal = (PER - 1) / 20.0;
    static struct kjob jobs[N];
    void *args[N], *out;
    aiometer_options o = { 0 };
    aiometer_limiter *l;
    aiometer_amap *it;
    size_t i, idx, fast = 0;
    double last = 0;
    int rc;

    kr_reset();
    ck_assert_int_eq(keyed_open(&l, "khol", 20, 1, 1, 0, NULL), 0);
    for (i = 0; i < PER; i++)
        kjob_init(&jobs[i], i, 0, 0.5);
    for (i = PER; i < N; i++)
        kjob_init(&jobs[i], i, (int)(1 + (i - PER) % (KEYS - 1)), 0.001);
    for (i = 0; i < N; i++)
        args[i] = &jobs[i];
    o.pool = tu_pool(16);
    o.limiter = l;
    o.key = kjob_key;
    kr.t0 = tu_now_ns();
    ck_assert_int_eq(aiometer_amap_open(&it, kjob_fn, args, N, &o), 0);
    while (fast < FAST && (rc = aiometer_amap_next(it, &out, &idx)) == 0) {
        struct kjob *j = out;

        if (j->key != 0) {
            double at = (double)(atomic_load(&kr.end[j->idx]) - kr.t0) / 1e9;

            fast++;
            if (at > last)
                last = at;
        }
    }
    aiometer_amap_cancel(it);
    while (aiometer_amap_next(it, &out, &idx) == 0)
        ;
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_uint_eq(fast, FAST);
    for (i = 1; i < KEYS; i++)
        check_key_gcra(jobs, N, (int)i, 20);
    ck_assert_int_eq(atomic_load(&kr.peak[0]), 1);
    printf("keyed head-of-line: 180 fast jobs done at %.3f s (ideal %.2f s)\n", last, ideal);
    ck_assert_msg(last <= 1.25 * ideal, "fast keys done at %.3f s (ideal %.2f s)", last, ideal);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
}
END_TEST


Suite *redis_suite(void);

Suite *redis_suite(void)
{
    Suite *s = suite_create("redis");
    TCase *t;

    t = tcase_create("open");
    tcase_add_checked_fixture(t, server_up, server_down);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_open_errors);
    tcase_add_test(t, test_password);
    suite_add_tcase(s, t);

    /* The fleet and failure cases measure rates and delays: tagged
     * "timing", so that runs under valgrind can leave them out. */
    t = tcase_create("fleet");
    tcase_set_tags(t, "timing");
    tcase_add_checked_fixture(t, server_up, server_down);
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_fleet_rate);
    tcase_add_test(t, test_fleet_cap);
    tcase_add_test(t, test_sigkill_holder);
    tcase_add_test(t, test_long_job_renewed);
    tcase_add_test(t, test_cancel_while_waiting);
    tcase_add_test(t, test_lost_notification);
    suite_add_tcase(s, t);

    t = tcase_create("failures");
    tcase_set_tags(t, "timing");
    tcase_add_checked_fixture(t, server_up, server_down);
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_stopped_server_fail);
    tcase_add_test(t, test_stopped_server_local);
    suite_add_tcase(s, t);

    /* Not timing-bound: these also run under valgrind (CK_EXCLUDE_TAGS=timing),
     * where the restart shows that reconnections leak nothing. */
    t = tcase_create("reconnect");
    tcase_add_checked_fixture(t, server_up, server_down);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_server_restart);
    tcase_add_test(t, test_tiny_rates);
    tcase_add_test(t, test_tiny_rates_local);
    suite_add_tcase(s, t);

    /* Per-key limits: bounds that hold however slow the machine. */
    t = tcase_create("keyed");
    tcase_add_checked_fixture(t, server_up, server_down);
    tu_pool_fixture(t);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_keyed_cap);
    tcase_add_test(t, test_keyed_no_collisions);
    tcase_add_test(t, test_keyed_expiry);
    tcase_add_test(t, test_keyed_tiny_rates);
    tcase_add_test(t, test_keyed_local);
    tcase_add_test(t, test_keyed_errors);
    suite_add_tcase(s, t);

    t = tcase_create("keyed_timing");
    tcase_set_tags(t, "timing");
    tcase_add_checked_fixture(t, server_up, server_down);
    tu_pool_fixture(t);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_keyed_parallel);
    tcase_add_test(t, test_keyed_head_of_line);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    ru_require_redis();
    sr = srunner_create(redis_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
