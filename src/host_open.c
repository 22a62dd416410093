/* host_open.c - opening a host-wide named limiter: the name, the shared
 * memory object and who may use it, initialising a new state (or one whose
 * creator died half way), and starting afresh after a reboot; and
 * aiometer_limiter_unlink. */
#include "config.h"
#include "aiometer.h"
#include "clock.h"
#include "host_limiter.h"
#include "limiter.h"
#include "syscalls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Processes share these words through the mapping: each must be a plain
 * lock-free atomic, never a lock hidden in the C library. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");
_Static_assert(sizeof(struct aiometer__host_shared) <= AIOMETER__HOST_HEADER, "header too big");
_Static_assert(AIOMETER__HOST_MAX_AT_ONCE < AIOMETER__HOST_SLOTS, "slot table too small");

/* How long an opener waits for another process that is initialising or
 * resetting the state before it says EAGAIN. */
#define SETUP_WAIT_NS UINT64_C(2000000000)

/* Room for "/aiometer." and a name of up to 200 characters. */
#define PATH_SIZE 224

static int valid_name(const char *name)
{
    size_t n;

    if (!name)
        return 0;
    for (n = 0; name[n]; n++) {
        char c = name[n];
        if (n >= 200 || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return n > 0;
}

static void shm_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "/aiometer.%s", name);
}

/* May this process use a state file it did not create?  Its owner may; a
 * member of its group may when the creator asked for group access. */
static int may_use(const struct stat *st)
{
    gid_t groups[256];
    int i, n;

    if (st->st_uid == geteuid())
        return 1;
    if ((st->st_mode & (S_IRGRP | S_IWGRP)) != (S_IRGRP | S_IWGRP))
        return 0;
    if (st->st_gid == getegid())
        return 1;
    n = getgroups(256, groups);
    for (i = 0; i < n; i++)
        if (groups[i] == st->st_gid)
            return 1;
    return 0;
}

static int same_boot(struct aiometer__host_shared *sh, const uint64_t id[5])
{
    int i;

    for (i = 0; i < 5; i++)
        if (atomic_load_explicit(&sh->boot[i], memory_order_acquire) != id[i])
            return 0;
    return 1;
}

static int same_boot_unknown(struct aiometer__host_shared *sh)
{
    static const uint64_t zero[5];

    return same_boot(sh, zero);
}

static void pause_1ms(void)
{
    struct timespec ts = { 0, 1000000L };

    nanosleep(&ts, NULL);
}

/* Claim a setup role (initialising, or starting afresh after a reboot)
 * held in *role: free, or held by a dead process.  The claim is a CAS from
 * the exact token seen, so two processes never both win it. */
static int claim(_Atomic uint64_t *role, uint64_t self)
{
    uint64_t r = atomic_load(role);

    return (r == 0 || !aiometer__host_alive(r)) && atomic_compare_exchange_strong(role, &r, self);
}

/* The process that creates the state, or the first to find it never
 * initialised (its creator died before it was done), fills the header and
 * stores magic last.  Others wait for magic. */
static int initialise(struct aiometer__host_shared *sh, _Atomic uint64_t *slots, uint32_t cap,
                      uint32_t key_buckets, uint64_t self)
{
    uint64_t until = aiometer__now_ns() + SETUP_WAIT_NS, id[5];
    uint32_t i;

    while (atomic_load_explicit(&sh->magic, memory_order_acquire) == 0) {
        if (claim(&sh->initializer, self)) {
            if (atomic_load_explicit(&sh->magic, memory_order_acquire) != 0)
                break;
            sh->version = AIOMETER__HOST_VERSION;
            sh->header_size = AIOMETER__HOST_HEADER;
            sh->size = AIOMETER__HOST_SIZE;
            sh->max_at_once = cap;
            sh->nslots = AIOMETER__HOST_SLOTS;
            sh->slots_offset = AIOMETER__HOST_HEADER;
            sh->keys_offset = AIOMETER__HOST_KEYS_OFFSET;
            /* The table of keys is zero, as the file was made: empty. */
            sh->key_buckets = key_buckets;
            aiometer__host_boot_id(id);
            for (i = 0; i < 5; i++)
                atomic_store(&sh->boot[i], id[i]);
            atomic_store(&sh->tat, 0);
            for (i = 0; i < cap; i++)
                atomic_store(&slots[i], 0);
            atomic_store_explicit(&sh->magic, AIOMETER__HOST_MAGIC, memory_order_release);
            atomic_store(&sh->initializer, 0);
            break;
        }
        if (aiometer__now_ns() > until)
            return EAGAIN;
        pause_1ms();
    }
    return 0;
}

/* CLOCK_MONOTONIC starts again at each boot: a schedule or a slot owner
 * from another boot means nothing now.  The first opener to see another
 * boot id takes the resetter role, clears the schedule and the slots, and
 * writes this boot's id last; nobody takes a slot or books before seeing
 * this boot's id, so nothing is cleared under a live owner. */
static int check_boot(struct aiometer__host_shared *sh, _Atomic uint64_t *slots, uint64_t self)
{
    uint64_t until = aiometer__now_ns() + SETUP_WAIT_NS, id[5];
    uint32_t i;

    aiometer__host_boot_id(id);
    /* Without a boot id (no /proc/sys), or with a state that never had
     * one, there is nothing to compare: never clear slots on a guess. */
    if (!(id[0] | id[1] | id[2] | id[3] | id[4]) || same_boot_unknown(sh))
        return 0;
    while (!same_boot(sh, id)) {
        if (claim(&sh->resetter, self)) {
            if (!same_boot(sh, id)) {
                atomic_store(&sh->tat, 0);
                for (i = 0; i < sh->max_at_once; i++)
                    atomic_store(&slots[i], 0);
                aiometer__host_keys_reset(
                    (struct aiometer__host_bucket *)((char *)sh + AIOMETER__HOST_KEYS_OFFSET),
                    sh->key_buckets);
                for (i = 0; i < 5; i++)
                    atomic_store_explicit(&sh->boot[i], id[i], memory_order_release);
                atomic_fetch_add(&sh->wake_seq, 1);
                aiometer__host_futex_wake(&sh->wake_seq, INT_MAX);
            }
            atomic_store(&sh->resetter, 0);
            break;
        }
        if (aiometer__now_ns() > until)
            return EAGAIN;
        pause_1ms();
    }
    return 0;
}


/* Check the header of an initialised state against this library and the
 * opener's cap and keys (key_buckets 0: not per key; max_keys 0: whatever
 * the state has): 0, EPROTO or EEXIST. */
static int check_header(struct aiometer__host_shared *sh, size_t cap, uint32_t key_buckets,
                        size_t max_keys)
{
    if (atomic_load_explicit(&sh->magic, memory_order_acquire) != AIOMETER__HOST_MAGIC)
        return EPROTO;
    if (sh->version != AIOMETER__HOST_VERSION || sh->header_size != AIOMETER__HOST_HEADER ||
        sh->size != AIOMETER__HOST_SIZE || sh->nslots != AIOMETER__HOST_SLOTS ||
        sh->slots_offset != AIOMETER__HOST_HEADER || sh->keys_offset != AIOMETER__HOST_KEYS_OFFSET ||
        sh->max_at_once > AIOMETER__HOST_MAX_AT_ONCE ||
        sh->key_buckets > AIOMETER__HOST_KEY_BUCKETS_MAX ||
        (sh->key_buckets & (sh->key_buckets - 1)) != 0 ||
        (sh->key_buckets && sh->max_at_once > AIOMETER__HOST_KEY_SLOTS))
        return EPROTO;
    if (cap && cap != sh->max_at_once)
        return EEXIST;
    /* Per key or not, and the size of the table, are the creator's. */
    if (!key_buckets != !sh->key_buckets || (max_keys && key_buckets != sh->key_buckets))
        return EEXIST;
    return 0;
}

/* Open the shared memory object, creating it if it is not there; *fd and
 * *created set on success. */
static int open_object(const char *path, int group, int *fd, int *created)
{
    mode_t mode = group ? 0660 : 0600;

    for (;;) {
        *fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (*fd >= 0) {
            /* The umask may have taken bits away: the mode is the
             * options', exactly. */
            *created = 1;
            return fchmod(*fd, mode) < 0 ? errno : 0;
        }
        if (errno != EEXIST)
            return errno;
        *fd = shm_open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
        if (*fd >= 0) {
            *created = 0;
            return 0;
        }
        /* Unlinked between the two opens: try again. */
        if (errno != ENOENT)
            return errno;
    }
}

int aiometer__host_open(aiometer_limiter **lim, const char *name, const aiometer_limiter_options *lo)
{
    char path[PATH_SIZE];
    struct aiometer__host_shared *sh;
    struct aiometer__host *h;
    struct stat st;
    uint64_t self;
    void *map;
    int fd, created = 0, err;
    uint32_t key_buckets = 0;

    if (!valid_name(name) || lo->max_at_once > AIOMETER__HOST_MAX_AT_ONCE)
        return EINVAL;
    if (lo->per_key) {
        key_buckets = aiometer__host_key_buckets(lo->max_keys);
        if (!key_buckets || lo->max_at_once > AIOMETER__HOST_KEY_SLOTS)
            return EINVAL;
    }
    self = aiometer__host_self();
    if (!self)
        return ENOSYS; /* no /proc: dead owners could not be told from live ones */
    h = aiometer__calloc(1, sizeof(*h));
    if (!h)
        return ENOMEM;
    if (lo->max_per_second > 0 && isfinite(lo->max_per_second)) {
        struct aiometer__gcra g;

        aiometer__gcra_init(&g, lo->max_per_second, lo->max_burst);
        h->interval = g.interval;
        h->tolerance = g.tolerance;
    }
    shm_path(path, sizeof path, name);
    err = open_object(path, lo->group_access, &fd, &created);
    if (err) {
        aiometer__free(h);
        return err == ENOTDIR ? ELOOP : err;
    }
    /* Nothing is written before these checks pass: a state of another
     * user, or a file that is not a limiter, is left as it was. */
    if (fstat(fd, &st) < 0)
        err = errno;
    else if (!created && !may_use(&st))
        err = EACCES;
    else if (!S_ISREG(st.st_mode) || (st.st_size != 0 && (size_t)st.st_size != AIOMETER__HOST_SIZE))
        err = EPROTO;
    else if (st.st_size == 0 && ftruncate(fd, (off_t)AIOMETER__HOST_SIZE) < 0)
        err = errno; /* a new state, or one whose creator died before this */
    if (err) {
        close(fd);
        aiometer__free(h);
        return err;
    }
    map = mmap(NULL, AIOMETER__HOST_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    err = map == MAP_FAILED ? errno : 0;
    close(fd);
    if (err) {
        aiometer__free(h);
        return err;
    }
    sh = map;
    h->sh = sh;
    h->slots = (_Atomic uint64_t *)((char *)map + AIOMETER__HOST_HEADER);
    err = initialise(sh, h->slots, (uint32_t)lo->max_at_once, key_buckets, self);
    if (!err)
        err = check_header(sh, lo->max_at_once, key_buckets, lo->max_keys);
    if (!err)
        err = check_boot(sh, h->slots, self);
    if (err) {
        munmap(map, AIOMETER__HOST_SIZE);
        aiometer__free(h);
        return err;
    }
    h->cap = sh->max_at_once;
    atomic_init(&h->hint, 0);
    atomic_init(&h->last_reclaim, 0);
    atomic_init(&h->key_reclaim, 0);
    if (sh->key_buckets) {
        h->buckets = (struct aiometer__host_bucket *)((char *)map + AIOMETER__HOST_KEYS_OFFSET);
        h->key_buckets = sh->key_buckets;
        return aiometer__host_keys_make(lim, h);
    }
    return aiometer__host_make(lim, h);
}

int aiometer_limiter_unlink(const char *name)
{
    char path[PATH_SIZE];
    struct stat st;
    int fd, err = 0;

    if (!valid_name(name))
        return EINVAL;
    shm_path(path, sizeof path, name);
    /* Only a state this process could open may be removed: root removing
     * another user's limiter by accident would reset that user's quota. */
    fd = shm_open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0);
    if (fd < 0)
        return errno == ENOENT ? ENOENT : EACCES;
    if (fstat(fd, &st) < 0 || !may_use(&st))
        err = EACCES;
    close(fd);
    if (!err && shm_unlink(path) < 0)
        err = errno;
    return err;
}
