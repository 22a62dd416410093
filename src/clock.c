/* clock.c - monotonic time helpers. */
#include "config.h"
#include "clock.h"

#include <math.h>

uint64_t aiometer__now_ns(void)
{
    struct timespec ts;
    /* CLOCK_MONOTONIC cannot fail with a valid pointer on any system we
     * build for, so the result is not checked. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * AIOMETER__NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* The latest second a timespec is given, about 4,350 years: beyond any
 * wait that matters, and well inside a signed 64-bit time_t, so a
 * far-future time (AIOMETER__NEVER) is clamped rather than wrapped to a
 * negative one. */
#define AIOMETER__MAX_TIMESPEC_S ((uint64_t)INT32_MAX * 64)
/* Just below 2^64 (about 1.845e19) ns: a double at or past it would not
 * convert to uint64_t, so from here up a duration is "never". */
#define AIOMETER__MAX_NS_DOUBLE 1.8e19

struct timespec aiometer__ns_to_timespec(uint64_t ns)
{
    struct timespec ts;
    uint64_t sec = ns / AIOMETER__NS_PER_S;
    if (sec > AIOMETER__MAX_TIMESPEC_S)
        sec = AIOMETER__MAX_TIMESPEC_S;
    ts.tv_sec = (time_t)sec;
    ts.tv_nsec = (long)(ns % AIOMETER__NS_PER_S);
    return ts;
}

uint64_t aiometer__seconds_to_ns(double seconds)
{
    double ns = ceil(seconds * 1e9);
    if (!(ns < AIOMETER__MAX_NS_DOUBLE))
        return AIOMETER__NEVER - 1;
    if (ns <= 0)
        return 0;
    return (uint64_t)ns;
}

uint64_t aiometer__add_ns(uint64_t a, uint64_t b)
{
    return a > AIOMETER__NEVER - b ? AIOMETER__NEVER : a + b;
}
