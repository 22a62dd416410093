/* progress.c - what a call tells about itself: progress reports while it
 * runs (opts.progress) and its statistics when it ends (opts.stats). */
#include "config.h"
#include "call.h"
#include "clock.h"

#include <stdint.h>

static void report_progress(struct aiometer__call *c, uint64_t now)
{
    aiometer_progress p;

    p.started = atomic_load(&c->p_started);
    p.completed = atomic_load(&c->p_completed);
    p.failed = atomic_load(&c->p_failed);
    p.total = c->n;
    p.elapsed = (double)(now - c->t_start) / 1e9;
    p.retried = atomic_load(&c->p_retried);
    c->progress(&p, c->progress_arg);
}

/* No other thread may be reporting now: the flag keeps reports from
 * overlapping. */
void aiometer__progress_tick(struct aiometer__call *c)
{
    uint64_t now = aiometer__now_ns();

    if (now - atomic_load(&c->p_last) < c->progress_every)
        return;
    if (atomic_flag_test_and_set(&c->p_busy))
        return;
    if (now - atomic_load(&c->p_last) >= c->progress_every) {
        report_progress(c, now);
        atomic_store(&c->p_last, now);
    }
    atomic_flag_clear(&c->p_busy);
}

void aiometer__progress_final(struct aiometer__call *c, int ret)
{
    uint64_t now;

    /* Most calls ask for neither: then no clock read (call.c says why). */
    if (!c->progress && !c->stats_out)
        return;
    now = aiometer__now_ns();
    if (c->progress)
        report_progress(c, now);
    if (c->stats_out) {
        aiometer_stats *s = c->stats_out;
        size_t total = c->source ? atomic_load(&c->pulled) : c->n;
        s->started = atomic_load(&c->started);
        s->completed = atomic_load(&c->completed);
        s->failed = atomic_load(&c->failed);
        s->cancelled = total > s->started ? total - s->started : 0;
        s->peak_running = atomic_load(&c->peak);
        s->failed_index = ret && ret == c->err ? c->err_index : SIZE_MAX;
        s->limiter_wait = (double)atomic_load(&c->rate_wait_ns) / 1e9;
        s->elapsed = (double)(now - c->t_start) / 1e9;
        s->retried = atomic_load(&c->retried);
    }
}
