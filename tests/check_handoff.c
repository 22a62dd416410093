/*
 * check_handoff.c - a caller that runs its jobs alone (handoff.c) and the
 * sentinel that posts its call when one of them blocks (sentinel.c).
 *
 * A job function is "known short" once a call of it has run: the library
 * remembers its time per job.  A caller of such a function runs the jobs
 * itself and wakes no pool thread.  If one of those jobs then blocks, the
 * others must not wait behind it: the sentinel sees the caller's batch run
 * too long and posts the call, and pool threads take the rest.
 */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

enum { HJOBS = 16 };
/* Whether the library, taught, runs job 0 on the caller depends on the
 * job times it measured, which a loaded machine can stretch: a test tries
 * this many times to get the case it is about. */
enum { H_ATTEMPTS = 10 };

/* Job i returns 2i+1 and records when it ended; the job whose index is
 * `blocker`, when it runs on the calling thread, first sleeps in a plain
 * nanosleep, which the library cannot see or cut short.  (Elsewhere it
 * does not block: the attempt then did not test the sentinel, and the
 * test tries again; see H_ATTEMPTS.) */
static struct {
    size_t blocker;        /* SIZE_MAX: none blocks */
    double block_s;
    uint64_t t0;
    _Atomic uint64_t end[HJOBS];
    atomic_int blocked_on_caller;
    pthread_t caller;
} hs;

static void *h_job(void *arg)
{
    size_t i = (uintptr_t)arg;

    if (i == hs.blocker && pthread_equal(pthread_self(), hs.caller)) {
        atomic_store(&hs.blocked_on_caller, 1);
        tu_sleep(hs.block_s);
    }
    atomic_store(&hs.end[i], tu_now_ns());
    return (void *)(2 * i + 1);
}

static void h_reset(size_t blocker, double block_s)
{
    hs.blocker = blocker;
    hs.block_s = block_s;
    hs.caller = pthread_self();
    atomic_store(&hs.blocked_on_caller, 0);
    for (size_t i = 0; i < HJOBS; i++)
        atomic_store(&hs.end[i], 0);
    hs.t0 = tu_now_ns();
}

/* Seconds from the call's start to the end of the last job that does not
 * block. */
static double h_others_done(void)
{
    uint64_t last = 0;

    for (size_t i = 0; i < HJOBS; i++) {
        uint64_t e = atomic_load(&hs.end[i]);

        ck_assert_msg(e != 0, "job %zu did not run", i);
        if (i != hs.blocker && e > last)
            last = e;
    }
    return (double)(last - hs.t0) / 1e9;
}

/* Calls of h_job with nothing blocking, until the library runs them on the
 * caller alone: the first job of the call ends on the calling thread. */
static void h_teach(aiometer_pool *pool)
{
    aiometer_job jobs[HJOBS];
    void *results[HJOBS];
    aiometer_options o = { 0 };

    o.pool = pool;
    for (size_t i = 0; i < HJOBS; i++) {
        jobs[i].fn = h_job;
        jobs[i].arg = (void *)(uintptr_t)i;
    }
    for (int k = 0; k < 20; k++) {
        h_reset(SIZE_MAX, 0);
        ck_assert_int_eq(aiometer_run_all(jobs, HJOBS, results, &o), 0);
    }
}

/* run_all: job 0 blocks for 1.5 s on the caller; the 15 others are done
 * long before, by the pool's threads, and every result is right.  The
 * call comes right after the teaching calls (_i = 0: the sentinel is
 * looking), 0.3 s after (1: it dozes, and the caller wakes it) or 1.5 s
 * after (2: it has left, and the caller starts another). */
static const double h_pause[] = { 0, 0.3, 1.5 };

START_TEST(test_blocked_job_does_not_hold_up_the_call)
{
    aiometer_pool *pool = tu_pool(4);
    aiometer_job jobs[HJOBS];
    void *results[HJOBS];
    aiometer_options o = { 0 };
    double took, others;

    o.pool = pool;
    for (size_t i = 0; i < HJOBS; i++) {
        jobs[i].fn = h_job;
        jobs[i].arg = (void *)(uintptr_t)i;
    }
    for (int a = 0; a < H_ATTEMPTS; a++) {
        h_teach(pool);
        tu_sleep(h_pause[_i]);
        h_reset(0, 1.5);
        ck_assert_int_eq(aiometer_run_all(jobs, HJOBS, results, &o), 0);
        if (atomic_load(&hs.blocked_on_caller))
            break;
    }
    took = tu_since(hs.t0);
    others = h_others_done();
    printf("blocked job on the caller (%.1f s after the teaching): %d; the other 15 done after "
           "%.3f s, the call %.3f s\n",
           h_pause[_i], atomic_load(&hs.blocked_on_caller), others, took);
    /* Taught, the library ran job 0 on the caller, alone: the case the
     * sentinel is for. */
    ck_assert_int_eq(atomic_load(&hs.blocked_on_caller), 1);
    for (size_t i = 0; i < HJOBS; i++)
        ck_assert_ptr_eq(results[i], (void *)(2 * i + 1));
    ck_assert_msg(took >= 1.5, "the call returned before its job: %.3f s", took);
    /* Held up, they would end after 1.5 s; the sentinel looks every
     * 10 ms, and the bound leaves room for a loaded machine. */
    ck_assert_msg(others < 0.75, "the other jobs waited for the blocked one: %.3f s", others);
}
END_TEST

/* CPU seconds this process has used. */
static double h_cpu(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Threads of this process. */
static int h_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;

    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* After calls that ran alone, the sentinel goes on looking for a second
 * after the last one, but costs next to no CPU meanwhile: it sleeps
 * between looks.  Then its thread ends.  (It spun once: its condition
 * variable waited on the wall clock for a monotonic deadline, so every
 * wait timed out at once, and it used a whole core for that second.) */
START_TEST(test_sentinel_sleeps_then_leaves)
{
    aiometer_pool *pool = tu_pool(4);
    int before, after;
    double c0, used;

    h_teach(pool);
    /* The sentinel is one of these; the pool's threads stay. */
    before = h_threads();
    c0 = h_cpu();
    tu_sleep(0.3);
    used = h_cpu() - c0;
    printf("sentinel: CPU used in 0.3 s after the calls: %.4f s\n", used);
    ck_assert_msg(used < 0.06, "the process used %.3f s of CPU in 0.3 s while idle", used);
    /* Gone within the second it lingers (and some slack). */
    for (int i = 0; i < 40 && (after = h_threads()) >= before; i++)
        tu_sleep(0.05);
    ck_assert_msg(after == before - 1, "threads: %d after the calls, %d two seconds later",
                  before, after);
}
END_TEST

/* The same through an amap whose consumer runs the jobs itself: the other
 * jobs run while the blocked one still sleeps (their results wait for the
 * consumer, whose thread is the one blocked). */
typedef struct h_consumer {
    void **args;
    aiometer_pool *pool;
    aiometer_amap *it;
    size_t got;
    double last_at; /* when the 15th result came */
    int end;
} h_consumer;

static void *h_consume(void *arg)
{
    h_consumer *hc = arg;
    void *r;
    size_t idx;
    int rc;

    aiometer_options o = { 0 };

    /* This thread opens the iterator too, so that no job (on a helper, if
     * the call was posted at once) reads hs.caller before it is set. */
    hs.caller = pthread_self();
    o.pool = hc->pool;
    hc->end = aiometer_amap_open(&hc->it, h_job, hc->args, HJOBS, &o);
    if (hc->end)
        return NULL;
    while ((rc = aiometer_amap_next(hc->it, &r, &idx)) == 0) {
        ck_assert_ptr_eq(r, (void *)(2 * idx + 1));
        if (++hc->got == HJOBS - 1)
            hc->last_at = tu_since(hs.t0);
    }
    hc->end = rc;
    return NULL;
}

START_TEST(test_blocked_job_in_amap_consumer)
{
    aiometer_pool *pool = tu_pool(4);
    static void *args[HJOBS];
    h_consumer hc;
    pthread_t t;
    double others;

    for (size_t i = 0; i < HJOBS; i++)
        args[i] = (void *)(uintptr_t)i;
    for (int a = 0; a < H_ATTEMPTS; a++) {
        h_teach(pool);
        memset(&hc, 0, sizeof hc);
        hc.args = args;
        hc.pool = pool;
        h_reset(0, 1.5);
        tu_thread_start(&t, h_consume, &hc);
        tu_thread_join(t);
        ck_assert_int_eq(hc.end, AIOMETER_DONE);
        ck_assert_uint_eq(hc.got, HJOBS);
        ck_assert_int_eq(aiometer_amap_close(hc.it), 0);
        if (atomic_load(&hs.blocked_on_caller))
            break;
    }
    others = h_others_done();
    printf("amap: blocked job on the consumer: %d; the other 15 done after %.3f s, "
           "taken after %.3f s\n",
           atomic_load(&hs.blocked_on_caller), others, hc.last_at);
    ck_assert_int_eq(atomic_load(&hs.blocked_on_caller), 1);
    ck_assert_msg(others < 0.75, "the other jobs waited for the blocked one: %.3f s", others);
}
END_TEST

Suite *handoff_suite(void)
{
    Suite *s = suite_create("handoff");
    TCase *tc = tu_tcase("sentinel", 30);

    /* The caller runs the jobs alone only if the library measured them as
     * short (under 20 us each), which valgrind and TSan runs do not. */
    tcase_set_tags(tc, "native");
    tcase_add_loop_test(tc, test_blocked_job_does_not_hold_up_the_call, 0, 3);
    tcase_add_test(tc, test_blocked_job_in_amap_consumer);
    tcase_add_test(tc, test_sentinel_sleeps_then_leaves);
    suite_add_tcase(s, tc);
    return s;
}
