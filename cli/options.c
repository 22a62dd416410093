/* options.c - the command line of aiometer(1).
 *
 * Everything is checked here, before any input is read or any job starts:
 * a bad option or value ends the command with a short message that names
 * it and the exit status 255. */
#include "config.h"
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    OPT_BURST = 256,
    OPT_LIMITER,
    OPT_LIMITER_MAX,
    OPT_TAG,
    OPT_TIMEOUT,
    OPT_DEADLINE,
    OPT_HALT,
    OPT_JOBLOG,
    OPT_PROGRESS,
    OPT_DRY_RUN,
    OPT_SHELL,
    OPT_VERSION,
    OPT_RETRIES,
    OPT_RETRY_DELAY,
    OPT_RETRY_MAX_DELAY,
    OPT_REDIS,
    OPT_KEY,
};

static const struct option long_options[] = {
    {"max-at-once", required_argument, NULL, 'j'},
    {"max-per-second", required_argument, NULL, 'r'},
    {"burst", required_argument, NULL, OPT_BURST},
    {"limiter", required_argument, NULL, OPT_LIMITER},
    {"limiter-max-at-once", required_argument, NULL, OPT_LIMITER_MAX},
    {"redis", required_argument, NULL, OPT_REDIS},
    {"key", required_argument, NULL, OPT_KEY},
    {"keep-order", no_argument, NULL, 'k'},
    {"ungroup", no_argument, NULL, 'u'},
    {"tag", no_argument, NULL, OPT_TAG},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"deadline", required_argument, NULL, OPT_DEADLINE},
    {"retries", required_argument, NULL, OPT_RETRIES},
    {"retry-delay", required_argument, NULL, OPT_RETRY_DELAY},
    {"retry-max-delay", required_argument, NULL, OPT_RETRY_MAX_DELAY},
    {"halt", required_argument, NULL, OPT_HALT},
    {"joblog", required_argument, NULL, OPT_JOBLOG},
    {"progress", optional_argument, NULL, OPT_PROGRESS},
    {"null", no_argument, NULL, '0'},
    {"arg-file", required_argument, NULL, 'a'},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {"shell", no_argument, NULL, OPT_SHELL},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static const char usage_text[] =
    "Usage: aiometer [OPTIONS] [--] COMMAND [ARG...]             arguments from the input\n"
    "       aiometer [OPTIONS] [--] COMMAND [ARG...] ::: A B C   arguments given here\n"
    "Run COMMAND once per argument, {} standing for the argument (appended when\n"
    "no {} appears) and {#} for the job's number.\n"
    "\n"
    "  -j, --max-at-once N          at most N jobs at once (default: CPUs online)\n"
    "  -r, --max-per-second R       at most R job starts per second\n"
    "      --burst B                starts allowed back to back (default 1)\n"
    "      --limiter NAME           share -r/--burst with every invocation naming NAME\n"
    "      --limiter-max-at-once N  at most N jobs at once under NAME or K\n"
    "      --redis URL --key K      share -r/--burst with every invocation naming K\n"
    "                               on the Redis server at URL, fleet-wide\n"
    "  -k, --keep-order             output in input order\n"
    "  -u, --ungroup                pass output through as it comes\n"
    "      --tag                    prefix each output line with the argument\n"
    "      --timeout S              kill a job after S seconds\n"
    "      --deadline S             stop the whole run after S seconds\n"
    "      --retries N              try a failed job up to N more times, backing off\n"
    "      --retry-delay S          first backoff at most S seconds (default 0.1)\n"
    "      --retry-max-delay S      no backoff longer than S seconds (default 30)\n"
    "      --halt never|soon|now    after a failure: go on, start no more, or kill all\n"
    "      --joblog FILE            one line per attempt: start, runtime, exit value\n"
    "      --progress[=always]      a progress line on standard error\n"
    "  -0, --null                   input arguments end with NUL, not newline\n"
    "  -a, --arg-file FILE          read arguments from FILE\n"
    "      --shell                  run COMMAND with /bin/sh -c, {} quoted\n"
    "      --dry-run                print the commands instead of running them\n"
    "  -h, --help                   this text\n"
    "      --version                the version\n"
    "\n"
    "Exit status: 0 all jobs succeeded; 1-100 that many failed; 101 more than\n"
    "100 failed; 130 interrupted; 255 any other error.  See aiometer(1).\n";

/* The option as the user wrote it, for messages: "-j" or "--max-at-once". */
static const char *opt_name(int c, int long_index)
{
    static char shortname[3];

    if (long_index >= 0)
        return NULL;
    shortname[0] = '-';
    shortname[1] = (char)c;
    shortname[2] = '\0';
    return shortname;
}

static int bad_value(const char *opt, const char *value, const char *what)
{
    fprintf(stderr, "aiometer: %s '%s': %s\n", opt, value, what);
    return CLI_EXIT_ERROR;
}

/* A whole decimal number from min (0 or 1) to max. */
static int parse_range(const char *opt, const char *s, size_t min, size_t max, size_t *out)
{
    char *end;
    unsigned long long v;

    const char *what = min ? "not a positive whole number" : "not a whole number";

    if (*s < '0' || *s > '9')
        return bad_value(opt, s, what);
    errno = 0;
    v = strtoull(s, &end, 10);
    if (*end != '\0' || end == s)
        return bad_value(opt, s, what);
    if (v < min)
        return bad_value(opt, s, "must be at least 1");
    if (errno == ERANGE || v > max) {
        char msg[64];
        snprintf(msg, sizeof(msg), "at most %zu", max);
        return bad_value(opt, s, msg);
    }
    *out = (size_t)v;
    return 0;
}

static int parse_count(const char *opt, const char *s, size_t max, size_t *out)
{
    return parse_range(opt, s, 1, max, out);
}

/* A positive finite number of at most max: seconds or starts per second. */
static int parse_positive(const char *opt, const char *s, double max, double *out)
{
    char *end;
    double v;

    /* strtod's ERANGE is no verdict of its own: an overflow is infinite
     * (too large below), and an underflow is a tiny value, or 0 (not
     * above 0). */
    v = strtod(s, &end);
    if (*end != '\0' || end == s || isnan(v))
        return bad_value(opt, s, "not a number");
    if (v <= 0)
        return bad_value(opt, s, "must be above 0");
    if (v > max)
        return bad_value(opt, s, "too large");
    *out = v;
    return 0;
}

static size_t cpus_online(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    if (n < 1)
        return 1;
    return n > CLI_MAX_JOBS ? CLI_MAX_JOBS : (size_t)n;
}

/* The long option's name for messages; the short one if it has one. */
static const char *name_of(int c, int long_index, char *buf, size_t size)
{
    const char *s = opt_name(c, long_index);

    if (s)
        return s;
    snprintf(buf, size, "--%s", long_options[long_index].name);
    return buf;
}

int cli_parse_options(int argc, char **argv, struct cli_config *cfg)
{
    int c, long_index, err = 0;
    char name[64];
    int i;

    memset(cfg, 0, sizeof(*cfg));
    cfg->halt = CLI_HALT_NEVER;
    cfg->max_at_once = cpus_online();
    opterr = 0; /* our own messages, naming the option as written */
    for (;;) {
        const char *opt;

        long_index = -1;
        /* "+": stop at the first word that is not an option, so COMMAND's
         * own options are left to it.  ":" first: tell a missing value
         * apart from an unknown option. */
        c = getopt_long(argc, argv, "+:j:r:kua:0h", long_options, &long_index);
        if (c == -1)
            break;
        opt = name_of(c, long_index, name, sizeof(name));
        switch (c) {
        case 'j':
            err = parse_count(opt, optarg, CLI_MAX_JOBS, &cfg->max_at_once);
            break;
        case 'r':
            err = parse_positive(opt, optarg, 1e9, &cfg->rate);
            break;
        case OPT_BURST:
            err = parse_count(opt, optarg, (size_t)1 << 30, &cfg->burst);
            break;
        case OPT_LIMITER:
            cfg->limiter = optarg;
            if (!*optarg)
                err = bad_value(opt, optarg, "an empty name");
            break;
        case OPT_LIMITER_MAX:
            err = parse_count(opt, optarg, 65535, &cfg->limiter_max);
            break;
        case OPT_REDIS:
#ifdef AIOMETER_CLI_REDIS
            cfg->redis_url = optarg;
            if (!*optarg)
                err = bad_value(opt, optarg, "an empty URL");
#else
            fprintf(stderr, "aiometer: %s: this aiometer was built without libaiometer-redis "
                            "(configure found no hiredis), so it has no fleet-wide limiter\n",
                    opt);
            err = CLI_EXIT_ERROR;
#endif
            break;
        case OPT_KEY:
            cfg->redis_key = optarg;
            /* The library's rule for a key, checked here so that a bad one
             * is told apart from a bad URL. */
            if (!*optarg || strlen(optarg) > 200 || strpbrk(optarg, "{}"))
                err = bad_value(opt, optarg, "not 1 to 200 bytes without '{' or '}'");
            break;
        case OPT_RETRIES:
            err = parse_range(opt, optarg, 0, CLI_MAX_RETRIES, &cfg->retries);
            break;
        case OPT_RETRY_DELAY:
            err = parse_positive(opt, optarg, 1e6, &cfg->retry_delay);
            break;
        case OPT_RETRY_MAX_DELAY:
            err = parse_positive(opt, optarg, 1e6, &cfg->retry_max_delay);
            break;
        case 'k':
            cfg->keep_order = 1;
            break;
        case 'u':
            cfg->ungroup = 1;
            break;
        case OPT_TAG:
            cfg->tag = 1;
            break;
        case OPT_TIMEOUT:
            err = parse_positive(opt, optarg, 1e9, &cfg->timeout);
            break;
        case OPT_DEADLINE:
            err = parse_positive(opt, optarg, 1e9, &cfg->deadline);
            break;
        case OPT_HALT:
            if (strcmp(optarg, "never") == 0)
                cfg->halt = CLI_HALT_NEVER;
            else if (strcmp(optarg, "soon") == 0)
                cfg->halt = CLI_HALT_SOON;
            else if (strcmp(optarg, "now") == 0)
                cfg->halt = CLI_HALT_NOW;
            else
                err = bad_value(opt, optarg, "not one of never, soon, now");
            break;
        case OPT_JOBLOG:
            cfg->joblog = optarg;
            break;
        case OPT_PROGRESS:
            if (!optarg)
                cfg->progress = CLI_PROGRESS_TTY;
            else if (strcmp(optarg, "always") == 0)
                cfg->progress = CLI_PROGRESS_ALWAYS;
            else
                err = bad_value(opt, optarg, "the only value is 'always'");
            break;
        case '0':
            cfg->null_sep = 1;
            break;
        case 'a':
            cfg->arg_file = optarg;
            break;
        case OPT_DRY_RUN:
            cfg->dry_run = 1;
            break;
        case OPT_SHELL:
            cfg->shell = 1;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return -1;
        case OPT_VERSION:
            printf("aiometer (libaiometer) %s\n", aiometer_version_string());
            return -1;
        case ':':
            fprintf(stderr, "aiometer: %s needs a value\n", argv[optind - 1]);
            return CLI_EXIT_ERROR;
        default:
            if (optopt && optopt != '?')
                fprintf(stderr, "aiometer: unknown option '-%c'\n", optopt);
            else
                fprintf(stderr, "aiometer: unknown option '%s'\n", argv[optind - 1]);
            fprintf(stderr, "Try 'aiometer --help'.\n");
            return CLI_EXIT_ERROR;
        }
        if (err)
            return err;
    }

    /* COMMAND [ARG...] up to ":::", then the arguments. */
    if (optind < argc && strcmp(argv[optind], "--") == 0)
        optind++;
    cfg->cmd = argv + optind;
    for (i = optind; i < argc && strcmp(argv[i], ":::") != 0; i++)
        ;
    cfg->ncmd = (size_t)(i - optind);
    if (i < argc) {
        argv[i] = NULL; /* ends cfg->cmd */
        cfg->args = argv + i + 1;
        cfg->nargs = (size_t)(argc - i - 1);
    }
    if (cfg->ncmd == 0) {
        fprintf(stderr, "aiometer: no COMMAND given\nTry 'aiometer --help'.\n");
        return CLI_EXIT_ERROR;
    }

    /* Options that contradict each other. */
    if (cfg->args && cfg->arg_file) {
        fprintf(stderr, "aiometer: -a/--arg-file and ::: both give the arguments: use one\n");
        return CLI_EXIT_ERROR;
    }
    if (cfg->args && cfg->null_sep) {
        fprintf(stderr, "aiometer: -0/--null is about input, and ::: gives the arguments\n");
        return CLI_EXIT_ERROR;
    }
    if (cfg->ungroup && (cfg->tag || cfg->keep_order)) {
        fprintf(stderr, "aiometer: -u/--ungroup passes output through, so %s cannot apply\n",
                cfg->tag ? "--tag" : "-k/--keep-order");
        return CLI_EXIT_ERROR;
    }
    if (cfg->limiter && cfg->redis_url) {
        fprintf(stderr, "aiometer: --limiter and --redis both name a shared limiter, and a run "
                        "has one: use one of them\n");
        return CLI_EXIT_ERROR;
    }
    if (cfg->redis_url && !cfg->redis_key) {
        fprintf(stderr, "aiometer: --redis needs --key K, the name of the shared limiter\n");
        return CLI_EXIT_ERROR;
    }
    if (cfg->redis_key && !cfg->redis_url) {
        fprintf(stderr, "aiometer: --key needs --redis URL\n");
        return CLI_EXIT_ERROR;
    }
    if (cfg->limiter_max && !cfg->limiter && !cfg->redis_url) {
        fprintf(stderr, "aiometer: --limiter-max-at-once needs --limiter NAME or --redis URL\n");
        return CLI_EXIT_ERROR;
    }
    if ((cfg->limiter || cfg->redis_url) && cfg->rate == 0 && cfg->limiter_max == 0) {
        fprintf(stderr, "aiometer: %s needs -r/--max-per-second or --limiter-max-at-once "
                        "to share\n",
                cfg->limiter ? "--limiter NAME" : "--redis URL");
        return CLI_EXIT_ERROR;
    }
    if ((cfg->retry_delay || cfg->retry_max_delay) && !cfg->retries) {
        fprintf(stderr, "aiometer: %s needs --retries N\n",
                cfg->retry_delay ? "--retry-delay" : "--retry-max-delay");
        return CLI_EXIT_ERROR;
    }
    /* The library's rule, with its defaults (0.1 s and 30 s) filled in. */
    if ((cfg->retry_delay ? cfg->retry_delay : 0.1) >
        (cfg->retry_max_delay ? cfg->retry_max_delay : 30)) {
        if (cfg->retry_max_delay)
            fprintf(stderr, "aiometer: --retry-max-delay %g is below the first backoff "
                            "(--retry-delay %g)\n",
                    cfg->retry_max_delay, cfg->retry_delay ? cfg->retry_delay : 0.1);
        else
            fprintf(stderr, "aiometer: --retry-delay %g is above the longest backoff "
                            "(30 s by default): give --retry-max-delay too\n",
                    cfg->retry_delay);
        return CLI_EXIT_ERROR;
    }
    if (cfg->burst && cfg->rate == 0) {
        fprintf(stderr, "aiometer: --burst needs -r/--max-per-second\n");
        return CLI_EXIT_ERROR;
    }
    return 0;
}
