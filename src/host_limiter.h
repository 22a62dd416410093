/* host_limiter.h - the host-wide named limiter: one rate schedule and one
 * running cap in POSIX shared memory ("/aiometer.NAME"), shared by every
 * process of the host that opens the name.
 *
 * Three files: host_open.c opens and checks the shared state;
 * host_limiter.c holds the limiter operations; host_owner.c knows who a
 * process is (an owner token made of its pid and start time), whether an
 * owner is still alive, the boot id, and the futex the waiters sleep on.
 *
 * Crash safety comes from the layout, not from cleanup code (there is no
 * cleanup code a SIGKILL could skip):
 *   - the rate is one 64-bit word (TAT) changed only by compare-and-swap, so
 *     a process killed between two instructions leaves either the old or the
 *     new schedule, never half of one, and holds no lock;
 *   - each running slot is one 64-bit word holding 0 (free) or the owner
 *     token of the process that took it; a slot whose owner is dead is free
 *     by definition, and any waiter may clear it (a compare-and-swap from
 *     that exact token, so a live owner is never robbed);
 *   - the waiter count and the wake-up sequence only decide whether to make
 *     a futex system call: a wrong value there costs a wake-up or delays
 *     one by at most a wait slice, never a slot;
 *   - setting the state up (initialising it, starting afresh after a
 *     reboot) is a role held as an owner token in one word, taken by CAS;
 *     a process that finds the role held by a dead owner takes it over and
 *     does the (idempotent) work again.
 * Nothing else is shared: no mutex, no count that a dead process could
 * leave wrong. */
#ifndef AIOMETER__HOST_LIMITER_H
#define AIOMETER__HOST_LIMITER_H

#include "aiometer.h"

#include <stdatomic.h>
#include <stdint.h>

/* The most running slots a named limiter has.  The slot table has
 * AIOMETER__HOST_SLOTS entries whatever the cap (8 bytes each, 512 KiB, of which
 * only the pages of used slots are ever touched), so that every opener
 * agrees on the file's size before it has read anything from it. */
#define AIOMETER__HOST_MAX_AT_ONCE 65535

/* host_open.c: open (creating if needed) the named limiter; lo has been
 * checked by aiometer__limiter_options_check. */
int aiometer__host_open(aiometer_limiter **lim, const char *name, const aiometer_limiter_options *lo);

/* ---- the shared layout (version 2) ---------------------------------------- */

#define AIOMETER__HOST_MAGIC UINT64_C(0x54534f484d4f4941) /* "AIOMHOST" in little endian */
/* Version 2 added the table of keys (per-key limits) and key_buckets. */
#define AIOMETER__HOST_VERSION 2
#define AIOMETER__HOST_HEADER 4096
#define AIOMETER__HOST_SLOTS 65536

/* The table of keys of a per-key named limiter: buckets of KEY_WAYS keys,
 * each key with its TAT and KEY_SLOTS running slots (the most a per-key
 * named limiter's max_at_once may be).  The file has room for
 * KEY_BUCKETS_MAX buckets whatever the limiter (only pages that are used
 * are ever touched); the creator uses the first key_buckets of them. */
#define AIOMETER__HOST_KEY_WAYS 8
#define AIOMETER__HOST_KEY_SLOTS 16
#define AIOMETER__HOST_KEY_BUCKETS_MAX 2048
#define AIOMETER__HOST_MAX_KEYS (AIOMETER__HOST_KEY_WAYS * AIOMETER__HOST_KEY_BUCKETS_MAX)

struct aiometer__host_key {
    /* The key's fingerprint (a 64-bit hash of its bytes, never 0); 0: the
     * entry is free.  Written only by the holder of the bucket's lock. */
    _Atomic uint64_t id;
    /* The key's TAT (below 2^63), or AIOMETER__HOST_KEY_LOCKED | the owner
     * token of a process forgetting the key (host_keys.c). */
    _Atomic uint64_t tat;
    /* Running slots: 0 or the owner token of the process holding one. */
    _Atomic uint64_t slots[AIOMETER__HOST_KEY_SLOTS];
};

struct aiometer__host_bucket {
    /* 0, or the owner token of the process adding or forgetting a key of
     * this bucket; a dead owner's lock may be taken over. */
    _Atomic uint64_t lock;
    uint64_t pad;
    struct aiometer__host_key key[AIOMETER__HOST_KEY_WAYS];
};

#define AIOMETER__HOST_KEYS_OFFSET (AIOMETER__HOST_HEADER + AIOMETER__HOST_SLOTS * sizeof(uint64_t))
#define AIOMETER__HOST_SIZE                                                                        \
    (AIOMETER__HOST_KEYS_OFFSET +                                                                  \
     AIOMETER__HOST_KEY_BUCKETS_MAX * sizeof(struct aiometer__host_bucket))

/* The file: this header (AIOMETER__HOST_HEADER bytes), then AIOMETER__HOST_SLOTS slot
 * words, then the table of keys (used by per-key limiters only).  Fields
 * up to boot are written once, by the process that initialises the state,
 * before it stores magic (release); readers read them after loading magic
 * (acquire).  A library that knows another version says EPROTO rather than
 * misreading the state. */
struct aiometer__host_shared {
    _Atomic uint64_t magic;       /* 0 until initialised: AIOMETER__HOST_MAGIC */
    uint32_t version;             /* AIOMETER__HOST_VERSION */
    uint32_t header_size;         /* AIOMETER__HOST_HEADER */
    uint64_t size;                /* AIOMETER__HOST_SIZE */
    uint32_t max_at_once;         /* the cap, set by the creator; 0: none */
    uint32_t nslots;              /* AIOMETER__HOST_SLOTS */
    uint64_t slots_offset;        /* AIOMETER__HOST_HEADER */
    uint64_t keys_offset;         /* AIOMETER__HOST_KEYS_OFFSET */
    uint32_t key_buckets;         /* buckets of keys in use; 0: not per key */
    uint32_t key_pad;
    _Atomic uint64_t initializer; /* owner token of the initialising process */
    _Atomic uint64_t resetter;    /* owner token of a process starting afresh */
    _Atomic uint64_t boot[5];     /* the boot id the schedule belongs to */
    /* Written by every booking: a cache line of its own. */
    _Alignas(64) _Atomic uint64_t tat;
    /* Written by every release. */
    _Alignas(64) _Atomic uint32_t wake_seq; /* futex word: bumped when a slot frees */
    _Atomic uint32_t waiters;               /* threads that may sleep on wake_seq */
};

/* One opener's handle: its own rate against the shared schedule. */
struct aiometer__host {
    struct aiometer__host_shared *sh; /* the mapping, AIOMETER__HOST_SIZE bytes */
    _Atomic uint64_t *slots;
    uint32_t cap;                 /* sh->max_at_once */
    uint64_t interval, tolerance; /* this opener's T and tau; interval 0: no rate */
    _Atomic uint32_t hint;        /* where the next search for a free slot starts */
    _Atomic uint64_t last_reclaim;
    /* Per-key limiters: the table of keys, key_buckets of them (a power of
     * two), and when dead owners of a key's slots were last looked for. */
    struct aiometer__host_bucket *buckets;
    uint32_t key_buckets;
    _Atomic uint64_t key_reclaim;
};

/* ---- host_limiter.c --------------------------------------------------------- */

/* Make the limiter object for an attached handle; on failure the handle is
 * unmapped and freed. */
int aiometer__host_make(aiometer_limiter **lim, struct aiometer__host *h);
/* Both backends' close: unmap the state and free the handle. */
void aiometer__host_close(void *state);

/* ---- host_keys.c ------------------------------------------------------------ */

/* The limiter object of a per-key named limiter; on failure the handle is
 * unmapped and freed. */
int aiometer__host_keys_make(aiometer_limiter **lim, struct aiometer__host *h);
/* Buckets for max_keys keys (0: the default), or 0 if too many. */
uint32_t aiometer__host_key_buckets(size_t max_keys);
/* Empty the table of keys (a new boot); run by the one resetter. */
void aiometer__host_keys_reset(struct aiometer__host_bucket *b, uint32_t n);

/* ---- host_owner.c ------------------------------------------------------------ */

/* This process's owner token: its pid in the low 22 bits and its start time
 * (clock ticks after boot, from /proc/self/stat) above them; never 0.  0 if
 * /proc cannot tell (errno set). */
uint64_t aiometer__host_self(void);

/* Whether the process a token names still runs (a zombie does not).  When
 * /proc cannot tell, kill(pid, 0) decides, and a process that may exist
 * counts as alive: a slot kept too long is better than a cap broken. */
int aiometer__host_alive(uint64_t token);

/* This boot's id, the 36 characters of /proc/sys/kernel/random/boot_id
 * packed in 5 words (zero padded); all zero if it cannot be read. */
void aiometer__host_boot_id(uint64_t id[5]);

/* Sleep on a 32-bit word in shared memory while it holds `val`, for at most
 * `ns` nanoseconds; and wake up to n sleepers on it. */
void aiometer__host_futex_wait(_Atomic uint32_t *word, uint32_t val, long ns);
void aiometer__host_futex_wake(_Atomic uint32_t *word, int n);

#endif
