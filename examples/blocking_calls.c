/*
 * blocking_calls.c - resolve host names with getaddrinfo() on a thread pool,
 * and time it against resolving them one after another.
 *
 *     blocking_calls [--at-once N] [--repeat R] [NAME...]
 *
 * getaddrinfo() blocks until the answer is there, and there is no portable
 * way to ask it for many names at once: programs that resolve many names run
 * it on threads.  Without names on the command line this resolves the names
 * in /etc/hosts, each R times (default: enough for 10000 lookups).  Those are
 * answered from a local file in microseconds of CPU time, so there the pool
 * gains at most the number of cores; names that need a DNS server spend
 * milliseconds each waiting for the network, and for them the parallel run
 * is faster by up to N (default 16) times.  Try
 *
 *     blocking_calls --repeat 1 debian.org gnu.org kernel.org example.com
 *
 * What it shows: aiometer_run_on_each on an ordinary blocking C function,
 * with max_at_once as the one knob, and the result written by each job into
 * its own argument.
 */
#define _POSIX_C_SOURCE 200809L

#include <aiometer.h>

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define MAX_NAMES 256

/* One lookup: the name in, the first address or the error out. */
typedef struct lookup {
    const char *name;
    int err; /* getaddrinfo()'s error, or 0 */
    char addr[64]; /* room for any numeric IPv6 address with a scope */
} lookup;

/* The blocking work, the same for the serial and the parallel run. */
static void resolve(lookup *l)
{
    struct addrinfo hints, *res;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    l->addr[0] = '\0';
    l->err = getaddrinfo(l->name, NULL, &hints, &res);
    if (l->err != 0)
        return;
    l->err = getnameinfo(res->ai_addr, res->ai_addrlen, l->addr, sizeof l->addr, NULL, 0,
                         NI_NUMERICHOST);
    freeaddrinfo(res);
}

/* The job: a pthread-style wrapper around resolve().  A name that does not
 * resolve is an answer, not a reason to stop the other lookups, so it is
 * recorded rather than passed to aiometer_fail(). */
static void *resolve_job(void *arg)
{
    resolve(arg);
    return NULL;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Add name to names[] unless it is there already; returns the new count. */
static size_t add_name(char **names, size_t count, const char *name)
{
    for (size_t i = 0; i < count; i++)
        if (strcmp(names[i], name) == 0)
            return count;
    if (count == MAX_NAMES)
        return count;
    names[count] = strdup(name);
    return names[count] != NULL ? count + 1 : count;
}

/* The host names (and aliases) in /etc/hosts: every field after the address. */
static size_t names_from_hosts(char **names)
{
    FILE *f = fopen("/etc/hosts", "r");
    char buf[1024];
    size_t count = 0;

    if (f == NULL)
        return 0;
    while (fgets(buf, sizeof buf, f) != NULL) {
        char *save, *field;
        buf[strcspn(buf, "#")] = '\0';
        if (strtok_r(buf, " \t\r\n", &save) == NULL)
            continue; /* a blank line or a comment */
        while ((field = strtok_r(NULL, " \t\r\n", &save)) != NULL)
            count = add_name(names, count, field);
    }
    fclose(f);
    return count;
}

static void usage(void)
{
    fputs("usage: blocking_calls [--at-once N] [--repeat R] [NAME...]\n", stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    char *names[MAX_NAMES];
    size_t nnames = 0;
    size_t at_once = 16;
    long repeat = 0; /* 0: choose one */

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--at-once") == 0 && i + 1 < argc) {
            long v = strtol(argv[++i], NULL, 10);
            if (v < 1 || v > AIOMETER_MAX_THREADS)
                usage();
            at_once = (size_t)v;
        } else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
            repeat = strtol(argv[++i], NULL, 10);
            if (repeat < 1 || repeat > 1000000)
                usage();
        } else if (argv[i][0] == '-') {
            usage();
        } else {
            nnames = add_name(names, nnames, argv[i]);
        }
    }
    if (nnames == 0)
        nnames = names_from_hosts(names);
    if (nnames == 0) {
        fputs("blocking_calls: no names given and none found in /etc/hosts\n", stderr);
        return EXIT_FAILURE;
    }
    if (repeat == 0)
        repeat = (10000 + (long)nnames - 1) / (long)nnames;

    size_t n = nnames * (size_t)repeat;
    lookup *serial = calloc(n, sizeof *serial);
    lookup *parallel = calloc(n, sizeof *parallel);
    void **args = calloc(n, sizeof *args);
    if (serial == NULL || parallel == NULL || args == NULL) {
        fputs("blocking_calls: out of memory\n", stderr);
        return EXIT_FAILURE;
    }
    for (size_t i = 0; i < n; i++) {
        serial[i].name = parallel[i].name = names[i % nnames];
        args[i] = &parallel[i];
    }

    /* A few untimed lookups first, on the pool, so that neither timed run
     * pays for loading the resolver's configuration and modules, or for
     * starting the pool's threads: a long-running program pays for those
     * once. */
    aiometer_options opts = {0};
    opts.max_at_once = at_once;
    int err = aiometer_run_on_each(resolve_job, args, n < at_once ? n : at_once, &opts);
    if (err != 0) {
        fprintf(stderr, "blocking_calls: aiometer_run_on_each: %s\n", aiometer_strerror(err));
        return EXIT_FAILURE;
    }

    double t0 = now();
    for (size_t i = 0; i < n; i++)
        resolve(&serial[i]);
    double serial_time = now() - t0;

    t0 = now();
    err = aiometer_run_on_each(resolve_job, args, n, &opts);
    double parallel_time = now() - t0;
    if (err != 0) {
        fprintf(stderr, "blocking_calls: aiometer_run_on_each: %s\n", aiometer_strerror(err));
        return EXIT_FAILURE;
    }

    size_t failed = 0;
    for (size_t i = 0; i < n; i++)
        failed += parallel[i].err != 0;
    for (size_t i = 0; i < nnames; i++) {
        const lookup *l = &parallel[i];
        printf("%-24s %s\n", l->name, l->err == 0 ? l->addr : gai_strerror(l->err));
    }
    printf("%zu lookups of %zu names (%zu failed):\n", n, nnames, failed);
    printf("  one after another:      %8.1f ms\n", serial_time * 1e3);
    printf("  aiometer, %4zu at once: %8.1f ms  (%.1fx)\n", at_once, parallel_time * 1e3,
           serial_time / parallel_time);

    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    free(serial);
    free(parallel);
    free(args);
    return EXIT_SUCCESS;
}
