/* pool_fork.c - the registry of pools, and what happens to them across
 * fork(): every pool's lock is held over the fork, and in the child each
 * pool forgets the threads and calls it had. */
#include "config.h"
#include "pool_impl.h"
#include "syscalls.h"

#include <stdlib.h>
#include <string.h>

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct aiometer__list registry = { &registry, &registry };
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void fork_prepare(void)
{
    aiometer__lock(&aiometer__default_pool_lock);
    aiometer__lock(&registry_lock);
    for (struct aiometer__list *n = registry.next; n != &registry; n = n->next)
        aiometer__lock(&aiometer__list_entry(n, aiometer_pool, reg)->lock);
}

static void fork_parent(void)
{
    for (struct aiometer__list *n = registry.next; n != &registry; n = n->next)
        aiometer__unlock(&aiometer__list_entry(n, aiometer_pool, reg)->lock);
    aiometer__unlock(&registry_lock);
    aiometer__unlock(&aiometer__default_pool_lock);
}

/* The child has only the thread that forked.  Each pool forgets the threads
 * and calls it had (they are not here: joining them would hang), and starts
 * new threads when next used, as a fresh pool would. */
static void fork_child(void)
{
    /* The forking thread may have been a pool thread: in the child it is
     * not (the job context is cleared by jobloop.c's own handler). */
    aiometer__on_worker = 0;
    aiometer__worker_pool = NULL;
    for (struct aiometer__list *n = registry.next; n != &registry; n = n->next) {
        aiometer_pool *p = aiometer__list_entry(n, aiometer_pool, reg);
        /* The tasks queued lived on the stacks of threads that are gone. */
        aiometer__list_init(&p->queue);
        p->nthreads = p->nidle = p->wakeups = p->relay = p->starting = 0;
        p->start_failed = 0;
        atomic_store(&p->calls, 0);
        /* Waiters on work_cv vanished with their threads; start it anew. */
        memset(&p->work_cv, 0, sizeof(p->work_cv));
        if (aiometer__cond_init(&p->work_cv) != 0)
            abort();
        aiometer__unlock(&p->lock);
    }
    aiometer__unlock(&registry_lock);
    aiometer__unlock(&aiometer__default_pool_lock);
}

static void register_atfork(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

void aiometer__pool_register(aiometer_pool *p)
{
    pthread_once(&atfork_once, register_atfork);
    aiometer__lock(&registry_lock);
    aiometer__list_append(&registry, &p->reg);
    aiometer__unlock(&registry_lock);
}

void aiometer__pool_unregister(aiometer_pool *p)
{
    aiometer__lock(&registry_lock);
    aiometer__list_remove(&p->reg);
    aiometer__unlock(&registry_lock);
}
