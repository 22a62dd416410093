/* shared.c - the limiter that several invocations share: a named one on
 * this host (--limiter NAME, aiometer_limiter_open) or one kept in Redis for
 * a fleet (--redis URL --key K, libaiometer-redis, when the command was
 * built with it: AIOMETER_CLI_REDIS, set by cli/local.mk).
 *
 * Either way -r, --burst and --limiter-max-at-once are the shared
 * limiter's options, and -j stays this invocation's own cap.  The two are
 * never given together (options.c refuses it): a call takes one limiter. */
#include "config.h"
#include "cli.h"

#include <errno.h>
#include <stdio.h>

#ifdef AIOMETER_CLI_REDIS
#include <aiometer_redis.h>
#endif

static int open_failed(const char *opt, const char *value, int err)
{
    fprintf(stderr, "aiometer: %s %s: %s\n", opt, value, aiometer_strerror(err));
    return CLI_EXIT_ERROR;
}

int cli_open_shared_limiter(const struct cli_config *cfg, aiometer_limiter **lim)
{
    aiometer_limiter_options lo = {0};
    int err;

    *lim = NULL;
    lo.max_per_second = cfg->rate;
    lo.max_burst = cfg->burst;
    lo.max_at_once = cfg->limiter_max;
    if (cfg->limiter) {
        err = aiometer_limiter_open(lim, cfg->limiter, &lo);
        return err ? open_failed("--limiter", cfg->limiter, err) : 0;
    }
    if (cfg->redis_url) {
#ifdef AIOMETER_CLI_REDIS
        /* The library's defaults: a start that cannot reach Redis does not
         * happen, and the run fails (AIOMETER_REDIS_FAIL); a slot of an
         * invocation that died is freed after the 10 s lease. */
        err = aiometer_redis_limiter_open(lim, cfg->redis_url, cfg->redis_key, &lo, NULL);
        if (err == EACCES) {
            fprintf(stderr, "aiometer: --redis %s: the server refused the password "
                            "(a wrong one, or none given in the URL)\n",
                    cfg->redis_url);
            return CLI_EXIT_ERROR;
        }
        if (err == EINVAL) {
            /* The key and the limits were checked with the options. */
            fprintf(stderr, "aiometer: --redis '%s': not a redis://[[user]:password@]host"
                            "[:port][/db] or unix:///path[?db=N] URL\n",
                    cfg->redis_url);
            return CLI_EXIT_ERROR;
        }
        return err ? open_failed("--redis", cfg->redis_url, err) : 0;
#else
        /* options.c already refused --redis; this keeps the two in step. */
        return open_failed("--redis", cfg->redis_url, ENOTSUP);
#endif
    }
    return 0;
}
