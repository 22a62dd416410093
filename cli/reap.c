/* reap.c - the processes a job leaves behind, once its job is over.
 *
 * aiometer is a child subreaper (main), so whatever a job's command leaves
 * running becomes our child when the command ends.  While the job is
 * supervised, its thread reaps the members of its process group (spawn.c);
 * one that outlives its job would stay a zombie until aiometer exits.  A
 * thread of our own, started with the first job, reaps them: it looks
 * every SWEEP_MS.
 *
 * It must never take the exit status of a job's command, which that job's
 * thread waits for with waitpid(pid).  So each command is on the `own`
 * list from its spawn until its job has reaped it, and a sweep looks at a
 * dead child without reaping it (waitid with WNOWAIT), and reaps it only
 * if it is not on the list.  A command that ends before its pid is on the
 * list must not be taken for a leftover: a spawn and its listing hold
 * spawn_lock for reading, a sweep holds it for writing, so a sweep sees
 * every command that exists on the list.
 *
 * Lock order: spawn_lock, then own_lock.  own_lock guards the list, whose
 * nodes live on the job threads' stacks. */
#include "config.h"
#include "cli.h"

#include <sys/wait.h>
#include <time.h>

/* How often to look for dead leftovers: a zombie lasts at most about
 * this long, and an idle run wakes this often. */
#define SWEEP_MS 100

/* Writers first, where the library offers it: a steady stream of spawns
 * must not keep the sweeps out for good. */
#ifdef PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP
static pthread_rwlock_t spawn_lock = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
#else
static pthread_rwlock_t spawn_lock = PTHREAD_RWLOCK_INITIALIZER;
#endif
static pthread_mutex_t own_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cli_child *own;
static pthread_once_t reaper_once = PTHREAD_ONCE_INIT;

static int is_own(pid_t pid)
{
    struct cli_child *c;
    int found = 0;

    pthread_mutex_lock(&own_lock);
    for (c = own; c && !found; c = c->next)
        found = c->pid == pid;
    pthread_mutex_unlock(&own_lock);
    return found;
}

/* Reap the dead children that are no job's command.  waitid reports the
 * same dead child until it is reaped, so a job's command that is dead and
 * not yet reaped by its thread (which is about to) ends the sweep: what
 * is behind it waits for the next one. */
static void sweep(void)
{
    siginfo_t si;

    pthread_rwlock_wrlock(&spawn_lock);
    for (;;) {
        si.si_pid = 0;
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 || si.si_pid == 0)
            break;
        if (is_own(si.si_pid))
            break;
        /* No spawn runs now, so the pid is still this leftover's (or,
         * if a job's thread reaped it meanwhile as a member of its group,
         * nobody's: ECHILD). */
        (void)waitpid(si.si_pid, NULL, WNOHANG);
    }
    pthread_rwlock_unlock(&spawn_lock);
}

static void *reaper(void *arg)
{
    const struct timespec pause = {0, SWEEP_MS * 1000000L};

    (void)arg;
    for (;;) {
        sweep();
        nanosleep(&pause, NULL);
    }
    return NULL;
}

/* The thread inherits the job thread's signal mask, which blocks SIGINT
 * and SIGTERM: they stay the signal thread's.  If it cannot start,
 * leftovers stay zombies until we exit, as they would without it. */
static void start_reaper(void)
{
    pthread_t tid;

    if (pthread_create(&tid, NULL, reaper, NULL) == 0)
        pthread_detach(tid);
}

void cli_reap_begin(void)
{
    pthread_once(&reaper_once, start_reaper);
    pthread_rwlock_rdlock(&spawn_lock);
}

void cli_reap_end(struct cli_child *c, pid_t pid)
{
    c->pid = pid;
    c->prev = c->next = NULL;
    if (pid > 0) {
        pthread_mutex_lock(&own_lock);
        c->next = own;
        if (own)
            own->prev = c;
        own = c;
        pthread_mutex_unlock(&own_lock);
    }
    pthread_rwlock_unlock(&spawn_lock);
}

void cli_reap_forget(struct cli_child *c)
{
    if (c->pid <= 0)
        return;
    pthread_mutex_lock(&own_lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        own = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&own_lock);
    c->pid = 0;
}
