/* clock.h - monotonic time in integer nanoseconds.
 *
 * Every time the library decides anything by is CLOCK_MONOTONIC; wall-clock
 * time never enters.  Times are uint64_t nanoseconds since an arbitrary
 * origin (boot on Linux), so they never go negative and comparisons are
 * plain integer ones. */
#ifndef AIOMETER__CLOCK_H
#define AIOMETER__CLOCK_H

#include <stdint.h>
#include <time.h>

#define AIOMETER__NS_PER_S UINT64_C(1000000000)
/* A time that is never reached: used for "no deadline". */
#define AIOMETER__NEVER UINT64_MAX

uint64_t aiometer__now_ns(void);
struct timespec aiometer__ns_to_timespec(uint64_t ns);
/* Seconds (finite, >= 0) to nanoseconds, rounded up and saturated at
 * AIOMETER__NEVER - 1, so a huge timeout is "very far", never a wrap-around. */
uint64_t aiometer__seconds_to_ns(double seconds);
/* a + b, saturated at AIOMETER__NEVER. */
uint64_t aiometer__add_ns(uint64_t a, uint64_t b);

/* A pause for spin-waits on the clock or on a flag: tells the CPU (and a
 * hyperthread sibling) that we are only waiting. */
static inline void aiometer__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
