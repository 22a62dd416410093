/* keys.c - the Redis keys of a limiter and of each job key of a per-key
 * limiter, and the list of running slots this process holds.
 *
 * A limiter's own keys are "aiometer:{key}:rate" and "aiometer:{key}:run".
 * A job key J of a per-key limiter has its own pair under the same hash
 * tag, "aiometer:{key}:k:<enc>:rate" and "aiometer:{key}:k:<enc>:run",
 * where <enc> is "<length of J in decimal>:<J's bytes>" for a J of at most
 * AIOMETER__REDIS_VERBATIM_MAX bytes, and "h:<32 hex digits>" (a 128-bit hash of
 * J) for a longer one.  The length in front makes the encoding of any J,
 * colons and other bytes included, read back one way only, so two job keys
 * never share a Redis key, and no job key's Redis key is one of the
 * limiter's own (which have no "k:").  Hashing bounds a name's length; two
 * long keys with one hash would share one budget, which only makes their
 * limits stricter, never looser. */
#include "config.h"
#include "rlimiter.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Two 64-bit hashes of s, each mixed at the end so that every input bit
 * reaches every output bit: FNV-1a and a multiply-xorshift of our own. */
static void hash128(const char *s, size_t n, uint64_t h[2])
{
    uint64_t a = UINT64_C(0xcbf29ce484222325), b = UINT64_C(0x9e3779b97f4a7c15) ^ n;
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        a = (a ^ c) * UINT64_C(0x100000001b3);
        b = (b + c + 1) * UINT64_C(0xff51afd7ed558ccd);
        b ^= b >> 29;
    }
    for (i = 0; i < 2; i++) {
        uint64_t x = i ? b : a;

        x ^= x >> 33;
        x *= UINT64_C(0xc4ceb9fe1a85ec53);
        x ^= x >> 33;
        h[i] = x;
    }
}

/* J's encoding into buf (at least AIOMETER__REDIS_VERBATIM_MAX + 24 bytes). */
static void encode(const char *key, char *buf, size_t size)
{
    size_t n = strlen(key);

    if (n <= AIOMETER__REDIS_VERBATIM_MAX) {
        snprintf(buf, size, "%zu:%s", n, key);
    } else {
        uint64_t h[2];

        hash128(key, n, h);
        snprintf(buf, size, "h:%016llx%016llx", (unsigned long long)h[0],
                 (unsigned long long)h[1]);
    }
}

void aiometer__redis_names_of(const struct aiometer__redis_limiter *l, const char *key,
                        struct aiometer__redis_names *n)
{
    char enc[AIOMETER__REDIS_VERBATIM_MAX + 24];

    if (!key) {
        *n = l->names;
        return;
    }
    encode(key, enc, sizeof(enc));
    snprintf(n->rate, sizeof(n->rate), "%sk:%s:rate", l->prefix, enc);
    snprintf(n->run, sizeof(n->run), "%sk:%s:run", l->prefix, enc);
}

size_t aiometer__redis_message_of(const char *key, char *buf)
{
    if (!key) {
        memcpy(buf, "1", 2);
        return 1;
    }
    buf[0] = 'k';
    encode(key, buf + 1, AIOMETER__REDIS_NAME_MAX - 1);
    return strlen(buf);
}

/* ---- the refusal cache ------------------------------------------------------------------- */

static uint64_t msg_hash(const char *msg, size_t len)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    size_t i;

    for (i = 0; i < len; i++)
        h = (h ^ (unsigned char)msg[i]) * UINT64_C(0x100000001b3);
    return h | 1;
}

static uint64_t key_hash(const char *key)
{
    char msg[AIOMETER__REDIS_NAME_MAX];
    size_t len = aiometer__redis_message_of(key, msg);

    return msg_hash(msg, len);
}

/* A direct-mapped table: a key whose entry another key took is simply
 * asked about in Redis again.  Two keys with one 64-bit hash would share
 * refusals for a few milliseconds at most. */
static struct aiometer__redis_refusal *slot_of(struct aiometer__redis_limiter *l, uint64_t h)
{
    return &l->refused[(h ^ (h >> 29)) % AIOMETER__REDIS_REFUSALS];
}

int aiometer__redis_refused_locked(struct aiometer__redis_limiter *l, const char *key, uint64_t now,
                             uint64_t *gives)
{
    uint64_t h = key_hash(key);
    struct aiometer__redis_refusal *r = slot_of(l, h);

    *gives = r->gives;
    return r->hash == h && now < r->until;
}

void aiometer__redis_refusal_note_locked(struct aiometer__redis_limiter *l, const char *key, uint64_t gives,
                                   uint64_t until)
{
    uint64_t h = key_hash(key);
    struct aiometer__redis_refusal *r = slot_of(l, h);

    /* A slot given back since the take asked Redis may be free now. */
    if (r->gives != gives)
        return;
    r->hash = h;
    r->until = until;
}

void aiometer__redis_refusal_clear_locked(struct aiometer__redis_limiter *l, const char *msg, size_t len)
{
    uint64_t h = msg_hash(msg, len);
    struct aiometer__redis_refusal *r = slot_of(l, h);

    r->gives++;
    if (r->hash == h)
        r->hash = 0;
}

/* ---- the slots this process holds ------------------------------------------------------ */

int aiometer__redis_holds_push(struct aiometer__redis_holds *h, const char *token, const char *key)
{
    struct aiometer__redis_hold x = { strdup(token), key ? strdup(key) : NULL };

    if (!x.token || (key && !x.key)) {
        free(x.token);
        free(x.key);
        return ENOMEM;
    }
    if (h->n == h->max) {
        size_t m = h->max ? h->max * 2 : 16;
        struct aiometer__redis_hold *bigger = realloc(h->v, m * sizeof(*bigger));

        if (!bigger) {
            free(x.token);
            free(x.key);
            return ENOMEM;
        }
        h->v = bigger;
        h->max = m;
    }
    h->v[h->n++] = x;
    return 0;
}

int aiometer__redis_holds_take(struct aiometer__redis_holds *h, const char *key, struct aiometer__redis_hold *out)
{
    size_t i = h->n;

    /* From the end: the newest hold of the key, which is usually the last
     * one, so that a release costs little while few keys run. */
    while (i-- > 0) {
        const char *k = h->v[i].key;

        if (!key || (k && strcmp(k, key) == 0)) {
            *out = h->v[i];
            h->v[i] = h->v[--h->n];
            return 1;
        }
    }
    return 0;
}

void aiometer__redis_holds_free(struct aiometer__redis_holds *h)
{
    size_t i;

    for (i = 0; i < h->n; i++) {
        free(h->v[i].token);
        free(h->v[i].key);
    }
    free(h->v);
    h->v = NULL;
    h->n = h->max = 0;
}
