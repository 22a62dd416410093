/* run.c - running the limiter's script (script.h) on a pooled connection:
 * EVALSHA, with the script loaded again when the server has forgotten it,
 * and a second try on a fresh connection when a pooled one turns out to be
 * closed. */
#include "config.h"
#include "rlimiter.h"
#include "script.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* After its cancel descriptor fires, how long an operation still waits for
 * the reply of a command already sent (the interface allows 10 ms). */
#define CANCEL_GRACE_NS UINT64_C(6000000)

/* The errno an error reply stands for. */
static int reply_error(const redisReply *r)
{
    if (strncmp(r->str, "NOAUTH", 6) == 0 || strncmp(r->str, "WRONGPASS", 9) == 0)
        return EACCES;
    if (strncmp(r->str, "OOM", 3) == 0)
        return ENOMEM;
    if (strncmp(r->str, "READONLY", 8) == 0 || strncmp(r->str, "LOADING", 7) == 0 ||
        strncmp(r->str, "BUSY", 4) == 0 || strncmp(r->str, "MASTERDOWN", 10) == 0)
        return EAGAIN;
    return EPROTO;
}

/* SCRIPT LOAD on c: 0 (and the SHA in l->sha), or an errno value. */
int aiometer__redis_load_script(struct aiometer__redis_limiter *l, struct aiometer__redis_conn *c, char sha[41])
{
    const char *argv[3] = { "SCRIPT", "LOAD", AIOMETER__REDIS_SCRIPT };
    redisReply *r;
    int err;

    err = aiometer__redis_command(c, 3, argv, NULL, aiometer__redis_now() + l->pool.timeout_ns, -1, 0, &r);
    if (err)
        return err;
    if (r->type == REDIS_REPLY_STRING && r->len == 40)
        memcpy(sha, r->str, 41);
    else
        err = r->type == REDIS_REPLY_ERROR && reply_error(r) == EACCES ? EACCES : ENOTSUP;
    freeReplyObject(r);
    return err;
}

int aiometer__redis_run(struct aiometer__redis_limiter *l, const struct aiometer__redis_names *names, int argc,
                  const char **args, int cancel_fd, redisReply **reply)
{
    const struct aiometer__redis_names *n = names ? names : &l->names;
    const char *argv[16] = { "EVALSHA", l->sha, "2", n->rate, n->run };
    int attempt, reloaded = 0, err = 0, i;

    for (i = 0; i < argc && i < 11; i++)
        argv[5 + i] = args[i];
    /* A second attempt follows a connection found closed (the server may
     * have restarted since it was pooled) or a script the server forgot
     * (NOSCRIPT, after a restart or SCRIPT FLUSH). */
    for (attempt = 0; attempt < 2; attempt++) {
        struct aiometer__redis_conn *c;
        redisReply *r;
        char sha[41];

        err = aiometer__redis_get(&l->pool, &c);
        if (err)
            return err;
        err = aiometer__redis_command(c, 5 + i, argv, NULL, aiometer__redis_now() + l->pool.timeout_ns,
                                cancel_fd, CANCEL_GRACE_NS, &r);
        if (err) {
            aiometer__redis_drop(&l->pool, c, err);
            if (err == ECONNRESET && attempt == 0)
                continue;
            return err;
        }
        if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0 && !reloaded) {
            freeReplyObject(r);
            reloaded = 1;
            /* The same text has the same SHA: l->sha, written once at
             * open, stays right and is never written again. */
            err = aiometer__redis_load_script(l, c, sha);
            if (err) {
                aiometer__redis_drop(&l->pool, c, err);
                return err;
            }
            aiometer__redis_put(&l->pool, c);
            attempt--;
            continue;
        }
        aiometer__redis_put(&l->pool, c);
        if (r->type == REDIS_REPLY_ERROR) {
            err = reply_error(r);
            freeReplyObject(r);
            return err;
        }
        *reply = r;
        return 0;
    }
    return err;
}
