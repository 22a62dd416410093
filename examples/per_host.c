/*
 * per_host.c - polite to every host: at most 10 requests a second and 2
 * at once per host, 16 at once overall, without one slow host holding up the
 * others (the crawler pattern of the README).
 *
 *     per_host [NAME]
 *
 * 30 "requests" go to three hosts, listed slow host first: slow.example
 * answers in 0.4 s, a.example and b.example in 10 ms.  A request is a
 * sleep here, so that the example runs anywhere; a real crawler would call
 * libcurl (see http_fetch.c) in fetch().  With NAME the per-host limits are
 * a named limiter, shared by every process that runs with the same NAME at
 * the same time.
 *
 * It prints when each host's last request finished: the fast hosts after
 * about 9 intervals of 0.1 s (0.9 s), while the slow one takes about
 * 10 x 0.4 s / 2 = 2 s, because a worker whose host is busy sets the
 * request aside and serves another host.  It checks that no host ever had
 * 3 requests in flight and exits 1 if one did.
 */
#define _POSIX_C_SOURCE 200809L

#include <aiometer.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HOSTS 3
#define PER_HOST 10

static const char *const host_names[HOSTS] = { "slow.example", "a.example", "b.example" };
static const double answer_time[HOSTS] = { 0.4, 0.01, 0.01 };

typedef struct request {
    int host;
    char url[64];
} request;

static atomic_int in_flight[HOSTS], most_in_flight[HOSTS];
static double t0, last_done[HOSTS];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The key of a request: its host.  A pointer into the request, so it stays
 * valid until the request's job has returned. */
static const char *host_of(void *arg, void *key_arg)
{
    (void)key_arg;
    return host_names[((request *)arg)->host];
}

static void *fetch(void *arg)
{
    request *r = arg;
    int n = atomic_fetch_add(&in_flight[r->host], 1) + 1;
    int most = atomic_load(&most_in_flight[r->host]);

    while (n > most && !atomic_compare_exchange_weak(&most_in_flight[r->host], &most, n))
        ;
    aiometer_sleep(answer_time[r->host]); /* the request */
    atomic_fetch_sub(&in_flight[r->host], 1);
    return r;
}

int main(int argc, char **argv)
{
    static request reqs[HOSTS * PER_HOST];
    void *args[HOSTS * PER_HOST];
    aiometer_limiter_options lo = { 0 };
    aiometer_options o = { 0 };
    aiometer_limiter *polite;
    aiometer_amap *it = NULL;
    void *result;
    size_t i, n = 0;
    int err, h, ok = 1;

    /* The slow host's requests come first: a scheduler that let a worker
     * wait for its host would hold everything behind them. */
    for (h = 0; h < HOSTS; h++)
        for (i = 0; i < PER_HOST; i++) {
            reqs[n].host = h;
            snprintf(reqs[n].url, sizeof reqs[n].url, "http://%s/%zu", host_names[h], i);
            args[n] = &reqs[n];
            n++;
        }

    lo.max_per_second = 10; /* per host */
    lo.max_at_once = 2;    /* per host */
    lo.per_key = 1;
    err = aiometer_limiter_open(&polite, argc > 1 ? argv[1] : NULL, &lo);
    if (err) {
        fprintf(stderr, "per_host: %s\n", aiometer_strerror(err));
        return 1;
    }
    o.max_at_once = 16; /* overall */
    o.limiter = polite;
    o.key = host_of;

    t0 = now();
    err = aiometer_amap_open(&it, fetch, args, n, &o);
    while (err == 0 && (err = aiometer_amap_next(it, &result, NULL)) == 0)
        last_done[((request *)result)->host] = now() - t0;
    if (err == AIOMETER_DONE)
        err = aiometer_amap_close(it);
    else if (it)
        aiometer_amap_close(it);
    aiometer_limiter_destroy(polite);
    if (err) {
        fprintf(stderr, "per_host: %s\n", aiometer_strerror(err));
        return 1;
    }
    for (h = 0; h < HOSTS; h++) {
        printf("%-13s last answer after %5.2f s, at most %d in flight\n", host_names[h],
               last_done[h], atomic_load(&most_in_flight[h]));
        ok &= atomic_load(&most_in_flight[h]) <= 2;
    }
    return ok ? 0 : 1;
}
