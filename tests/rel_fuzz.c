/*
 * rel_fuzz.c - a libFuzzer target that drives the public API with arbitrary
 * option values, job counts and job behaviours, and checks the invariants
 * that must hold whatever the input:
 *   - every call returns 0 or an error its documentation lists, and EINVAL
 *     for options the header calls invalid, in which case no job ran;
 *   - no job runs twice; a call that returned 0 ran every job once;
 *   - results are right and delivered at most once (amap: exactly once for
 *     every job that succeeded, unless the consumer closed early); ordered
 *     amaps deliver in input order;
 *   - statistics agree with what the jobs saw, and no more jobs ran at once
 *     than max_at_once and the pool allow;
 *   - nothing hangs (libFuzzer's -timeout) and no sanitizer reports.
 *
 * Build with clang: the library with -fsanitize=fuzzer-no-link and
 * --enable-sanitizers=address, this program with -fsanitize=fuzzer (see
 * tests/reliability.mk, `make fuzz`, and tests/rel_ci.sh).
 *
 * The input is read as a small program: a header byte picks the entry point
 * and the pool, then come option values (each either a special value such
 * as NaN, -inf, 0 or SIZE_MAX, or raw bits), then one byte per job for its
 * behaviour, then the amap consumer's actions.  Inputs that would only make
 * a call slow (a rate of one job a second, say) get a deadline, so that each
 * input ends in milliseconds.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "aiometer.h"
#include "rel_util.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAXJOBS 12

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- reading the input ------------------------------------------------------------ */

struct input {
    const uint8_t *p;
    size_t n;
};

static uint8_t take8(struct input *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static uint64_t take64(struct input *in)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | take8(in);
    return v;
}

/* A double: a special value, raw bits, or a "sensible" value scaled by
 * `unit`, so that the fuzzer reaches both the edges and the working
 * paths. */
static double take_double(struct input *in, double unit)
{
    uint8_t sel = take8(in);
    uint64_t bits;
    double d;

    switch (sel % 20) {
    case 0: return 0.0;
    case 1: return -0.0;
    case 2: return (double)NAN;
    case 3: return -(double)NAN;
    case 4: return (double)INFINITY;
    case 5: return -(double)INFINITY;
    case 6: return -1.0;
    case 7: return DBL_MAX;
    case 8: return DBL_MIN;
    case 9: return 4.9406564584124654e-324; /* the smallest subnormal */
    case 10: return 1e9;
    case 11: return 1000000000.0000001; /* the next double above 1e9 */
    case 12: return 1e-300;
    case 13:
        bits = take64(in);
        memcpy(&d, &bits, sizeof(d));
        return d;
    default:
        return unit * (double)(1 + take8(in));
    }
}

/* max_buffered sizes a buffer: huge values that overflow the allocation
 * are fair (ENOMEM), but merely large ones would only measure the
 * machine's memory, so they are left out. */
static size_t take_buffered(struct input *in)
{
    static const size_t v[] = { 0, 1, 2, 3, 5, 64, 4096, SIZE_MAX, SIZE_MAX / 2 + 1 };
    return v[take8(in) % (sizeof(v) / sizeof(v[0]))];
}

static size_t take_size(struct input *in)
{
    uint8_t sel = take8(in);

    switch (sel % 12) {
    case 0: return 0;
    case 1: return SIZE_MAX;
    case 2: return SIZE_MAX / 2 + 1;
    case 3: return (size_t)1 << 32;
    default: return (size_t)(sel % 6);
    }
}

/* ---- the pools, made once -------------------------------------------------------------- */

#define DEFAULT_THREADS 6
static aiometer_pool *pool1, *pool3;
static aiometer_limiter *shared_lim;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* Before the default pool is made. */
    setenv("AIOMETER_THREADS", "6", 1);
    REL_CHECK(aiometer_pool_create(&pool1, 1) == 0, "pool_create(1)");
    REL_CHECK(aiometer_pool_create(&pool3, 3) == 0, "pool_create(3)");
    REL_CHECK(aiometer_limiter_create(&shared_lim, 1e5, 32) == 0, "limiter_create");
    return 0;
}

/* ---- jobs ------------------------------------------------------------------------------ */

enum { B_PLAIN, B_FAIL, B_SLEEP, B_FD, B_NEST, B_SPIN, B_BADSLEEP, B_KINDS };

/* Values jobs give aiometer_fail(): 0 is ignored, negative ones become
 * EINVAL.  ECANCELED and ETIMEDOUT are left out only because amap_next
 * uses them for its end, and the checks below could not tell them apart. */
static const int fail_codes[] = { EIO, ENOSPC, -1, 0, EPERM, INT_MAX, INT_MIN, EBUSY };
#define NCODES (sizeof(fail_codes) / sizeof(fail_codes[0]))

struct call;

struct item {
    struct call *c;
    size_t i;
};

struct call {
    size_t n;
    aiometer_pool *pool;
    atomic_int ran[MAXJOBS];
    int beh[MAXJOBS];
    int code[MAXJOBS]; /* B_FAIL: the value given to aiometer_fail */
    double sleep_s[MAXJOBS];
    struct item items[MAXJOBS];
    void *args[MAXJOBS];
    aiometer_job jobs[MAXJOBS];
    void *results[MAXJOBS];
    atomic_size_t running, peak;
    /* The source: */
    size_t pulled;
    size_t src_fail_at;
    int src_code;
    atomic_int in_progress;
};

static _Thread_local int nest_depth;

static void *value_of(size_t i)
{
    return (void *)(uintptr_t)(0x100 + i);
}

/* The error a failing job's code makes the call return (0: not a
 * failure). */
static int effective_code(int code)
{
    return code == 0 ? 0 : code > 0 ? code : EINVAL;
}

static int job_fails(const struct call *c, size_t i)
{
    return c->beh[i] == B_FAIL && c->code[i] != 0;
}

static void *inner_job(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
    return arg;
}

static void *job(void *arg)
{
    struct item *it = arg;
    struct call *c = it->c;
    size_t now = atomic_fetch_add(&c->running, 1) + 1, peak = atomic_load(&c->peak);
    int rc, fd;

    while (now > peak && !atomic_compare_exchange_weak(&c->peak, &peak, now))
        ;
    atomic_fetch_add(&c->ran[it->i], 1);
    switch (c->beh[it->i]) {
    case B_FAIL:
        aiometer_fail(c->code[it->i]);
        break;
    case B_SLEEP:
        rc = aiometer_sleep(c->sleep_s[it->i]);
        REL_CHECK(rc == 0 || (rc == ECANCELED && aiometer_cancelled()), "sleep: %d", rc);
        break;
    case B_FD:
        fd = aiometer_cancel_fd();
        if (fd >= 0) {
            struct pollfd p = { fd, POLLIN, 0 };
            int r;
            /* libFuzzer's timeout alarm interrupts system calls in any
             * thread: EINTR is not an answer. */
            while ((r = poll(&p, 1, 2)) < 0 && errno == EINTR)
                ;
            REL_CHECK(r >= 0, "poll: errno %d", errno);
            REL_CHECK(r == 0 || aiometer_cancelled(),
                      "cancel fd %d readable (revents %#x), call not cancelled", fd,
                      (unsigned)p.revents);
        } else {
            REL_CHECK(errno == EMFILE || errno == ENFILE || errno == ENOMEM, "cancel_fd errno %d",
                      errno);
        }
        break;
    case B_NEST:
        if (nest_depth < 2) {
            atomic_int count = 0;
            void *args[2] = { &count, &count };
            aiometer_options o = { 0 };

            o.pool = c->pool;
            nest_depth++;
            rc = aiometer_run_on_each(inner_job, args, 2, &o);
            nest_depth--;
            REL_CHECK(rc == 0 && atomic_load(&count) == 2, "nested call: %d, %d ran", rc,
                      atomic_load(&count));
        }
        break;
    case B_SPIN: {
        uint64_t end = rel_now_ns() + 10000;
        while (rel_now_ns() < end && !aiometer_cancelled())
            ;
        break;
    }
    case B_BADSLEEP:
        REL_CHECK(aiometer_sleep((double)NAN) == EINVAL, "sleep(NaN)");
        REL_CHECK(aiometer_sleep(-1e-9) == EINVAL, "sleep(-1e-9)");
        REL_CHECK(aiometer_sleep(-(double)INFINITY) == EINVAL, "sleep(-inf)");
        break;
    default:
        break;
    }
    atomic_fetch_sub(&c->running, 1);
    return value_of(it->i);
}

static int source_next(void *state, void **arg)
{
    struct call *c = state;

    if (c->pulled == c->src_fail_at)
        return c->src_code;
    if (c->pulled == c->n)
        return AIOMETER_DONE;
    *arg = &c->items[c->pulled++];
    return 0;
}

static void on_progress(const aiometer_progress *p, void *user)
{
    struct call *c = user;

    REL_CHECK(atomic_fetch_add(&c->in_progress, 1) == 0, "progress callbacks overlap");
    REL_CHECK(p->started <= MAXJOBS && p->completed <= p->started + MAXJOBS,
              "progress counts out of range");
    atomic_fetch_sub(&c->in_progress, 1);
}

/* ---- the model of the options ---------------------------------------------------------- */

/* What the header says about the options: 1 if valid. */
static int opts_valid(const aiometer_options *o)
{
    double r = o->max_per_second;

    if (r != r || r < 0 || (r > 1e9 && r != (double)INFINITY))
        return 0;
    if (o->timeout != o->timeout || o->timeout < 0)
        return 0;
    if (o->progress_interval != o->progress_interval || o->progress_interval < 0)
        return 0;
    return 1;
}

static int has_deadline(const aiometer_options *o)
{
    return o->timeout > 0 && o->timeout != (double)INFINITY;
}

/* Keep each input quick: a call whose rate could make a job wait more
 * than a few milliseconds gets a short deadline (a valid one, so the call
 * still runs).  Bursts do not save it: the header holds T * (burst - 1) at
 * 2^62 ns, so with a slow rate even a huge burst may allow only two
 * starts. */
static void bound_time(aiometer_options *o, size_t n)
{
    double r = o->max_per_second;

    if (!opts_valid(o) || n < 2)
        return;
    if (r > 0 && r < 200 && !(has_deadline(o) && o->timeout <= 0.05))
        o->timeout = 0.01;
}

/* ---- checks ---------------------------------------------------------------------------- */

static size_t count_ran(struct call *c, size_t upto, int *any_fail)
{
    size_t ran = 0;

    *any_fail = 0;
    for (size_t i = 0; i < upto; i++) {
        int r = atomic_load(&c->ran[i]);
        REL_CHECK(r <= 1, "job %zu ran %d times", i, r);
        ran += (size_t)r;
        if (r && job_fails(c, i))
            *any_fail = 1;
    }
    return ran;
}

/* Is rc an error some job (or the source) of this call could have
 * caused? */
static int is_job_error(struct call *c, int rc, size_t upto)
{
    for (size_t i = 0; i < upto; i++)
        if (atomic_load(&c->ran[i]) && job_fails(c, i) && effective_code(c->code[i]) == rc)
            return 1;
    if (c->src_fail_at != SIZE_MAX && c->pulled == c->src_fail_at &&
        effective_code(c->src_code) == rc)
        return 1;
    return 0;
}

static void check_common(struct call *c, int rc, const aiometer_options *o, size_t total,
                         const aiometer_stats *st, int valid)
{
    int any_fail;
    size_t ran = count_ran(c, total, &any_fail);

    if (!valid) {
        REL_CHECK(rc == EINVAL, "invalid options accepted: %d", rc);
        REL_CHECK(ran == 0, "EINVAL but %zu jobs ran", ran);
        return;
    }
    if (rc == 0) {
        REL_CHECK(ran == total && !any_fail, "rc 0: %zu of %zu ran, failure %d", ran, total,
                  any_fail);
    } else if ((rc == ENOMEM || rc == EAGAIN) && !is_job_error(c, rc, total)) {
        /* (A source may fail with EAGAIN itself: then jobs may have run.) */
        REL_CHECK(ran == 0, "refused with %d, but %zu jobs ran", rc, ran);
        return;
    } else if (rc == ETIMEDOUT) {
        REL_CHECK(has_deadline(o), "ETIMEDOUT without a deadline");
    } else {
        REL_CHECK(is_job_error(c, rc, total), "rc %d is no job's error", rc);
    }
    REL_CHECK(st->started == ran, "stats.started %zu, ran %zu", st->started, ran);
    REL_CHECK(st->completed + st->failed == ran, "stats completed+failed != %zu", ran);
    {
        size_t cap = c->pool ? aiometer_pool_threads(c->pool) : DEFAULT_THREADS;
        if (o->max_at_once && o->max_at_once < cap)
            cap = o->max_at_once;
        REL_CHECK(atomic_load(&c->peak) <= cap, "%zu jobs ran at once, cap %zu",
                  atomic_load(&c->peak), cap);
        REL_CHECK(st->peak_running <= cap, "stats.peak_running %zu, cap %zu", st->peak_running,
                  cap);
    }
}

/* ---- one input -------------------------------------------------------------------------- */

enum { OP_EACH, OP_SOURCE, OP_ALL, OP_ANY, OP_AMAP, OP_AMAP_SOURCE, OP_HOSTILE, OP_COUNT };

static void read_call(struct input *in, struct call *c, aiometer_pool *pool)
{
    memset(c, 0, sizeof(*c));
    c->pool = pool;
    c->n = take8(in) % (MAXJOBS + 1);
    for (size_t i = 0; i < MAXJOBS; i++) {
        uint8_t b = i < c->n ? take8(in) : 0;
        c->beh[i] = b % B_KINDS;
        c->code[i] = fail_codes[(b / B_KINDS) % NCODES];
        c->sleep_s[i] = 1e-5 * (double)(b % 64);
        c->items[i].c = c;
        c->items[i].i = i;
        c->args[i] = &c->items[i];
        c->jobs[i].fn = job;
        c->jobs[i].arg = &c->items[i];
        c->results[i] = (void *)(uintptr_t)1;
        atomic_init(&c->ran[i], 0);
    }
    {
        uint8_t s = take8(in);
        c->src_fail_at = s & 0x80 ? (size_t)(s & 0x0f) : SIZE_MAX;
        c->src_code = s & 0x40 ? -(int)(s & 0x0f) - 2 : (int)(s & 0x3f);
        if (c->src_code == 0 || c->src_code == AIOMETER_DONE)
            c->src_code = EIO;
    }
    atomic_init(&c->running, 0);
    atomic_init(&c->peak, 0);
    atomic_init(&c->in_progress, 0);
}

static void read_opts(struct input *in, aiometer_options *o, struct call *c, aiometer_stats *st)
{
    uint8_t flags = take8(in);

    memset(o, 0, sizeof(*o));
    o->pool = c->pool;
    o->max_at_once = take_size(in);
    if (flags & 1)
        o->max_per_second = take_double(in, 1e3);
    if (flags & 2)
        o->max_burst = take_size(in);
    if (flags & 4)
        o->timeout = take_double(in, 1e-4);
    if (flags & 8)
        o->limiter = shared_lim;
    o->ordered = (flags >> 4) & 1;
    if (flags & 0x20)
        o->max_buffered = take_buffered(in);
    if (flags & 0x40) {
        o->progress = on_progress;
        o->progress_arg = c;
        o->progress_interval = take_double(in, 1e-5);
    }
    o->stats = st;
}

/* The amap consumer: a script of next / cancel / close from the input. */
static void run_amap(struct input *in, struct call *c, aiometer_options *o, int valid, int source)
{
    aiometer_amap *it = (aiometer_amap *)(uintptr_t)1;
    int seen[MAXJOBS] = { 0 }, rc, errors = 0, cancelled = 0, ended = 0;
    size_t last = 0, taken = 0, index;
    void *r;

    if (source)
        rc = aiometer_amap_open_source(&it, job, source_next, c, o);
    else
        rc = aiometer_amap_open(&it, job, c->args, c->n, o);
    if (!valid) {
        REL_CHECK(rc == EINVAL, "amap_open accepted invalid options: %d", rc);
        REL_CHECK(it == (aiometer_amap *)(uintptr_t)1, "amap_open wrote *it on EINVAL");
        return;
    }
    if (rc == ENOMEM || rc == EAGAIN) {
        int f;
        REL_CHECK(count_ran(c, MAXJOBS, &f) == 0, "refused amap ran jobs");
        return;
    }
    REL_CHECK(rc == 0, "amap_open returned %d", rc);
    for (int step = 0; step < 64 && !ended; step++) {
        uint8_t act = take8(in) % 8;

        if (act == 6 && !cancelled) {
            REL_CHECK(aiometer_amap_cancel(it) == 0, "amap_cancel");
            cancelled = 1;
            continue;
        }
        if (act == 7)
            break; /* close early */
        rc = aiometer_amap_next(it, &r, &index);
        if (rc == 0) {
            REL_CHECK(index < c->n, "index %zu", index);
            REL_CHECK(!seen[index]++, "result %zu twice", index);
            REL_CHECK(r == value_of(index), "wrong result");
            REL_CHECK(atomic_load(&c->ran[index]) == 1 && !job_fails(c, index),
                      "delivered a job that did not succeed");
            REL_CHECK(!o->ordered || taken == 0 || index > last, "out of order");
            last = index;
            taken++;
        } else if (rc > 0 && rc != ECANCELED && rc != ETIMEDOUT) {
            REL_CHECK(!errors++, "failure reported twice");
            REL_CHECK(is_job_error(c, rc, c->n), "next: %d is no job's error", rc);
        } else {
            REL_CHECK(rc == AIOMETER_DONE || (rc == ECANCELED && cancelled) ||
                          (rc == ETIMEDOUT && has_deadline(o)),
                      "next ended with %d", rc);
            ended = 1;
            for (size_t i = 0; i < c->n; i++) {
                int ok = atomic_load(&c->ran[i]) == 1 && !job_fails(c, i);
                REL_CHECK(ok == (seen[i] == 1), "job %zu: succeeded %d, delivered %d", i, ok,
                          seen[i]);
            }
            REL_CHECK(aiometer_amap_next(it, &r, &index) == rc, "end not repeated");
        }
    }
    rc = aiometer_amap_close(it);
    {
        int f;
        count_ran(c, MAXJOBS, &f);
    }
    REL_CHECK(rc == 0 || (rc > 0 && !errors && is_job_error(c, rc, c->n)) ||
                  (rc == ETIMEDOUT && has_deadline(o) && !ended),
              "amap_close returned %d", rc);
}

/* Hostile arguments with valid options: NULL pointers and zero counts. */
static void run_hostile(struct input *in, struct call *c)
{
    uint8_t sel = take8(in);
    aiometer_options o = { 0 };
    aiometer_amap *it;
    int f, rc = 0;

    o.pool = c->pool;
    switch (sel % 8) {
    case 0: rc = aiometer_run_on_each(NULL, c->args, c->n, &o); break;
    case 1: rc = c->n ? aiometer_run_on_each(job, NULL, c->n, &o) : EINVAL; break;
    case 2: rc = aiometer_run_any(c->jobs, 0, NULL, NULL, &o); break;
    case 3:
        c->jobs[c->n ? c->n - 1 : 0].fn = NULL;
        rc = aiometer_run_all(c->jobs, c->n ? c->n : 1, c->results, &o);
        break;
    case 4: rc = aiometer_amap_open(NULL, job, c->args, c->n, &o); break;
    case 5: rc = aiometer_amap_open_source(&it, job, NULL, c, &o); break;
    case 6: rc = aiometer_run_on_each_source(job, NULL, c, &o); break;
    default: rc = aiometer_amap_next(NULL, (void **)&it, NULL); break;
    }
    REL_CHECK(rc == EINVAL, "hostile case %d returned %d", sel % 8, rc);
    REL_CHECK(count_ran(c, MAXJOBS, &f) == 0, "hostile case %d ran jobs", sel % 8);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = { data, size };
    uint8_t head = take8(&in);
    int op = head % OP_COUNT, valid, rc;
    aiometer_pool *pool = (head / OP_COUNT) % 3 == 0 ? NULL : (head / OP_COUNT) % 3 == 1 ? pool1
                                                                                        : pool3;
    struct call c;
    aiometer_options o;
    aiometer_stats st;
    size_t total, index;
    void *result;

    read_call(&in, &c, pool);
    read_opts(&in, &o, &c, &st);
    bound_time(&o, c.n);
    valid = opts_valid(&o);
    memset(&st, 0, sizeof(st));

    switch (op) {
    case OP_EACH:
        rc = aiometer_run_on_each(job, c.args, c.n, &o);
        check_common(&c, rc, &o, c.n, &st, valid);
        break;
    case OP_SOURCE:
        rc = aiometer_run_on_each_source(job, source_next, &c, &o);
        total = c.pulled;
        check_common(&c, rc, &o, total, &st, valid);
        if (valid && rc == 0)
            REL_CHECK(c.pulled == c.n, "source: rc 0 after %zu of %zu", c.pulled, c.n);
        break;
    case OP_ALL:
        rc = aiometer_run_all(c.jobs, c.n, c.results, &o);
        check_common(&c, rc, &o, c.n, &st, valid);
        if (valid && rc != ENOMEM && rc != EAGAIN)
            for (size_t i = 0; i < c.n; i++)
                REL_CHECK(atomic_load(&c.ran[i]) ? c.results[i] == value_of(i)
                                                 : c.results[i] == NULL,
                          "run_all results[%zu]", i);
        break;
    case OP_ANY: {
        int any_fail;
        size_t ran;

        result = NULL;
        index = SIZE_MAX;
        rc = aiometer_run_any(c.jobs, c.n, &result, &index, &o);
        ran = count_ran(&c, c.n, &any_fail);
        if (c.n == 0 || !valid) {
            REL_CHECK(rc == EINVAL && ran == 0, "run_any: %d with n %zu, valid %d", rc, c.n,
                      valid);
        } else if (rc == 0) {
            REL_CHECK(index < c.n && atomic_load(&c.ran[index]) == 1 && !job_fails(&c, index),
                      "run_any: winner %zu did not succeed", index);
            REL_CHECK(result == value_of(index), "run_any: wrong result");
        } else if (rc == ETIMEDOUT) {
            REL_CHECK(has_deadline(&o), "run_any: ETIMEDOUT without a deadline");
        } else if (rc == ENOMEM || rc == EAGAIN) {
            REL_CHECK(ran == 0, "run_any refused but ran jobs");
        } else {
            /* Every job failed: they all ran. */
            REL_CHECK(ran == c.n && is_job_error(&c, rc, c.n), "run_any: %d, %zu of %zu ran", rc,
                      ran, c.n);
            for (size_t i = 0; i < c.n; i++)
                REL_CHECK(job_fails(&c, i), "run_any: %d but job %zu succeeded", rc, i);
        }
        break;
    }
    case OP_AMAP:
    case OP_AMAP_SOURCE:
        o.stats = NULL;
        run_amap(&in, &c, &o, valid, op == OP_AMAP_SOURCE);
        break;
    default:
        run_hostile(&in, &c);
        break;
    }
    return 0;
}
