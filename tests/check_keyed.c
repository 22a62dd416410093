/*
 * check_keyed.c - per-key limiters (limiter option per_key, max_keys; call
 * options key, key_arg): each key keeps its own rate and running cap, keys
 * do not hold one another up (no head-of-line blocking), a bounded table of
 * keys, keys asked for once per job, input order kept, and the errors.
 *
 * Jobs record what they see in memory that forked test processes share (an
 * anonymous MAP_SHARED area): their start and end times and how many jobs
 * of each key run at once.  Keys are written into each job's own buffer, so
 * that equal keys are equal strings at different addresses.
 *
 * Bounds: a job starts no earlier than its booked time, so the GCRA lower
 * bounds allow only SLACK for a job that records its start late (a bug
 * shows up as whole intervals missing).  Upper bounds on time are in the
 * TCase tagged "timing", tried TRIES times: a loaded machine can make one
 * run slow, a scheduler that blocks behind a busy key makes every run slow.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "aiometer.h"
#include "testutil.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define TEST_TIMEOUT 60
#define TRIES 3
/* How late a job may record its start after the booked time. */
#define SLACK 0.04
#define MAXJ 1024
#define MAXK 128

/* ---- what jobs record, in shared memory ------------------------------------------ */

struct rec {
    _Atomic uint64_t t0;              /* the common start, ns */
    atomic_int arrived;               /* processes ready to start */
    _Atomic uint64_t start[MAXJ];     /* when job j began (0: never) */
    _Atomic uint64_t end[MAXJ];       /* when it returned */
    atomic_int running[MAXK];         /* jobs of key k running now */
    atomic_int peak[MAXK];            /* the most of key k ever at once */
    atomic_int all_running, all_peak; /* jobs of any key */
    atomic_int key_calls;             /* calls to the key function */
    atomic_int runs;                  /* attempts of every job */
};

static struct rec *rec_new(void)
{
    struct rec *r = mmap(NULL, sizeof *r, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
                         0);
    ck_assert_ptr_ne(r, MAP_FAILED);
    memset(r, 0, sizeof *r);
    return r;
}

static void rec_free(struct rec *r)
{
    munmap(r, sizeof *r);
}

struct kjob {
    struct rec *r;
    size_t idx;  /* index in the shared record */
    int key;     /* which key */
    char name[16];
    double hold; /* seconds the job sleeps (cancellable) */
    int retries; /* attempts that ask for a retry before one succeeds */
    int fail;    /* nonzero: fail with this error after hold */
    atomic_int attempts;
};

static void kjob_init(struct kjob *j, struct rec *r, size_t idx, int key, double hold)
{
    memset(j, 0, sizeof *j);
    j->r = r;
    j->idx = idx;
    j->key = key;
    snprintf(j->name, sizeof j->name, "key%d", key);
    j->hold = hold;
}

static void bump_peak(atomic_int *run, atomic_int *peak)
{
    int now = atomic_fetch_add(run, 1) + 1, p = atomic_load(peak);

    while (now > p && !atomic_compare_exchange_weak(peak, &p, now))
        ;
}

static void *kjob_fn(void *arg)
{
    struct kjob *j = arg;
    struct rec *r = j->r;
    int a = atomic_fetch_add(&j->attempts, 1);

    atomic_fetch_add(&r->runs, 1);
    if (a == 0)
        atomic_store(&r->start[j->idx], tu_now_ns());
    bump_peak(&r->running[j->key], &r->peak[j->key]);
    bump_peak(&r->all_running, &r->all_peak);
    if (j->hold > 0)
        aiometer_sleep(j->hold);
    atomic_fetch_sub(&r->all_running, 1);
    atomic_fetch_sub(&r->running[j->key], 1);
    if (a < j->retries) {
        aiometer_retry(EAGAIN, 0.001);
        return NULL;
    }
    if (j->fail)
        aiometer_fail(j->fail);
    atomic_store(&r->end[j->idx], tu_now_ns());
    return j;
}

static void *kjob_null(void *arg)
{
    (void)arg;
    return NULL;
}

static const char *kjob_key(void *arg, void *key_arg)
{
    struct kjob *j = arg;

    (void)key_arg;
    atomic_fetch_add(&j->r->key_calls, 1);
    return j->name;
}

/* A limiter per key: NULL name for a private one. */
static aiometer_limiter *keyed_open(const char *name, double rate, size_t burst, size_t cap,
                                    size_t max_keys)
{
    aiometer_limiter_options lo = { 0 };
    aiometer_limiter *l = NULL;
    int err;

    lo.max_per_second = rate;
    lo.max_burst = burst;
    lo.max_at_once = cap;
    lo.per_key = 1;
    lo.max_keys = max_keys;
    err = aiometer_limiter_open(&l, name, &lo);
    ck_assert_msg(err == 0, "open %s: %s", name ? name : "(private)", aiometer_strerror(err));
    return l;
}

/* Every job of key k started no earlier than GCRA (rate, burst 1) allows,
 * give or take SLACK for a late record: starts i < m of one key lie at
 * least (m - i) intervals apart. */
static void check_gcra(struct rec *r, struct kjob *jobs, size_t n, int key, double rate)
{
    uint64_t t[MAXJ];
    size_t m = 0, a, b;

    for (a = 0; a < n; a++)
        if (jobs[a].key == key && atomic_load(&r->start[jobs[a].idx]))
            t[m++] = atomic_load(&r->start[jobs[a].idx]);
    for (a = 1; a < m; a++)
        for (b = a; b > 0 && t[b - 1] > t[b]; b--) {
            uint64_t x = t[b];
            t[b] = t[b - 1];
            t[b - 1] = x;
        }
    for (a = 0; a < m; a++)
        for (b = a + 1; b < m; b++)
            ck_assert_msg((double)(t[b] - t[a]) / 1e9 >= (double)(b - a) / rate - SLACK,
                          "key %d: starts %zu and %zu only %.3f s apart", key, a, b,
                          (double)(t[b] - t[a]) / 1e9);
}

/* ---- names of host-wide limiters ----------------------------------------------------- */

static long runner_pid;

static void runner_setup(void)
{
    runner_pid = (long)getpid();
}

/* A test that fails half way leaves its names here: remove this runner's. */
static void runner_teardown(void)
{
    char prefix[64], path[512];
    struct dirent *e;
    DIR *d = opendir("/dev/shm");

    snprintf(prefix, sizeof prefix, "aiometer.kchk%ld.", runner_pid);
    while (d && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
            snprintf(path, sizeof path, "/dev/shm/%s", e->d_name);
            unlink(path);
        }
    }
    if (d)
        closedir(d);
}

static void name_of(char *buf, size_t size, const char *tag, int try)
{
    snprintf(buf, size, "kchk%ld.%ld.%s%d", runner_pid, (long)getpid(), tag, try);
}

/* ---- TCase keyed: bounds that hold however slow the machine -------------------------- */

/* Per-key running cap 2, 100 ms jobs of 4 keys: never 3 of one key at
 * once, while the keys run side by side. */
START_TEST(test_cap_per_key)
{
    enum { K = 4, PER = 8, N = K * PER };
    struct rec *r = rec_new();
    struct kjob jobs[N];
    void *args[N];
    aiometer_options o = { 0 };
    aiometer_limiter *lim = keyed_open(NULL, 0, 0, 2, 0);
    size_t i;

    for (i = 0; i < N; i++) {
        kjob_init(&jobs[i], r, i, (int)(i % K), 0.1);
        args[i] = &jobs[i];
    }
    o.pool = tu_pool(16);
    o.limiter = lim;
    o.key = kjob_key;
    ck_assert_int_eq(aiometer_run_on_each(kjob_fn, args, N, &o), 0);
    for (i = 0; i < K; i++)
        ck_assert_int_eq(atomic_load(&r->peak[i]), 2);
    /* Keys do not wait for one another: more than one key's cap at once. */
    ck_assert_int_gt(atomic_load(&r->all_peak), 2);
    ck_assert_int_eq(atomic_load(&r->key_calls), N);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    rec_free(r);
}
END_TEST

/* Results in input order, through run_all and an ordered amap, although
 * jobs of busy keys are set aside and start after later ones. */
START_TEST(test_order_kept)
{
    enum { K = 5, N = 60 };
    struct rec *r = rec_new();
    struct kjob jobs[N];
    aiometer_job jb[N];
    void *args[N], *res[N], *out;
    aiometer_options o = { 0 };
    aiometer_limiter *lim = keyed_open(NULL, 100, 1, 1, 0);
    aiometer_amap *it;
    size_t i, idx, next = 0;
    int rc;

    for (i = 0; i < N; i++) {
        /* Key 0 has most jobs: they queue up behind its rate. */
        kjob_init(&jobs[i], r, i, i % 2 ? (int)(i % K) : 0, 0);
        args[i] = &jobs[i];
        jb[i].fn = kjob_fn;
        jb[i].arg = &jobs[i];
    }
    o.pool = tu_pool(8);
    o.limiter = lim;
    o.key = kjob_key;
    ck_assert_int_eq(aiometer_run_all(jb, N, res, &o), 0);
    for (i = 0; i < N; i++)
        ck_assert_ptr_eq(res[i], &jobs[i]);

    o.ordered = 1;
    ck_assert_int_eq(aiometer_amap_open(&it, kjob_fn, args, N, &o), 0);
    while ((rc = aiometer_amap_next(it, &out, &idx)) == 0) {
        ck_assert_uint_eq(idx, next);
        ck_assert_ptr_eq(out, &jobs[idx]);
        next++;
    }
    ck_assert_int_eq(rc, AIOMETER_DONE);
    ck_assert_uint_eq(next, N);
    ck_assert_int_eq(aiometer_amap_close(it), 0);
    ck_assert_int_eq(atomic_load(&r->key_calls), 2 * N);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    rec_free(r);
}
END_TEST

/* A job's key is asked for once, however many attempts it takes. */
START_TEST(test_key_once_across_retries)
{
    enum { N = 20 };
    struct rec *r = rec_new();
    struct kjob jobs[N];
    void *args[N];
    aiometer_options o = { 0 };
    aiometer_limiter *lim = keyed_open(NULL, 200, 1, 1, 0);
    size_t i;

    for (i = 0; i < N; i++) {
        kjob_init(&jobs[i], r, i, (int)(i % 3), 0);
        jobs[i].retries = 2;
        args[i] = &jobs[i];
    }
    o.pool = tu_pool(4);
    o.limiter = lim;
    o.key = kjob_key;
    o.retries = 2;
    ck_assert_int_eq(aiometer_run_on_each(kjob_fn, args, N, &o), 0);
    ck_assert_int_eq(atomic_load(&r->runs), 3 * N);
    ck_assert_int_eq(atomic_load(&r->key_calls), N);
    for (i = 0; i < 3; i++)
        ck_assert_int_eq(atomic_load(&r->peak[i]), 1);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    rec_free(r);
}
END_TEST

/* A lazy source: a job's key is asked for only once it has been pulled. */
struct lazy {
    struct kjob *jobs;
    size_t n;
    /* Written by the source (never concurrently with itself), read by key
     * functions on other threads: atomic. */
    atomic_size_t pulled;
    atomic_size_t early; /* keys asked for jobs not yet pulled */
    atomic_size_t calls;
};

static int lazy_next(void *state, void **arg)
{
    struct lazy *z = state;

    size_t k = atomic_load_explicit(&z->pulled, memory_order_relaxed);

    if (k == z->n)
        return AIOMETER_DONE;
    *arg = &z->jobs[k];
    atomic_store_explicit(&z->pulled, k + 1, memory_order_release);
    return 0;
}

static const char *lazy_key(void *arg, void *key_arg)
{
    struct lazy *z = key_arg;
    struct kjob *j = arg;

    atomic_fetch_add(&z->calls, 1);
    /* The source ran before the claimer asked for the key: a pulled job's
     * index is below pulled. */
    if (j->idx >= atomic_load_explicit(&z->pulled, memory_order_acquire))
        atomic_fetch_add(&z->early, 1);
    return j->name;
}

START_TEST(test_source_keys_when_pulled)
{
    enum { N = 300 };
    struct rec *r = rec_new();
    struct kjob *jobs = calloc(N, sizeof *jobs);
    struct lazy z = { jobs, N, 0, 0, 0 };
    aiometer_options o = { 0 };
    aiometer_limiter *lim = keyed_open(NULL, 1000, 1, 2, 0);
    size_t i;

    for (i = 0; i < N; i++)
        kjob_init(&jobs[i], r, i, (int)(i % 7), 0);
    o.pool = tu_pool(8);
    o.limiter = lim;
    o.key = lazy_key;
    o.key_arg = &z;
    ck_assert_int_eq(aiometer_run_on_each_source(kjob_fn, lazy_next, &z, &o), 0);
    ck_assert_uint_eq(atomic_load(&z.calls), N);
    ck_assert_uint_eq(atomic_load(&z.early), 0);
    ck_assert_int_eq(atomic_load(&r->runs), N);
    for (i = 0; i < 7; i++)
        ck_assert_int_le(atomic_load(&r->peak[i]), 2);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    free(jobs);
    rec_free(r);
}
END_TEST

/* A failure stops the call while jobs are set aside holding their key's
 * slot (waiting for their booked start): they are skipped (ECANCELED in
 * errors[]) and give the slots back, so the next call on the limiter runs. */
START_TEST(test_stop_gives_slots_back)
{
    enum { N = 12 };
    struct rec *r = rec_new();
    struct kjob jobs[N];
    void *args[N];
    int errors[N];
    aiometer_options o = { 0 };
    aiometer_limiter *lim = keyed_open(NULL, 2, 1, 1, 0);
    size_t i, cancelled = 0;

    for (i = 0; i < N; i++) {
        kjob_init(&jobs[i], r, i, (int)(i % 3), 0);
        args[i] = &jobs[i];
    }
    /* The failing job has a key of its own: it starts at once.  (On key 0
     * it was once set aside behind job 3, then overtaken by jobs 6 and 9,
     * and failed 1.5 s late, after every other job had run.) */
    kjob_init(&jobs[0], r, 0, 3, 0);
    jobs[0].hold = 0.05;
    jobs[0].fail = EPERM;
    o.pool = tu_pool(4);
    o.limiter = lim;
    o.key = kjob_key;
    o.errors = errors;
    ck_assert_int_eq(aiometer_run_on_each(kjob_fn, args, N, &o), EPERM);
    ck_assert_int_eq(errors[0], EPERM);
    for (i = 1; i < N; i++) {
        ck_assert(errors[i] == 0 || errors[i] == ECANCELED);
        cancelled += errors[i] == ECANCELED;
    }
    /* Keys 0..2 each get one start at once and the next 0.5 s later; the
     * failure comes after 0.05 s. */
    ck_assert_uint_ge(cancelled, N - 6);
    /* Had a slot been kept, key 1's cap of 1 would let nothing run. */
    o.errors = NULL;
    o.timeout = 5;
    ck_assert_int_eq(aiometer_run_on_each(kjob_fn, args + 1, N - 1, &o), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    rec_free(r);
}
END_TEST

/* Jobs of one key set aside for its slot start in the order they came:
 * a job claimed later waits behind them instead of racing them for the
 * next slot.  (Before, with 40 jobs of 5 ms on one key, cap 1, a job was
 * overtaken by up to 38 later ones; now by at most 1, in 10 rounds.)  A
 * few may overtake in the first claims, or while the first waiter is
 * between the heap and its slot; none more than the participants. */
START_TEST(test_set_aside_jobs_keep_their_order)
{
    enum { N = 40, PARTICIPANTS = 4 };
    struct rec *r = rec_new();
    struct kjob jobs[N];
    void *args[N];
    aiometer_options o = { 0 };
    aiometer_limiter *lim = keyed_open(NULL, 0, 0, 1, 0);
    size_t i, k, worst = 0, worst_job = 0;

    for (i = 0; i < N; i++) {
        kjob_init(&jobs[i], r, i, 0, 0.005);
        args[i] = &jobs[i];
    }
    o.pool = tu_pool(PARTICIPANTS);
    o.limiter = lim;
    o.key = kjob_key;
    ck_assert_int_eq(aiometer_run_on_each(kjob_fn, args, N, &o), 0);
    for (i = 0; i < N; i++) {
        size_t over = 0;

        ck_assert_uint_ne(atomic_load(&r->start[i]), 0);
        for (k = i + 1; k < N; k++)
            over += atomic_load(&r->start[k]) < atomic_load(&r->start[i]);
        if (over > worst) {
            worst = over;
            worst_job = i;
        }
    }
    ck_assert_int_le(atomic_load(&r->peak[0]), 1);
    ck_assert_msg(worst <= PARTICIPANTS, "job %zu started after %zu later jobs of its key",
                  worst_job, worst);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    rec_free(r);
}
END_TEST

/* A process killed while its job holds a key's only slot: the slot is its
 * owner's, and once the owner is dead the next taker frees it. */
static void *hang_job(void *arg)
{
    struct rec *r = arg;

    atomic_store(&r->arrived, 1);
    for (;;)
        pause();
    return NULL;
}

static const char *key_a(void *arg, void *key_arg)
{
    (void)arg;
    (void)key_arg;
    return "a";
}

START_TEST(test_host_killed_owner)
{
    struct rec *r = rec_new();
    char name[128];
    aiometer_limiter *lim;
    aiometer_options o = { 0 };
    void *args[1];
    pid_t pid;
    int st;

    name_of(name, sizeof name, "kill", 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        aiometer_limiter_options lo = { 0 };
        lo.max_at_once = 1;
        lo.per_key = 1;
        if (aiometer_limiter_open(&lim, name, &lo))
            _exit(2);
        o.limiter = lim;
        o.key = key_a;
        args[0] = r;
        aiometer_run_on_each(hang_job, args, 1, &o);
        _exit(3);
    }
    while (!atomic_load(&r->arrived))
        tu_sleep(0.001);
    lim = keyed_open(name, 0, 0, 1, 0);
    /* Held by a live process: a job of key "a" cannot start. */
    o.pool = tu_pool(2);
    o.limiter = lim;
    o.key = key_a;
    o.timeout = 0.2;
    args[0] = &r->arrived;
    ck_assert_int_eq(aiometer_run_on_each(kjob_null, args, 1, &o), ETIMEDOUT);
    kill(pid, SIGKILL);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    o.timeout = 5;
    ck_assert_int_eq(aiometer_run_on_each(kjob_null, args, 1, &o), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    aiometer_limiter_unlink(name);
    rec_free(r);
}
END_TEST

/* ---- TCase errors ------------------------------------------------------------------ */

static const char *null_key_at_3(void *arg, void *key_arg)
{
    struct kjob *j = arg;

    (void)key_arg;
    return j->idx == 3 ? NULL : j->name;
}

static int empty_source(void *state, void **arg)
{
    (void)state;
    (void)arg;
    return AIOMETER_DONE;
}

START_TEST(test_errors)
{
    enum { N = 8 };
    struct rec *r = rec_new();
    struct kjob jobs[N];
    aiometer_job jb[N];
    void *args[N], *res[N];
    aiometer_options o = { 0 };
    aiometer_stats st;
    aiometer_limiter_options lo = { 0 };
    aiometer_limiter *lim = keyed_open(NULL, 1000, 1, 0, 0), *plain;
    aiometer_amap *it = NULL;
    size_t i;

    for (i = 0; i < N; i++) {
        kjob_init(&jobs[i], r, i, (int)(i % 2), 0);
        args[i] = &jobs[i];
        jb[i].fn = kjob_fn;
        jb[i].arg = &jobs[i];
    }
    o.pool = tu_pool(4);
    o.limiter = lim;
    /* A per-key limiter without opts.key: EINVAL, and nothing runs. */
    ck_assert_int_eq(aiometer_run_on_each(kjob_fn, args, N, &o), EINVAL);
    ck_assert_int_eq(aiometer_run_all(jb, N, res, &o), EINVAL);
    ck_assert_int_eq(aiometer_run_any(jb, N, NULL, NULL, &o), EINVAL);
    ck_assert_int_eq(aiometer_amap_open(&it, kjob_fn, args, N, &o), EINVAL);
    ck_assert_ptr_null(it);
    ck_assert_int_eq(aiometer_run_on_each_source(kjob_fn, empty_source, NULL, &o), EINVAL);
    ck_assert_int_eq(atomic_load(&r->runs), 0);

    /* A key function that returns NULL fails the call with EINVAL. */
    o.key = null_key_at_3;
    o.stats = &st;
    o.max_at_once = 1;
    ck_assert_int_eq(aiometer_run_on_each(kjob_fn, args, N, &o), EINVAL);
    ck_assert_uint_eq(st.failed_index, 3);
    ck_assert_uint_le(st.started, 3);
    o.stats = NULL;
    o.max_at_once = 0;

    /* opts.key is ignored when the limiter is not per-key, or there is
     * none. */
    lo.max_per_second = 1000;
    ck_assert_int_eq(aiometer_limiter_open(&plain, NULL, &lo), 0);
    o.key = kjob_key;
    o.limiter = plain;
    ck_assert_int_eq(aiometer_run_on_each(kjob_fn, args, N, &o), 0);
    o.limiter = NULL;
    ck_assert_int_eq(aiometer_run_on_each(kjob_fn, args, N, &o), 0);
    ck_assert_int_eq(atomic_load(&r->key_calls), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(plain), 0);

    /* max_keys without per_key, or past the largest table. */
    lo.max_keys = 10;
    ck_assert_int_eq(aiometer_limiter_open(&plain, NULL, &lo), EINVAL);
    lo.per_key = 1;
    lo.max_keys = (size_t)1 << 21;
    ck_assert_int_eq(aiometer_limiter_open(&plain, NULL, &lo), EINVAL);
    lo.max_keys = (size_t)1 << 20;
    ck_assert_int_eq(aiometer_limiter_open(&plain, NULL, &lo), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(plain), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    rec_free(r);
}
END_TEST

/* Named per-key limiters: a cap past the key's slots, too many keys, and a
 * name whose state is not per key (or the other way round). */
START_TEST(test_host_errors)
{
    aiometer_limiter_options lo = { 0 };
    aiometer_limiter *l, *l2;
    char name[128];

    name_of(name, sizeof name, "err", 0);
    lo.per_key = 1;
    lo.max_at_once = 17;
    ck_assert_int_eq(aiometer_limiter_open(&l, name, &lo), EINVAL);
    lo.max_at_once = 16;
    lo.max_keys = 16385;
    ck_assert_int_eq(aiometer_limiter_open(&l, name, &lo), EINVAL);
    lo.max_keys = 16;
    ck_assert_int_eq(aiometer_limiter_open(&l, name, &lo), 0);
    lo.max_keys = 64;
    ck_assert_int_eq(aiometer_limiter_open(&l2, name, &lo), EEXIST);
    lo.max_keys = 0;
    ck_assert_int_eq(aiometer_limiter_open(&l2, name, &lo), 0);
    ck_assert_int_eq(aiometer_limiter_destroy(l2), 0);
    lo.per_key = 0;
    ck_assert_int_eq(aiometer_limiter_open(&l2, name, &lo), EEXIST);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
    ck_assert_int_eq(aiometer_limiter_unlink(name), 0);
    ck_assert_int_eq(aiometer_limiter_open(&l, name, &lo), 0);
    lo.per_key = 1;
    ck_assert_int_eq(aiometer_limiter_open(&l2, name, &lo), EEXIST);
    ck_assert_int_eq(aiometer_limiter_destroy(l), 0);
    ck_assert_int_eq(aiometer_limiter_unlink(name), 0);
}
END_TEST

/* ---- TCase timing ----------------------------------------------------------------- */

/* 10 keys x 50 jobs, interleaved, per key 5/s burst 1, 8 at once overall:
 * each key keeps its GCRA bound, and the keys run side by side, so the
 * call takes about 49 intervals (9.8 s), not ten times that. */
START_TEST(test_keys_in_parallel)
{
    enum { K = 10, PER = 50, N = K * PER };
    const double rate = 5, ideal = (PER - 1) / rate;
    struct rec *r = rec_new();
    struct kjob *jobs = calloc(N, sizeof *jobs);
    void **args = calloc(N, sizeof *args);
    aiometer_options o = { 0 };
    aiometer_limiter *lim = keyed_open(NULL, rate, 1, 0, 0);
    uint64_t t0;
    double took;
    size_t i;

    for (i = 0; i < N; i++) {
        kjob_init(&jobs[i], r, i, (int)(i % K), 0);
        args[i] = &jobs[i];
    }
    o.pool = tu_pool(16);
    o.max_at_once = 8;
    o.limiter = lim;
    o.key = kjob_key;
    t0 = tu_now_ns();
    ck_assert_int_eq(aiometer_run_on_each(kjob_fn, args, N, &o), 0);
    took = tu_since(t0);
    for (i = 0; i < K; i++)
        check_gcra(r, jobs, N, (int)i, rate);
    ck_assert_msg(took >= ideal - SLACK, "took %.3f s", took);
    ck_assert_msg(took <= 1.25 * ideal, "took %.3f s, keys not in parallel", took);
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    free(args);
    free(jobs);
    rec_free(r);
}
END_TEST

/* Head-of-line: per key 20/s and 1 at once.  Key S's 20 jobs come first and
 * take 0.5 s each; 9 other keys have 20 jobs of 1 ms.  The fast keys'
 * jobs all finish within 1.25 times their own 0.95 s, not behind S's 10 s.
 * Through a private limiter in one process, or a named one shared by two
 * processes that each run half of every key's jobs.  The call is cancelled
 * once the fast jobs are done (S's sleeping jobs end at once). */
enum { HOL_KEYS = 10, HOL_PER = 20, HOL_FAST = (HOL_KEYS - 1) * HOL_PER };
#define HOL_RATE 20.0
#define HOL_SLOW 0.5
#define HOL_IDEAL ((HOL_PER - 1) / HOL_RATE)

/* The named limiter of the head-of-line test, opened without assertions
 * (a forked child reports through its exit status). */
static int keyed_open_quiet(aiometer_limiter **l, const char *name)
{
    aiometer_limiter_options lo = { 0 };

    lo.max_per_second = HOL_RATE;
    lo.max_burst = 1;
    lo.max_at_once = 1;
    lo.per_key = 1;
    return aiometer_limiter_open(l, name, &lo);
}

/* One process's share: jobs [from, from + count) of the interleaved list
 * (S's first), run through an amap until every fast job of this share is
 * done.  Returns the latest finish of a fast job, in seconds after r->t0,
 * or a negative value if something failed. */
static double hol_run(struct rec *r, aiometer_limiter *lim, struct kjob *jobs, size_t nj,
                      int procs)
{
    void *args[HOL_KEYS * HOL_PER], *out;
    aiometer_options o = { 0 };
    aiometer_pool *pool;
    aiometer_amap *it;
    size_t i, idx, fast = 0, want = 0;
    double last = 0;
    int rc;

    for (i = 0; i < nj; i++) {
        args[i] = &jobs[i];
        want += jobs[i].key != 0;
    }
    if (aiometer_pool_create(&pool, 16))
        return -1;
    o.pool = pool;
    o.limiter = lim;
    o.key = kjob_key;
    /* Both processes start together. */
    if (atomic_fetch_add(&r->arrived, 1) + 1 == procs)
        atomic_store(&r->t0, tu_now_ns());
    while (atomic_load(&r->t0) == 0)
        tu_sleep(0.0005);
    if (aiometer_amap_open(&it, kjob_fn, args, nj, &o))
        return -1;
    while (fast < want && (rc = aiometer_amap_next(it, &out, &idx)) == 0) {
        struct kjob *j = out;
        if (j->key != 0) {
            double at = (double)(atomic_load(&r->end[j->idx]) - atomic_load(&r->t0)) / 1e9;
            fast++;
            if (at > last)
                last = at;
        }
    }
    aiometer_amap_cancel(it);
    while (aiometer_amap_next(it, &out, &idx) == 0)
        ;
    aiometer_amap_close(it);
    aiometer_pool_destroy(pool);
    return fast == want ? last : -1;
}

static void hol_jobs(struct kjob *jobs, struct rec *r, int share, int shares, size_t *nj)
{
    size_t i, n = 0;

    /* S (key 0) first, then the others interleaved; a share takes every
     * shares-th job of each key. */
    for (i = 0; i < HOL_PER; i++)
        if ((int)(i % shares) == share) {
            kjob_init(&jobs[n], r, n + (size_t)share * MAXJ / 2, 0, HOL_SLOW);
            n++;
        }
    for (i = 0; i < HOL_FAST; i++)
        if ((int)((i / (HOL_KEYS - 1)) % shares) == share) {
            kjob_init(&jobs[n], r, n + (size_t)share * MAXJ / 2, 1 + (int)(i % (HOL_KEYS - 1)),
                      0.001);
            n++;
        }
    *nj = n;
}

START_TEST(test_head_of_line)
{
    int procs = _i ? 2 : 1, try;
    double last = 0;

    for (try = 0; try < TRIES; try++) {
        struct rec *r = rec_new();
        struct kjob jobs[HOL_KEYS * HOL_PER];
        char name[128];
        aiometer_limiter *lim;
        size_t nj;
        pid_t pid = -1;
        int st;

        name_of(name, sizeof name, "hol", try);
        if (procs == 2) {
            pid = fork();
            ck_assert_int_ge(pid, 0);
            if (pid == 0) {
                double l;
                hol_jobs(jobs, r, 1, 2, &nj);
                if (keyed_open_quiet(&lim, name))
                    _exit(2);
                l = hol_run(r, lim, jobs, nj, 2);
                aiometer_limiter_destroy(lim);
                /* The child's figure goes back through the record. */
                atomic_store(&r->end[MAXJ - 1], (uint64_t)(l < 0 ? 0 : l * 1e9 + 1));
                _exit(l < 0 ? 3 : 0);
            }
        }
        hol_jobs(jobs, r, 0, procs, &nj);
        lim = procs == 2 ? NULL : keyed_open(NULL, HOL_RATE, 1, 1, 0);
        if (procs == 2)
            ck_assert_int_eq(keyed_open_quiet(&lim, name), 0);
        last = hol_run(r, lim, jobs, nj, procs);
        ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
        if (pid > 0) {
            double child;
            ck_assert_int_eq(waitpid(pid, &st, 0), pid);
            ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
            child = (double)(atomic_load(&r->end[MAXJ - 1]) - 1) / 1e9;
            if (child > last)
                last = child;
            aiometer_limiter_unlink(name);
        }
        ck_assert_msg(last >= 0, "a share failed");
        /* S never ran two at once, in all processes together. */
        ck_assert_int_eq(atomic_load(&r->peak[0]), 1);
        for (int k = 1; k < HOL_KEYS; k++)
            ck_assert_int_eq(atomic_load(&r->peak[k]), 1);
        rec_free(r);
        if (last <= 1.25 * HOL_IDEAL)
            break;
    }
    ck_assert_msg(last <= 1.25 * HOL_IDEAL, "fast keys done after %.3f s (ideal %.3f s)", last,
                  HOL_IDEAL);
    ck_assert_msg(last >= HOL_IDEAL - SLACK, "fast keys done after %.3f s: too soon", last);
}
END_TEST

/* max_keys = 4 with 100 keys in rotation, 10/s and 1 at once per key: the
 * bounds hold, and at most 4 keys are remembered at once.  A key is kept
 * for an interval T after its booking, so (allowing T/2 for a start
 * recorded late) within any T/2 at most 4 different keys start; a table
 * that grew would let all 100 start at once. */
START_TEST(test_max_keys)
{
    enum { K = 100, ROUNDS = 2, N = K * ROUNDS, MK = 4 };
    const double rate = 10, T = 1 / rate;
    struct rec *r = rec_new();
    struct kjob *jobs = calloc(N, sizeof *jobs);
    void **args = calloc(N, sizeof *args);
    aiometer_options o = { 0 };
    aiometer_limiter *lim = keyed_open(NULL, rate, 1, 1, MK);
    size_t i, a, b;

    for (i = 0; i < N; i++) {
        kjob_init(&jobs[i], r, i, (int)(i % K), 0);
        args[i] = &jobs[i];
    }
    o.pool = tu_pool(8);
    o.limiter = lim;
    o.key = kjob_key;
    ck_assert_int_eq(aiometer_run_on_each(kjob_fn, args, N, &o), 0);
    for (i = 0; i < K; i++) {
        ck_assert_int_eq(atomic_load(&r->peak[i]), 1);
        check_gcra(r, jobs, N, (int)i, rate);
    }
    for (a = 0; a < N; a++) {
        uint64_t ta = atomic_load(&r->start[a]);
        unsigned char seen[K] = { 0 };
        int distinct = 0;

        ck_assert_uint_ne(ta, 0);
        for (b = 0; b < N; b++) {
            uint64_t tb = atomic_load(&r->start[b]);
            if (tb <= ta && (double)(ta - tb) / 1e9 < T / 2 && !seen[jobs[b].key]) {
                seen[jobs[b].key] = 1;
                distinct++;
            }
        }
        ck_assert_msg(distinct <= MK, "%d keys started within one interval", distinct);
    }
    ck_assert_int_eq(aiometer_limiter_destroy(lim), 0);
    free(args);
    free(jobs);
    rec_free(r);
}
END_TEST

Suite *keyed_suite(void)
{
    Suite *s = suite_create("keyed");
    TCase *tc = tcase_create("keyed");

    tcase_set_timeout(tc, TEST_TIMEOUT);
    tu_pool_fixture(tc);
    tcase_add_test(tc, test_cap_per_key);
    tcase_add_test(tc, test_order_kept);
    tcase_add_test(tc, test_key_once_across_retries);
    tcase_add_test(tc, test_source_keys_when_pulled);
    tcase_add_test(tc, test_stop_gives_slots_back);
    tcase_add_test(tc, test_set_aside_jobs_keep_their_order);
    tcase_add_unchecked_fixture(tc, runner_setup, runner_teardown);
    tcase_add_test(tc, test_host_killed_owner);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_set_timeout(tc, TEST_TIMEOUT);
    tu_pool_fixture(tc);
    tcase_add_test(tc, test_errors);
    tcase_add_unchecked_fixture(tc, runner_setup, runner_teardown);
    tcase_add_test(tc, test_host_errors);
    suite_add_tcase(s, tc);

    /* Upper bounds on time, which valgrind's slowness would break. */
    tc = tcase_create("timing");
    tcase_set_tags(tc, "timing");
    tcase_set_timeout(tc, TEST_TIMEOUT);
    tu_pool_fixture(tc);
    tcase_add_unchecked_fixture(tc, runner_setup, runner_teardown);
    tcase_add_test(tc, test_keys_in_parallel);
    tcase_add_loop_test(tc, test_head_of_line, 0, 2);
    tcase_add_test(tc, test_max_keys);
    suite_add_tcase(s, tc);
    return s;
}
