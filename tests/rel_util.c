/*
 * rel_util.c - helpers shared by the reliability programs; see rel_util.h.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "rel_util.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void rel_fail_at(const char *file, int line, const char *expr, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s:%d: FAILED: %s: ", file, line, expr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(NULL);
    abort();
}

uint64_t rel_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

double rel_now(void)
{
    return (double)rel_now_ns() / 1e9;
}

void rel_sleep(double seconds)
{
    uint64_t until;
    struct timespec ts;

    if (!(seconds > 0))
        return;
    /* An absolute deadline, so that signals neither shorten nor lengthen
     * the sleep. */
    until = rel_now_ns() + (uint64_t)(seconds * 1e9);
    ts.tv_sec = (time_t)(until / UINT64_C(1000000000));
    ts.tv_nsec = (long)(until % UINT64_C(1000000000));
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* Whether thread `tid` of this process is the library's sentinel, which
 * lingers for a second after the last call that ran alone
 * (src/sentinel.c); check_handoff.c checks that it leaves. */
static int is_sentinel(const char *tid)
{
    char path[300], name[32] = "";
    FILE *f;

    snprintf(path, sizeof path, "/proc/self/task/%s/comm", tid);
    f = fopen(path, "re");
    if (!f)
        return 0;
    if (!fgets(name, sizeof name, f))
        name[0] = 0;
    fclose(f);
    return strcmp(name, "aio-sentinel\n") == 0;
}

static int count_threads(int but_sentinel)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;

    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.' && !(but_sentinel && is_sentinel(e->d_name)))
            n++;
    closedir(d);
    return n;
}

int rel_thread_count(void)
{
    return count_threads(0);
}

int rel_thread_count_but_sentinel(void)
{
    return count_threads(1);
}

int rel_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    /* The directory stream's own descriptor was listed too. */
    return n - 1;
}

int rel_wait_thread_count(int want, double seconds)
{
    return rel_wait_thread_count_of(rel_thread_count, want, seconds);
}

int rel_wait_thread_count_of(int (*count)(void), int want, double seconds)
{
    double end = rel_now() + seconds;
    int n;

    for (;;) {
        n = count();
        if (n <= want || rel_now() >= end)
            return n;
        rel_sleep(0.001);
    }
}

/* What the watchdog prints.  Written before alarm() is armed and read only
 * by the handler, so a plain pointer is enough. */
static const char *volatile watchdog_what = "";

static void watchdog_fired(int sig)
{
    static const char head[] = "\nWATCHDOG: still running after its time limit: ";
    const char *w = watchdog_what;

    (void)sig;
    /* Only async-signal-safe calls here: write() and _exit(). */
    if (write(STDERR_FILENO, head, sizeof(head) - 1) < 0 ||
        write(STDERR_FILENO, w, strlen(w)) < 0 || write(STDERR_FILENO, "\n", 1) < 0)
        _exit(3);
    _exit(3);
}

void rel_watchdog(unsigned seconds, const char *what)
{
    struct sigaction sa;

    watchdog_what = what ? what : "";
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = watchdog_fired;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    alarm(seconds);
}

uint64_t rel_rand(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

size_t rel_below(uint64_t *state, size_t n)
{
    return (size_t)(rel_rand(state) % n);
}

double rel_env_double(const char *name, double dflt)
{
    const char *s = getenv(name);
    char *end;
    double v;

    if (!s || !*s)
        return dflt;
    errno = 0;
    v = strtod(s, &end);
    if (errno || *end || !(v > 0) || !isfinite(v))
        return dflt;
    return v;
}
