/* host_owner.c - who owns a slot of a named limiter, whether that owner is
 * still alive, which boot this is, and the futex waiters sleep on.
 *
 * An owner is a process, named by its pid and its start time.  The pid alone
 * would not do: after the owner dies its pid may be given to a new process,
 * which would then seem to hold the dead one's slots for ever.  The start
 * time (field 22 of /proc/PID/stat, clock ticks after boot) tells the two
 * apart; a new process with the same pid started within the same clock
 * tick as the dead one would be needed to fool it.  All processes sharing a
 * name must see one another in /proc (one pid namespace). */
#include "config.h"
#include "host_limiter.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/syscall.h>
#ifdef HAVE_LINUX_FUTEX_H
#include <linux/futex.h>
#else
/* The kernel's futex operation numbers are ABI, fixed for good; a libc
 * without the kernel's headers (musl-gcc) still has the system call. */
#define FUTEX_WAIT 0
#define FUTEX_WAKE 1
#endif
#endif

#define PID_BITS 22
#define PID_MASK ((UINT64_C(1) << PID_BITS) - 1)

/* Read the state letter and the start time of a process; 0 or an errno
 * value (ENOENT: no such process, as far as /proc says). */
static int proc_stat(long pid, char *state, uint64_t *start)
{
    char path[64], buf[1024];
    const char *p;
    unsigned long long st;
    ssize_t n;
    int fd, i;

    if (pid > 0)
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    else
        snprintf(path, sizeof path, "/proc/self/stat");
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return n < 0 ? errno : ENOENT;
    buf[n] = '\0';
    /* The command name is in parentheses and may hold anything, ')' and
     * spaces included: the fields start after the last ')'. */
    p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return EIO;
    p += 2;
    *state = *p;
    /* The state is field 3; the start time is field 22. */
    for (i = 3; i < 22; i++) {
        p = strchr(p, ' ');
        if (!p)
            return EIO;
        p++;
    }
    if (sscanf(p, "%llu", &st) != 1)
        return EIO;
    *start = st;
    return 0;
}

static uint64_t token_of(long pid, uint64_t start)
{
    return (start << PID_BITS) | ((uint64_t)pid & PID_MASK);
}

/* The token is cached per process; a forked child is a new owner, so the
 * atfork handler forgets the parent's. */
static _Atomic uint64_t self_token;
static pthread_once_t self_once = PTHREAD_ONCE_INIT;

static void forget_self(void)
{
    atomic_store_explicit(&self_token, 0, memory_order_relaxed);
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, forget_self);
}

uint64_t aiometer__host_self(void)
{
    uint64_t t = atomic_load_explicit(&self_token, memory_order_relaxed);
    uint64_t start;
    char state;
    int err;

    if (t)
        return t;
    pthread_once(&self_once, register_atfork);
    err = proc_stat(0, &state, &start);
    if (err) {
        errno = err;
        return 0;
    }
    t = token_of(getpid(), start);
    atomic_store_explicit(&self_token, t, memory_order_relaxed);
    return t;
}

int aiometer__host_alive(uint64_t token)
{
    long pid = (long)(token & PID_MASK);
    uint64_t start;
    char state;
    int err;

    if (pid == 0)
        return 0;
    err = proc_stat(pid, &state, &start);
    if (!err)
        return state != 'Z' && state != 'X' && token_of(pid, start) == token;
    /* /proc hides the process (hidepid) or is not there: ask the kernel
     * whether the pid exists at all; pid reuse cannot be seen this way, so
     * an existing pid counts as the owner. */
    return !(kill((pid_t)pid, 0) < 0 && errno == ESRCH);
}

void aiometer__host_boot_id(uint64_t id[5])
{
    char buf[41] = { 0 };
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    ssize_t n = -1;

    if (fd >= 0) {
        n = read(fd, buf, 36);
        close(fd);
    }
    if (n != 36)
        memset(buf, 0, sizeof buf);
    memcpy(id, buf, 40);
}

void aiometer__host_futex_wait(_Atomic uint32_t *word, uint32_t val, long ns)
{
#ifdef __linux__
    struct timespec ts = { 0, ns };

    /* Not FUTEX_PRIVATE_FLAG: the word is in memory shared between
     * processes.  EAGAIN (the word changed), EINTR and ETIMEDOUT all just
     * send the caller round its loop again. */
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, val, &ts, NULL, 0);
#else
    struct timespec ts = { 0, ns };

    if (atomic_load(word) == val)
        nanosleep(&ts, NULL);
#endif
}

void aiometer__host_futex_wake(_Atomic uint32_t *word, int n)
{
#ifdef __linux__
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0);
#else
    (void)word;
    (void)n;
#endif
}
