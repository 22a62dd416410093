/*
 * rel_util.h - small helpers shared by the reliability programs
 * (rel_hostile, rel_faults, rel_stress, rel_fuzz).
 *
 * These programs are not Check suites: they run under valgrind, in forked
 * children and inside libFuzzer, where a plain program that prints what went
 * wrong and exits non-zero is easier to reason about than a test framework.
 */
#ifndef AIOMETER_REL_UTIL_H
#define AIOMETER_REL_UTIL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Report a broken expectation with its place and abort, so that a run under
 * valgrind, a sanitizer or libFuzzer stops at the first failure with a core
 * or a stack trace. */
#define REL_CHECK(cond, ...)                                                    \
    do {                                                                        \
        if (!(cond))                                                            \
            rel_fail_at(__FILE__, __LINE__, #cond, __VA_ARGS__);                \
    } while (0)

_Noreturn void rel_fail_at(const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* CLOCK_MONOTONIC in nanoseconds and in seconds. */
uint64_t rel_now_ns(void);
double rel_now(void);
/* A plain sleep on CLOCK_MONOTONIC, resumed after signals. */
void rel_sleep(double seconds);

/* The number of threads of this process, from /proc/self/task; -1 if it
 * cannot be read (the caller then skips the check rather than pass it). */
int rel_thread_count(void);
/* The same, leaving out the library's sentinel thread (named
 * aio-sentinel): it lingers for a second after the last call that ran
 * alone, by design, and check_handoff.c checks that it then leaves. */
int rel_thread_count_but_sentinel(void);

/* Wait up to `seconds` for the thread count to come down to `want`: a
 * thread that has been joined is gone at once, but one that is still
 * leaving (a detached helper of the test) may take a moment.  Returns the
 * last count seen. */
int rel_wait_thread_count(int want, double seconds);
/* The same with another count (rel_thread_count_but_sentinel). */
int rel_wait_thread_count_of(int (*count)(void), int want, double seconds);

/* The number of open file descriptors of this process, from /proc/self/fd
 * (not counting the one used to read it); -1 if it cannot be read. */
int rel_fd_count(void);

/* A watchdog: if the process is still running `seconds` from now, print
 * `what` and exit with status 3.  Calling it again re-arms it; 0 disarms.
 * It uses alarm(), so each program may have only this one alarm. */
void rel_watchdog(unsigned seconds, const char *what);

/* splitmix64: one word of state, so each thread can have its own stream. */
uint64_t rel_rand(uint64_t *state);
/* A uniform integer in [0, n), n > 0. */
size_t rel_below(uint64_t *state, size_t n);

/* A factor read from the environment variable `name` (a positive number),
 * or `dflt` if it is unset or not a positive number. */
double rel_env_double(const char *name, double dflt);

#endif /* AIOMETER_REL_UTIL_H */
