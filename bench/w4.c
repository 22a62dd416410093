/*
 * w4.c - W4, memory at scale: 10,000,000 tiny jobs, peak resident memory.
 *
 * Each case runs in a fresh process (this program run again with
 * --w4-child CASE), so that the arrays of the other workloads are not in
 * its peak.  The child reports its own VmHWM from /proc/self/status: the
 * high-water mark of its address space since exec, which is exactly the
 * peak RSS of the case.  (A parent's wait4 ru_maxrss is no good here: on
 * Linux, exec folds the RSS of the image it replaces, the parent's copy
 * after fork, into the child's figure.)
 *
 * Cases: libaiometer's aiometer_run_on_each_source and
 * aiometer_amap_open_source, each on its own 2-thread pool, with a source
 * that hands out 0, 1, 2, ...; the serial loop pulling the same source on
 * one thread (the floor of any process); GLib pushing every job to a
 * 2-thread GThreadPool up front, as GLib's API requires.
 */
#include <config.h>

#include "bench.h"

#include <errno.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <aiometer.h>
#ifdef BENCH_HAVE_GLIB
#include <glib.h>
#endif

extern char **environ;

#define W4_DEFAULT_N 10000000u
#define W4_THREADS 2

/* The jobs count: BENCH_W4_N overrides it for a quick try. */
static size_t w4_n(void)
{
    const char *s = getenv("BENCH_W4_N");
    if (s && *s) {
        char *end;
        unsigned long long v = strtoull(s, &end, 10);
        if (*end == '\0' && v > 0)
            return (size_t)v;
    }
    return W4_DEFAULT_N;
}

/* ---- the child side ------------------------------------------------------ */

typedef struct w4_source {
    size_t next, n;
} w4_source;

static int w4_next(void *state, void **arg)
{
    w4_source *s = state;
    if (s->next == s->n)
        return AIOMETER_DONE;
    *arg = (void *)s->next++;
    return 0;
}

static void *w4_job(void *arg)
{
    return (void *)(2 * (uintptr_t)arg + 1);
}

/* Peak resident set of this process since exec, in KiB. */
static long vm_hwm_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

#ifdef BENCH_HAVE_GLIB
static atomic_size_t w4_glib_done;

static void w4_glib_job(gpointer data, gpointer user)
{
    (void)user;
    (void)w4_job((void *)((uintptr_t)data - 1));
    atomic_fetch_add_explicit(&w4_glib_done, 1, memory_order_relaxed);
}
#endif

int bench_w4_child(const char *which)
{
    const size_t n = w4_n();
    w4_source src = {0, n};
    aiometer_pool *pool = NULL;
    aiometer_stats st;
    aiometer_options o = {0};
    o.stats = &st;

    if (strcmp(which, "source") == 0 || strcmp(which, "amap") == 0) {
        bench_check(aiometer_pool_create(&pool, W4_THREADS), "aiometer_pool_create(2)");
        o.pool = pool;
    }
    long hwm0 = vm_hwm_kib();
    uint64_t t0 = bench_now_ns();

    if (strcmp(which, "source") == 0) {
        bench_check(aiometer_run_on_each_source(w4_job, w4_next, &src, &o),
                    "aiometer_run_on_each_source");
        if (st.completed != n || st.started != n)
            bench_die("W4 source: %zu started, %zu completed of %zu", st.started, st.completed,
                      n);
    } else if (strcmp(which, "amap") == 0) {
        aiometer_amap *it;
        void *res;
        size_t idx, count = 0;
        uint64_t sum = 0;
        int err;
        bench_check(aiometer_amap_open_source(&it, w4_job, w4_next, &src, &o),
                    "aiometer_amap_open_source");
        while ((err = aiometer_amap_next(it, &res, &idx)) == 0) {
            if (idx >= n || (uintptr_t)res != 2 * idx + 1)
                bench_die("W4 amap: result %p for index %zu", res, idx);
            sum += (uintptr_t)res;
            count++;
        }
        if (err != AIOMETER_DONE)
            bench_die("W4 amap: aiometer_amap_next: %s", aiometer_strerror(err));
        bench_check(aiometer_amap_close(it), "aiometer_amap_close");
        /* The sum of the first n odd numbers is n squared. */
        if (count != n || sum != (uint64_t)n * n)
            bench_die("W4 amap: %zu results, sum %llu", count, (unsigned long long)sum);
    } else if (strcmp(which, "serial") == 0) {
        void *(*volatile fn)(void *) = w4_job;
        void *arg;
        uint64_t sum = 0;
        while (w4_next(&src, &arg) == 0)
            sum += (uintptr_t)fn(arg);
        if (sum != (uint64_t)n * n)
            bench_die("W4 serial: sum %llu", (unsigned long long)sum);
    } else if (strcmp(which, "glib") == 0) {
#ifdef BENCH_HAVE_GLIB
        GError *error = NULL;
        GThreadPool *gp = g_thread_pool_new(w4_glib_job, NULL, W4_THREADS, FALSE, &error);
        if (gp == NULL)
            bench_die("g_thread_pool_new: %s", error->message);
        for (size_t i = 0; i < n; i++)
            g_thread_pool_push(gp, (gpointer)(i + 1), NULL);
        g_thread_pool_free(gp, FALSE, TRUE);
        if (atomic_load(&w4_glib_done) != n)
            bench_die("W4 glib: %zu jobs ran", atomic_load(&w4_glib_done));
#else
        bench_die("W4 glib: GLib not built in");
#endif
    } else {
        bench_die("unknown W4 case \"%s\"", which);
    }

    double secs = (double)(bench_now_ns() - t0) * 1e-9;
    long hwm = vm_hwm_kib();
    if (pool)
        bench_check(aiometer_pool_destroy(pool), "aiometer_pool_destroy");
    printf("hwm0_kib=%ld hwm_kib=%ld seconds=%.6f\n", hwm0, hwm, secs);
    return 0;
}

/* ---- the parent side ----------------------------------------------------- */

typedef struct w4_result {
    double hwm0_mib, hwm_mib, seconds;
} w4_result;

static w4_result w4_spawn(const char *which)
{
    int fd[2];
    pid_t pid;
    posix_spawn_file_actions_t fa;
    /* /proc/self/exe is this very binary whatever argv[0] or PATH say. */
    char *const argv[] = {(char *)bench_self, (char *)"--w4-child", (char *)which, NULL};

    if (pipe(fd) != 0)
        bench_die("pipe: %s", strerror(errno));
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, fd[0]);
    posix_spawn_file_actions_addclose(&fa, fd[1]);
    int err = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ);
    if (err != 0)
        err = posix_spawn(&pid, bench_self, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fd[1]);
    if (err != 0)
        bench_die("cannot run %s again: %s", bench_self, strerror(err));

    char buf[256];
    size_t len = 0;
    ssize_t got;
    while (len < sizeof buf - 1 && (got = read(fd[0], buf + len, sizeof buf - 1 - len)) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            break;
        len += (size_t)got;
    }
    buf[len] = '\0';
    close(fd[0]);

    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    long hwm0, hwm;
    double secs;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
        sscanf(buf, "hwm0_kib=%ld hwm_kib=%ld seconds=%lf", &hwm0, &hwm, &secs) != 3)
        bench_die("W4 case %s failed (status 0x%x): %s", which, (unsigned)status, buf);
    return (w4_result){hwm0 / 1024.0, hwm / 1024.0, secs};
}

typedef struct w4_ctx {
    bench_series rss_src[IMPL_COUNT], rss_amap[IMPL_COUNT], rss0[IMPL_COUNT];
    bench_series ns_src[IMPL_COUNT], ns_amap[IMPL_COUNT];
    size_t n;
} w4_ctx;

static void w4_run(enum bench_impl impl, int rep, void *arg)
{
    w4_ctx *c = arg;
    w4_result r;
    (void)rep;
    switch (impl) {
    case IMPL_LIB:
        r = w4_spawn("source");
        bench_series_add(&c->rss_src[impl], r.hwm_mib);
        bench_series_add(&c->rss0[impl], r.hwm0_mib);
        bench_series_add(&c->ns_src[impl], r.seconds * 1e9 / (double)c->n);
        r = w4_spawn("amap");
        bench_series_add(&c->rss_amap[impl], r.hwm_mib);
        bench_series_add(&c->ns_amap[impl], r.seconds * 1e9 / (double)c->n);
        return;
    case IMPL_SERIAL:
        r = w4_spawn("serial");
        break;
    case IMPL_GLIB:
        r = w4_spawn("glib");
        break;
    default:
        return;
    }
    /* A baseline has one figure, shown beside both libaiometer cases. */
    bench_series_add(&c->rss_src[impl], r.hwm_mib);
    bench_series_add(&c->rss_amap[impl], r.hwm_mib);
    bench_series_add(&c->rss0[impl], r.hwm0_mib);
    bench_series_add(&c->ns_src[impl], r.seconds * 1e9 / (double)c->n);
    bench_series_add(&c->ns_amap[impl], r.seconds * 1e9 / (double)c->n);
}

static void w4_row(const char *label, bench_series *cols)
{
    bench_row row = {.label = label, .ratio = 1};
    memcpy(row.col, cols, sizeof row.col);
    bench_print_row(&row);
}

void bench_w4(void)
{
    w4_ctx *c = calloc(1, sizeof *c);
    if (c == NULL)
        bench_die("out of memory");
    c->n = w4_n();

    bench_title("W4 memory: N = %zu tiny jobs from a lazy source, %d threads; peak RSS "
                "of a fresh process per case",
                c->n, W4_THREADS);
    bench_header("libaiometer", "serial loop on source", "GLib push all");
    for (int r = 0; r < bench_reps; r++)
        bench_alternate(r, w4_run, c);
    w4_row("peak RSS MiB, run_on_each_src", c->rss_src);
    w4_row("peak RSS MiB, amap_open_src", c->rss_amap);
    w4_row("RSS MiB before the jobs", c->rss0);
    w4_row("ns/job, run_on_each_source", c->ns_src);
    w4_row("ns/job, amap_open_source", c->ns_amap);
    bench_note("target: peak RSS <= 8 MiB; the baselines' one figure is shown in both rows");
    free(c);
}
