/*
 * testutil.c - helpers shared by the Check suites; see testutil.h.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "testutil.h"

#include <check.h>
#include <poll.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- time ------------------------------------------------------------------ */

uint64_t tu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double tu_now(void)
{
    return (double)tu_now_ns() / 1e9;
}

double tu_since(uint64_t start_ns)
{
    return (double)(tu_now_ns() - start_ns) / 1e9;
}

void tu_sleep(double seconds)
{
    if (!(seconds > 0))
        return;
    /* An absolute deadline, so that a signal that interrupts the sleep does
     * not make the total longer or shorter than asked. */
    uint64_t until = tu_now_ns() + (uint64_t)(seconds * 1e9);
    struct timespec ts = {.tv_sec = (time_t)(until / 1000000000u),
                          .tv_nsec = (long)(until % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

void tu_sleep_ms(double ms)
{
    tu_sleep(ms / 1e3);
}

/* ---- random numbers -------------------------------------------------------- */

uint64_t tu_rand_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

double tu_rand_uniform(uint64_t seed, size_t index, double lo, double hi)
{
    uint64_t state = seed ^ ((uint64_t)index * 0xd1b54a32d192ed03u);
    /* Two steps so that neighbouring indexes do not give related values. */
    tu_rand_next(&state);
    double u = (double)(tu_rand_next(&state) >> 11) / 9007199254740992.0; /* 2^53 */
    return lo + u * (hi - lo);
}

/* ---- concurrency tracker --------------------------------------------------- */

void tu_tracker_init(tu_tracker *t)
{
    atomic_init(&t->running, 0);
    atomic_init(&t->peak, 0);
    atomic_init(&t->started, 0);
    atomic_init(&t->finished, 0);
}

size_t tu_tracker_enter(tu_tracker *t)
{
    size_t ticket = atomic_fetch_add(&t->started, 1);
    size_t now = atomic_fetch_add(&t->running, 1) + 1;
    /* Raise the peak to `now` unless another job already raised it higher. */
    size_t seen = atomic_load(&t->peak);
    while (seen < now && !atomic_compare_exchange_weak(&t->peak, &seen, now)) {
    }
    return ticket;
}

void tu_tracker_leave(tu_tracker *t)
{
    atomic_fetch_sub(&t->running, 1);
    atomic_fetch_add(&t->finished, 1);
}

size_t tu_tracker_peak(tu_tracker *t)
{
    return atomic_load(&t->peak);
}

size_t tu_tracker_started(tu_tracker *t)
{
    return atomic_load(&t->started);
}

size_t tu_tracker_finished(tu_tracker *t)
{
    return atomic_load(&t->finished);
}

/* ---- gate ------------------------------------------------------------------ */

void tu_gate_init(tu_gate *g)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    g->arrived = 0;
    g->min_want = SIZE_MAX;
    g->open = 0;
}

void tu_gate_destroy(tu_gate *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

void tu_gate_arrive(tu_gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->arrived++;
    /* Hundreds of jobs may wait for the same count: waking them all on every
     * arrival would cost a quadratic number of wake-ups, so wake them only
     * once some waiter's count is reached.  min_want never rises, so every
     * count a waiter asked for is broadcast when it is reached. */
    if (g->arrived >= g->min_want)
        pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static struct timespec deadline_after(double timeout)
{
    uint64_t until = tu_now_ns() + (uint64_t)(timeout * 1e9);
    struct timespec ts = {.tv_sec = (time_t)(until / 1000000000u),
                          .tv_nsec = (long)(until % 1000000000u)};
    return ts;
}

int tu_gate_wait_arrived(tu_gate *g, size_t n, double timeout)
{
    struct timespec ts = deadline_after(timeout);
    int rc = 0;
    pthread_mutex_lock(&g->mu);
    if (n < g->min_want)
        g->min_want = n;
    /* The predicate loop covers spurious wake-ups and broadcasts for
     * arrivals that do not yet reach n. */
    while (g->arrived < n && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&g->cv, &g->mu, &ts);
    rc = g->arrived >= n ? 0 : ETIMEDOUT;
    pthread_mutex_unlock(&g->mu);
    return rc;
}

void tu_gate_open(tu_gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

int tu_gate_wait_open(tu_gate *g, double timeout)
{
    struct timespec ts = deadline_after(timeout);
    int rc = 0;
    pthread_mutex_lock(&g->mu);
    while (!g->open && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&g->cv, &g->mu, &ts);
    rc = g->open ? 0 : ETIMEDOUT;
    pthread_mutex_unlock(&g->mu);
    return rc;
}

size_t tu_gate_arrived(tu_gate *g)
{
    pthread_mutex_lock(&g->mu);
    size_t n = g->arrived;
    pthread_mutex_unlock(&g->mu);
    return n;
}

/* ---- start times ----------------------------------------------------------- */

void tu_starts_init(tu_starts *s, size_t cap)
{
    atomic_init(&s->n, 0);
    s->cap = cap;
    s->t = calloc(cap ? cap : 1, sizeof *s->t);
    if (!s->t)
        abort(); /* not ck_assert: this may run in a helper thread */
}

void tu_starts_free(tu_starts *s)
{
    free(s->t);
    s->t = NULL;
}

size_t tu_starts_record(tu_starts *s)
{
    uint64_t now = tu_now_ns();
    size_t i = atomic_fetch_add(&s->n, 1);
    if (i < s->cap)
        s->t[i] = now;
    return i;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

size_t tu_starts_sort(tu_starts *s)
{
    size_t n = atomic_load(&s->n);
    if (n > s->cap)
        n = s->cap;
    qsort(s->t, n, sizeof *s->t, cmp_u64);
    return n;
}

double tu_starts_max_gap(const tu_starts *s, size_t n)
{
    uint64_t gap = 0;
    for (size_t i = 1; i < n; i++)
        if (s->t[i] - s->t[i - 1] > gap)
            gap = s->t[i] - s->t[i - 1];
    return (double)gap / 1e9;
}

/* ---- threads --------------------------------------------------------------- */

void tu_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int rc = pthread_create(t, NULL, fn, arg);
    ck_assert_msg(rc == 0, "pthread_create: %s", strerror(rc));
}

void *tu_thread_join(pthread_t t)
{
    void *ret = NULL;
    int rc = pthread_join(t, &ret);
    ck_assert_msg(rc == 0, "pthread_join: %s", strerror(rc));
    return ret;
}

/* ---- pools: the checked fixture ---------------------------------------------- */

/* The pools the running test made.  Check forks each test, so these start
 * empty in every test's process. */
#define TU_MAX_POOLS 8
static aiometer_pool *tu_pools[TU_MAX_POOLS];
static size_t tu_npools;

aiometer_pool *tu_pool(size_t threads)
{
    aiometer_pool *pool = NULL;
    ck_assert_uint_lt(tu_npools, TU_MAX_POOLS);
    ck_assert_int_eq(aiometer_pool_create(&pool, threads), 0);
    ck_assert_ptr_nonnull(pool);
    tu_pools[tu_npools++] = pool;
    return pool;
}

static void tu_pools_setup(void)
{
    tu_npools = 0;
}

/* Every call of the test has returned by now, so each pool must be idle:
 * EBUSY here means a call leaked its hold on the pool. */
static void tu_pools_teardown(void)
{
    while (tu_npools > 0)
        ck_assert_int_eq(aiometer_pool_destroy(tu_pools[--tu_npools]), 0);
}

void tu_pool_fixture(TCase *tc)
{
    tcase_add_checked_fixture(tc, tu_pools_setup, tu_pools_teardown);
}

TCase *tu_tcase(const char *name, double timeout)
{
    TCase *tc = tcase_create(name);

    tcase_set_timeout(tc, timeout);
    tu_pool_fixture(tc);
    return tc;
}

/* ---- probes and items: the streaming suites' jobs ---------------------------- */

void probe_init(struct probe *p)
{
    memset(p, 0, sizeof *p);
    atomic_init(&p->started, 0);
    atomic_init(&p->returned, 0);
    atomic_init(&p->running, 0);
    atomic_init(&p->peak, 0);
    atomic_init(&p->saw_cancel, 0);
    atomic_init(&p->gate, 0);
    pthread_mutex_init(&p->lock, NULL);
    p->t0 = tu_now();
}

void items_init(struct probe *p, struct item *items, void **args, size_t n)
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
void setup_items(struct probe *p, struct item *items, void **args, size_t n)
{
    probe_init(p);
    items_init(p, items, args, n);
}

void *item_job(void *arg)
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
    double at = tu_now() - p->t0;
    if (at > p->last_start)
        p->last_start = at;
    pthread_mutex_unlock(&p->lock);

    if (it->wait_gate) {
        double give_up = tu_now() + 10.0;
        while (!atomic_load(&p->gate) && tu_now() < give_up)
            tu_sleep(0.001);
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
            tu_sleep(it->sleep);
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
void check_result(void *result, size_t index, void **args, size_t n,
                         unsigned char *seen)
{
    ck_assert_uint_lt(index, n);
    ck_assert_msg(!seen[index], "index %zu delivered twice", index);
    ck_assert_ptr_eq(result, args[index]);
    seen[index] = 1;
}

/* Reads one result, which must be there (next says 0), and checks it. */
void read_one(aiometer_amap *it, void **args, size_t n, unsigned char *seen)
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
int drain_skipping(aiometer_amap *it, void **args, size_t n, unsigned char *seen,
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
int drain(aiometer_amap *it, void **args, size_t n, unsigned char *seen,
                 size_t *delivered)
{
    return drain_skipping(it, args, n, seen, delivered, 0, NULL);
}

/* Reads results from..to-1 of an ordered call: each must come with its own
 * index, in input order, as the job's result &items[i]. */
void read_in_order(aiometer_amap *it, struct item *items, size_t from, size_t to)
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
void expect_end(aiometer_amap *it, int want)
{
    void *r;
    ck_assert_int_eq(aiometer_amap_next(it, &r, NULL), want);
}

/* Gives items[from..to-1] the same sleep. */
void set_sleep(struct item *items, size_t from, size_t to, double seconds, int how)
{
    for (size_t i = from; i < to; i++) {
        items[i].sleep = seconds;
        items[i].how = how;
    }
}

/* The checks on a job that waited on aiometer_cancel_fd() and was woken by
 * cancellation, not by its own timeout. */
void check_fd_woken(const struct item *x)
{
    ck_assert_int_ge(x->fd, 0);
    ck_assert_int_eq(x->fd_ready_early, 0);
    ck_assert_int_eq(x->fd_poll_rc, 1);
    ck_assert(x->fd_revents & POLLIN);
}

/* For a call that stopped early: every job that started has returned, and
 * the stats count the ones that never started as cancelled.  Returns how
 * many started. */
size_t check_stopped(struct probe *p, const aiometer_stats *st, size_t n)
{
    size_t started = atomic_load(&p->started);
    ck_assert_uint_eq(ld(&p->returned), started);
    ck_assert_uint_eq(st->started, started);
    ck_assert_uint_eq(st->cancelled, n - started);
    return started;
}

/* Wait (at most 5 s) until `count` jobs have started, so that a test's
 * next call finds them on pool threads rather than running one itself. */
void wait_started(struct probe *p, size_t count)
{
    double give_up = tu_now() + 5.0;
    while (atomic_load(&p->started) < count && tu_now() < give_up)
        tu_sleep(0.002);
    ck_assert_uint_ge(ld(&p->started), count);
}

aiometer_options opts_on(aiometer_pool *pool)
{
    aiometer_options o = {0};
    o.pool = pool;
    return o;
}

/* Opens an amap of one plain 1 s job on pool o->pool and waits until it has
 * started, so that it holds one of the pool's threads for that second. */
aiometer_amap *occupy_thread(const aiometer_options *o, struct probe *busy_p,
                                    struct item *busy, void **busy_args)
{
    aiometer_amap *busy_it = NULL;
    setup_items(busy_p, busy, busy_args, 1);
    busy[0].sleep = 1.0;
    ck_assert_int_eq(aiometer_amap_open(&busy_it, item_job, busy_args, 1, o), 0);
    wait_started(busy_p, 1);
    return busy_it;
}

void *canceller_main(void *arg)
{
    struct canceller *c = arg;
    tu_sleep(c->delay);
    c->rc = aiometer_amap_cancel(c->it);
    return NULL;
}

void src_init(struct src *s, struct item *items, size_t len, int end_rc)
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

int src_next(void *state, void **arg)
{
    struct src *s = state;
    int rc;

    if (atomic_exchange(&s->inside, 1))
        atomic_fetch_add(&s->overlaps, 1);
    if (atomic_load(&s->ended))
        atomic_fetch_add(&s->after_end, 1);
    atomic_fetch_add(&s->calls, 1);
    if (s->pause > 0)
        tu_sleep(s->pause);
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

void *runner_main(void *arg)
{
    struct runner *r = arg;
    r->rc = aiometer_run_on_each_source(item_job, src_next, r->src, &r->opts);
    return NULL;
}

/* Gives job i the function item_job and the argument &items[i]. */
void jobs_of(aiometer_job *jobs, struct item *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        jobs[i].fn = item_job;
        jobs[i].arg = &items[i];
    }
}

/* ---- tracked jobs: the core suites' jobs --------------------------------------- */

#define SEED 0x5eed5eedu

void tracked_init(tracked_ctx *c, size_t reach, double hold_lo, double hold_hi)
{
    tu_tracker_init(&c->tr);
    tu_gate_init(&c->gate);
    c->reach = reach;
    c->gate_timeout = 3.0;
    c->hold_lo = hold_lo;
    c->hold_hi = hold_hi;
    atomic_init(&c->gate_timeouts, 0);
    atomic_init(&c->calls, 0);
}

void *tracked_job(void *arg)
{
    tracked_item *it = arg;
    tracked_ctx *c = it->c;
    atomic_fetch_add(&it->runs, 1);
    atomic_fetch_add(&c->calls, 1);
    tu_tracker_enter(&c->tr);
    /* Once one job has waited in vain, the test has failed: the others do
     * not wait too, so that it fails in seconds, not in minutes. */
    if (c->reach > 0) {
        tu_gate_arrive(&c->gate);
        if (atomic_load(&c->gate_timeouts) == 0 &&
            tu_gate_wait_arrived(&c->gate, c->reach, c->gate_timeout) != 0)
            atomic_fetch_add(&c->gate_timeouts, 1);
    }
    if (c->hold_hi > 0)
        tu_sleep(tu_rand_uniform(SEED, it->index, c->hold_lo, c->hold_hi));
    tu_tracker_leave(&c->tr);
    return it;
}

void set_init(tracked_set *s, tracked_ctx *c, size_t n)
{
    s->n = n;
    s->items = calloc(n, sizeof *s->items);
    s->args = calloc(n, sizeof *s->args);
    s->jobs = calloc(n, sizeof *s->jobs);
    s->results = calloc(n, sizeof *s->results);
    /* Not ck_assert: callers may be helper threads. */
    if (!s->items || !s->args || !s->jobs || !s->results)
        abort();
    for (size_t i = 0; i < n; i++) {
        s->items[i].c = c;
        s->items[i].index = i;
        atomic_init(&s->items[i].runs, 0);
        s->args[i] = &s->items[i];
        s->jobs[i].fn = tracked_job;
        s->jobs[i].arg = &s->items[i];
        s->results[i] = (void *)s; /* a sentinel no job returns */
    }
}

void set_free(tracked_set *s)
{
    free(s->items);
    free(s->args);
    free(s->jobs);
    free(s->results);
}

/* Run the set through run_all (use_all) or run_on_each. */
int set_run(tracked_set *s, int use_all, const aiometer_options *o)
{
    if (use_all)
        return aiometer_run_all(s->jobs, s->n, s->results, o);
    return aiometer_run_on_each(tracked_job, s->args, s->n, o);
}

/* Every item ran exactly once and, for run_all, its result is in place. */
void set_check_complete(tracked_set *s, int use_all)
{
    for (size_t i = 0; i < s->n; i++) {
        ck_assert_msg(atomic_load(&s->items[i].runs) == 1, "job %zu ran %d times", i,
                      atomic_load(&s->items[i].runs));
        if (use_all)
            ck_assert_msg(s->results[i] == &s->items[i], "results[%zu] is wrong", i);
    }
}
