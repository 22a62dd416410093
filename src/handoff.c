/* handoff.c - when a caller that runs its own jobs asks the pool for help.
 *
 * Waking a sleeping pool thread costs the caller a futex system call, and
 * the woken thread comes 35-60 us later on these machines, often onto the
 * caller's own core, where it preempts it.  A call whose jobs are done in
 * less time than that pays for a helper that arrives after the work is
 * over (W1 at N = 1,000: 15-31 ns/job instead of 7; W6: 64 us per call of
 * 10 jobs of 0.4 us instead of 4 us; bench/README has the figures).
 *
 * So a caller whose jobs are known to be short starts alone: its call is
 * not posted to the pool.  After each batch it runs, it looks at the batch's
 * time per job and at how many jobs are left, and posts the call (waking
 * helpers) only once the work left would take it longer than a helper
 * needs to arrive (AIOMETER__RECRUIT_NS).  A call of 10 jobs of 1 us never
 * posts; a call of 10^6 tiny jobs posts after its first few batches.
 *
 * "Known to be short" needs a measurement before the first job, which only
 * past calls can give: a small table remembers, for each job function, the
 * time per job of the first batch some participant ran of the last call
 * that used it.  A function not in the table, or one whose jobs took
 * AIOMETER__LONG_JOB_NS or more, gets today's hand-off: the call is posted
 * before its first job starts, so a call of blocking jobs never waits for
 * one of them to end before helpers are woken.  A function whose jobs were
 * short and now block is the sentinel's (sentinel.c): a caller's batch
 * that runs for 10 ms gets the call posted, so only the jobs
 * claimed with the blocked one wait for it, not the rest of the call.
 *
 * An amap (amap.c) does the same with its consumer in the caller's place:
 * it runs batches of the jobs itself when it finds no result ready, and
 * posts the call for slots - 1 helpers by the same rule, so that it keeps a
 * slot for itself.
 *
 * The invariant that makes this safe: while c->recruit is nonzero, the
 * call is in no pool queue, so its only participants are the caller (or
 * amap's consumers); whoever clears it with the exchange posts, so helpers
 * are posted at most once.  No job is left behind either: a call that is
 * never posted is run to its end by the caller, and an amap by its
 * consumer (in aiometer_amap_next, or in aiometer_amap_close). */
#include "config.h"
#include "call.h"
#include "clock.h"

#include <stdint.h>

/* Work left below this is not worth a wake-up: about what a woken thread
 * takes to arrive on this 2-core machine (35-60 us, bench/README). */
#define AIOMETER__RECRUIT_NS 40000
/* A consumer's batch of fewer jobs than this, and shorter than
 * AIOMETER__RECRUIT_NS, does not decide on helpers (see handoff_batch). */
#define AIOMETER__JUDGE_JOBS 8
/* A job this long gets helpers before it starts (no alone phase). */
#define AIOMETER__LONG_JOB_NS 20000
/* A batch shorter than this says more about the clock reads and the claim
 * around it than about its jobs: a first batch of one tiny job takes 30-60
 * ns here for ~2 ns of work, and 10,000 such jobs (~20 us, less than a
 * helper needs to come) looked like 500 us of work and posted.  The next
 * batch, up to 16 times larger (jobloop.c), tells; so a caller recruits at
 * most one batch of at most AIOMETER__BATCH_GROW_NS (20 us) later. */
#define AIOMETER__MEASURE_NS 1000

/* The table of job functions' times, direct-mapped by the function's
 * address.  Each entry is one word, the address's tag in the high half and
 * the time per job (ns, saturated) in the low half, so a reader never sees
 * one function's tag with another's time.  Relaxed: the table is only a
 * hint, and a lost or stale update costs at most one hand-off. */
#define HINT_SLOTS 64
static _Atomic uint64_t hints[HINT_SLOTS];

static uintptr_t job_fn(const struct aiometer__call *c)
{
    return c->jobs ? (uintptr_t)c->jobs[0].fn : (uintptr_t)c->fn;
}

static unsigned hint_slot(uintptr_t fn)
{
    return (unsigned)((fn >> 4) ^ (fn >> 10)) % HINT_SLOTS;
}

static uint64_t hint_tag(uintptr_t fn)
{
    /* Never 0, so an empty entry matches no function. */
    return ((uint64_t)(fn & 0xffffffffu) | 1) << 32;
}

/* The remembered time per job of fn, or UINT64_MAX when unknown. */
static uint64_t hint_get(uintptr_t fn)
{
    uint64_t e = atomic_load_explicit(&hints[hint_slot(fn)], memory_order_relaxed);

    if ((e & ~UINT64_C(0xffffffff)) != hint_tag(fn))
        return UINT64_MAX;
    return e & 0xffffffffu;
}

static void hint_put(uintptr_t fn, uint64_t ns)
{
    if (ns > 0xffffffffu)
        ns = 0xffffffffu;
    atomic_store_explicit(&hints[hint_slot(fn)], hint_tag(fn) | ns, memory_order_relaxed);
}

int aiometer__handoff_alone(struct aiometer__call *c, size_t helpers)
{
    uint64_t h;

    /* Retries wait in the pool's threads, and rate, limiter or deadline
     * calls leave the jobs to them (call.c): those keep the plain
     * hand-off. */
    if (helpers == 0 || c->rq.cap || c->has_rate || c->shared || c->deadline != AIOMETER__NEVER)
        return 0;
    atomic_store_explicit(&c->learn, 1, memory_order_relaxed);
    h = hint_get(job_fn(c));
    if (h >= AIOMETER__LONG_JOB_NS)
        return 0;
    atomic_store_explicit(&c->recruit, helpers, memory_order_relaxed);
    /* A job that blocks would hold up the others behind a caller who is
     * alone: the sentinel posts the call then (sentinel.c).  Without a
     * sentinel the call is posted now, as for an unknown function. */
    if (aiometer__sentinel_watch(c) != 0) {
        atomic_store_explicit(&c->recruit, 0, memory_order_relaxed);
        return 0;
    }
    c->watched = 1;
    return 1;
}

void aiometer__handoff_batch(struct aiometer__call *c, size_t k, uint64_t d, uint64_t min_job_ns)
{
    uint64_t per_job = k ? d / k : d, left, known = UINT64_MAX;
    size_t helpers, next;
    int learn = atomic_load_explicit(&c->learn, memory_order_relaxed);

    /* What the table said before this batch: the doubt below compares
     * against it, not against this batch's own figure, which the learning
     * just below may have put in the table.  (It did: the first job of an
     * amap opened after the machine idled for 50 ms took over 1 us, the
     * table took that as the truth, and the consumer of W7's ~3 ns jobs
     * posted helpers at once: 32.6 ns/job instead of 16.9, bench/README.) */
    if (learn || atomic_load_explicit(&c->recruit, memory_order_relaxed))
        known = hint_get(job_fn(c));
    /* The first batch a participant ends tells the table how long this
     * function's jobs take (batches start at one job, so that is the time
     * of one job). */
    if (learn && atomic_exchange_explicit(&c->learn, 0, memory_order_relaxed))
        hint_put(job_fn(c), per_job);
    if (!atomic_load_explicit(&c->recruit, memory_order_relaxed))
        return;
    /* Only the caller or a consumer gets here (see the invariant above). */
    if (per_job < min_job_ns) {
        /* A fast batch clears a doubt raised by a slow one before it. */
        atomic_store_explicit(&c->recruit_doubt, 0, memory_order_relaxed);
        return;
    }
    if (d < AIOMETER__MEASURE_NS)
        return;
    /* A consumer's first batches (1, 2, 4 jobs) are too short to judge a
     * job by right after the machine idled: cold caches and a vCPU waking
     * up made W7's jobs of ~3 ns look like 1-5 us for a few batches, and
     * the consumer posted helpers each time.  So a few jobs must take as
     * long as a helper's arrival, or the batch must have grown to
     * AIOMETER__JUDGE_JOBS jobs, before they count. */
    if (min_job_ns && k < AIOMETER__JUDGE_JOBS && d < AIOMETER__RECRUIT_NS)
        return;
    if (c->source) {
        /* A source does not say how much is left: post once the caller
         * has worked alone for as long as a helper needs to come. */
        if (aiometer__now_ns() - c->t_start < AIOMETER__RECRUIT_NS)
            return;
    } else {
        next = atomic_load_explicit(&c->next, memory_order_relaxed);
        left = next < c->n ? (uint64_t)(c->n - next) : 0;
        /* (The first test keeps the product from overflowing.) */
        if (left == 0 || (left < AIOMETER__RECRUIT_NS && left * per_job < AIOMETER__RECRUIT_NS)) {
            atomic_store_explicit(&c->recruit_doubt, 0, memory_order_relaxed);
            return;
        }
    }
    /* A batch that was preempted looks slow: 16 callers on 2 cores (W6)
     * posted for nothing that way.  So a batch more than twice as slow per
     * job as the table says must be confirmed by the next one before the
     * call is posted; jobs that really became slower wait one batch for
     * their helpers, never more. */
    if ((known == UINT64_MAX || per_job > 2 * known) &&
        !atomic_exchange_explicit(&c->recruit_doubt, 1, memory_order_relaxed))
        return;
    helpers = atomic_exchange_explicit(&c->recruit, 0, memory_order_relaxed);
    aiometer__call_post(c, helpers);
}
