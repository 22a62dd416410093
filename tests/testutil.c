/*
 * testutil.c - helpers shared by the Check suites; see testutil.h.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "testutil.h"

#include <check.h>
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
