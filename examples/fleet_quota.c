/*
 * fleet_quota - several processes share one quota through Redis.
 *
 * A third-party API allows 100 requests per second and 20 in flight for
 * your whole fleet.  Each process opens the same Redis limiter and calls
 * the API as fast as it may; together they stay within the quota.  Here
 * the fleet is -n processes forked on one machine, but they could as well
 * run on ten hosts: all they share is the Redis URL and the key.
 *
 *   fleet_quota [-n processes] [-r per_second] [-c at_once] [-t seconds]
 *               [-u redis_url] [-k key]
 *
 * Each process prints its own start rate; the parent prints the total.
 */
#include <aiometer_redis.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The "request": 5 ms of waiting, as a network call would. */
static void *request(void *arg)
{
    aiometer_sleep(0.005);
    return arg;
}

/* One member of the fleet: call for `seconds`, then report how many calls
 * started on fd. */
static int member(int id, const char *url, const char *key, double rate, size_t cap,
                  double seconds, int fd)
{
    aiometer_limiter_options lo = { .max_per_second = rate, .max_burst = 1, .max_at_once = cap };
    aiometer_options o = { 0 };
    aiometer_stats st;
    aiometer_limiter *lim;
    enum { N = 100000 };
    static void *args[N];
    int err;

    err = aiometer_redis_limiter_open(&lim, url, key, &lo, NULL);
    if (err) {
        fprintf(stderr, "process %d: %s: %s\n", id, url, strerror(err));
        return 1;
    }
    o.limiter = lim;
    o.max_at_once = 16;
    o.timeout = seconds; /* stop after `seconds`: ETIMEDOUT is expected */
    o.stats = &st;
    err = aiometer_run_on_each(request, args, N, &o);
    if (err && err != ETIMEDOUT)
        fprintf(stderr, "process %d: %s\n", id, strerror(err));
    printf("process %d (pid %d): %zu calls, %.1f/s\n", id, (int)getpid(), st.started,
           st.started / st.elapsed);
    fflush(stdout);
    if (write(fd, &st.started, sizeof(st.started)) != (ssize_t)sizeof(st.started))
        return 1;
    aiometer_limiter_destroy(lim);
    return 0;
}

int main(int argc, char **argv)
{
    const char *url = "redis://127.0.0.1:6379", *key = "fleet_quota";
    double rate = 100, seconds = 3;
    size_t cap = 20, total = 0;
    int n = 4, i, opt, fds[2], failed = 0;

    while ((opt = getopt(argc, argv, "n:r:c:t:u:k:")) != -1) {
        switch (opt) {
        case 'n': n = atoi(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'c': cap = (size_t)atol(optarg); break;
        case 't': seconds = atof(optarg); break;
        case 'u': url = optarg; break;
        case 'k': key = optarg; break;
        default:
            fprintf(stderr, "usage: %s [-n procs] [-r per_second] [-c at_once] [-t seconds] "
                            "[-u url] [-k key]\n", argv[0]);
            return 2;
        }
    }
    if (n < 1 || n > 64 || pipe(fds) != 0)
        return 2;
    for (i = 0; i < n; i++) {
        pid_t pid = fork();

        if (pid < 0)
            return 1;
        if (pid == 0) {
            close(fds[0]);
            _exit(member(i + 1, url, key, rate, cap, seconds, fds[1]));
        }
    }
    close(fds[1]);
    for (i = 0; i < n; i++) {
        size_t started;
        int status;

        if (read(fds[0], &started, sizeof(started)) == (ssize_t)sizeof(started))
            total += started;
        if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
    }
    printf("fleet of %d: %zu calls in %.1f s, %.1f/s (quota %.0f/s, burst 1, %zu at once)\n", n,
           total, seconds, total / seconds, rate, cap);
    return failed;
}
