/*
 * http_fetch.c - fetch many URLs with libcurl, at most 10 at once and at most
 * 5 starts a second: the first example of Python aiometer's documentation, in C.
 *
 *     http_fetch [--at-once N] [--rate R] [--think S] [--retries N] BASE_URL [COUNT]
 *
 * Job i fetches BASE_URL followed by i (for example http://127.0.0.1:8000/7)
 * with its own curl easy handle, then "processes" the response by sleeping a
 * pseudo-random time of up to S seconds (default 2), as the Python example
 * does.  The COUNT (default 100) URLs are fetched twice: first with amap,
 * printing each response the moment it arrives, then with run_all, printing
 * all of them in input order.  On a terminal a progress line shows how far
 * each run has got.
 *
 * A server that answers 429 (Too Many Requests) or 503 (Service Unavailable)
 * is asked again, up to N times (default 5): after the time its Retry-After
 * header gives, or after an exponential backoff without one (aiometer_retry).
 *
 * What it shows: max_at_once and max_per_second protecting a server, amap
 * against run_all, retries that obey the same limits, a job that fails the
 * whole call (aiometer_fail), a transfer that stops when its call is
 * cancelled (aiometer_cancelled), the progress callback and a call's
 * statistics.
 */
#define _POSIX_C_SOURCE 200809L

#include <aiometer.h>
#include <curl/curl.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One URL to fetch, and what came back.  Each request belongs to one job at
 * a time, so its fields need no lock. */
typedef struct request {
    size_t index;
    char *url;
    char *body; /* the response, NUL-terminated */
    size_t len;
    char error[CURL_ERROR_SIZE];
} request;

/* Seconds of simulated processing per response, at most; set once by main()
 * before any job runs, and only read afterwards. */
static double think_seconds = 2.0;

/* The progress line on stderr.  The progress callback draws it from a pool
 * thread while main() prints responses, so both take the lock; main() wipes
 * the line, prints its response and draws the line again below it, so that
 * the progress line stays at the bottom of the terminal. */
typedef struct progress_line {
    pthread_mutex_t lock;
    const char *what; /* which run it is, for the label */
    char text[160];   /* the line as last drawn; "" when there is none */
} progress_line;

static progress_line line = {PTHREAD_MUTEX_INITIALIZER, "", ""};

/* "\r\033[K": back to the start of the line, and clear it. */
#define ERASE_LINE "\r\033[K"

static void show_progress(const aiometer_progress *p, void *user)
{
    progress_line *pl = user;
    size_t finished = p->completed + p->failed;
    size_t running = p->started > finished ? p->started - finished : 0;

    pthread_mutex_lock(&pl->lock);
    snprintf(pl->text, sizeof pl->text, "%s: %zu/%zu done, %zu running, %zu failed, %.1f s",
             pl->what, p->completed, p->total, running, p->failed, p->elapsed);
    fprintf(stderr, ERASE_LINE "%s", pl->text);
    fflush(stderr);
    pthread_mutex_unlock(&pl->lock);
}

/* Print one response on its own line, the progress line kept below it. */
static void print_response(const request *req)
{
    const char *body = req->body != NULL ? req->body : ""; /* an empty response */
    size_t len = req->len;

    /* Servers usually end a body with a newline; we add our own. */
    while (len > 0 && (body[len - 1] == '\n' || body[len - 1] == '\r'))
        len--;
    pthread_mutex_lock(&line.lock);
    if (line.text[0] != '\0')
        fputs(ERASE_LINE, stderr);
    printf("%.*s\n", (int)len, body);
    /* Flush each line so that a pipe sees responses as they arrive, too. */
    fflush(stdout);
    if (line.text[0] != '\0') {
        fputs(line.text, stderr);
        fflush(stderr);
    }
    pthread_mutex_unlock(&line.lock);
}

/* Wipe the progress line; label the next one `what`, or keep the label if
 * it is NULL. */
static void reset_progress(const char *what)
{
    pthread_mutex_lock(&line.lock);
    if (line.text[0] != '\0')
        fputs(ERASE_LINE, stderr);
    line.text[0] = '\0';
    if (what != NULL)
        line.what = what;
    pthread_mutex_unlock(&line.lock);
}

/* libcurl's write callback: append to the request's body. */
static size_t collect(char *data, size_t size, size_t nmemb, void *user)
{
    request *req = user;
    size_t n = size * nmemb;
    char *grown = realloc(req->body, req->len + n + 1);

    if (grown == NULL)
        return 0; /* libcurl then fails the transfer with CURLE_WRITE_ERROR. */
    memcpy(grown + req->len, data, n);
    req->body = grown;
    req->len += n;
    req->body[req->len] = '\0';
    return n;
}

/* libcurl's progress callback, called about once a second and on each chunk
 * of data: a nonzero return aborts the transfer, so a cancelled call (another
 * job failed, or the user's deadline passed) stops waiting for the network. */
static int stop_if_cancelled(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                             curl_off_t ulnow)
{
    (void)user, (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return aiometer_cancelled();
}

/* A repeatable stand-in for random() in [0, 1): it needs no lock and gives
 * each index the same "processing time" in both runs. */
static double fraction_for(size_t index)
{
    uint32_t h = (uint32_t)index * 2654435761u;
    return (double)(h >> 8) / (double)(1u << 24);
}

/* The job: fetch one URL.  Any failure fails the whole call, as an exception
 * in the Python original would; the call then cancels the other transfers. */
static void *fetch(void *arg)
{
    request *req = arg;
    CURL *curl = curl_easy_init();

    free(req->body);
    req->body = NULL;
    req->len = 0;
    req->error[0] = '\0';
    if (curl == NULL) {
        aiometer_fail(ENOMEM);
        return NULL;
    }
    curl_easy_setopt(curl, CURLOPT_URL, req->url);
    /* Threads and signals do not mix: without this, libcurl may use SIGALRM
     * for its timeouts, which would land in any thread of the process. */
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, req->error);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, req);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, stop_if_cancelled);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    CURLcode rc = curl_easy_perform(curl);
    long status = 0;
    double retry_after = -1; /* no Retry-After: back off */
    if (rc == CURLE_OK) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
#if LIBCURL_VERSION_NUM >= 0x074200 /* 7.66.0: CURLINFO_RETRY_AFTER */
        curl_off_t after = 0;
        /* 0 when the header is missing (or says 0, or gives a date). */
        if (curl_easy_getinfo(curl, CURLINFO_RETRY_AFTER, &after) == CURLE_OK && after > 0)
            retry_after = (double)after;
#endif
    }
    curl_easy_cleanup(curl);

    if (rc == CURLE_ABORTED_BY_CALLBACK)
        return NULL; /* The call was cancelled; it reports why. */
    if (rc == CURLE_OK && (status == 429 || status == 503)) {
        /* The server is busy: try this URL again later, when it says.  The
         * retry waits without holding a place of max_at_once, and starts
         * under the same rate limit as every other request.  After the
         * last retry the job fails with EAGAIN. */
        aiometer_retry(EAGAIN, retry_after);
        return NULL;
    }
    if (rc != CURLE_OK || status >= 400) {
        reset_progress(NULL); /* Keep the message off the progress line. */
        if (rc != CURLE_OK)
            fprintf(stderr, "http_fetch: %s: %s\n", req->url,
                    req->error[0] != '\0' ? req->error : curl_easy_strerror(rc));
        else
            fprintf(stderr, "http_fetch: %s: HTTP status %ld\n", req->url, status);
        aiometer_fail(EIO);
        return NULL;
    }

    /* Simulated processing, as in the Python example.  It keeps the job's
     * slot of max_at_once, and makes responses finish out of order. */
    aiometer_sleep(think_seconds * fraction_for(req->index));
    return req;
}

static void print_stats(const aiometer_stats *st)
{
    printf("(%zu fetched in %.2f s, %.1f a second; at most %zu at once; "
           "%.1f s spent waiting for the rate limit; %zu retried)\n",
           st->completed, st->elapsed, st->elapsed > 0 ? st->completed / st->elapsed : 0.0,
           st->peak_running, st->limiter_wait, st->retried);
    fflush(stdout);
}

static void usage(void)
{
    fputs("usage: http_fetch [--at-once N] [--rate R] [--think S] [--retries N]\n"
          "                  BASE_URL [COUNT]\n"
          "  fetches BASE_URL0 .. BASE_URL<COUNT-1> (COUNT defaults to 100)\n"
          "  --at-once N  most transfers at once (default 10)\n"
          "  --rate R     most transfers started a second (default 5)\n"
          "  --think S    up to S seconds of simulated work per response (default 2)\n"
          "  --retries N  tries again after a 429 or 503 answer, at most (default 5)\n",
          stderr);
    exit(2);
}

static double number_arg(const char *s, double min, double max)
{
    char *end;
    double v = strtod(s, &end);

    if (end == s || *end != '\0' || !(v >= min && v <= max)) {
        fprintf(stderr, "http_fetch: bad number '%s'\n", s);
        usage();
    }
    return v;
}

int main(int argc, char **argv)
{
    size_t at_once = 10;
    double rate = 5;
    const char *base = NULL;
    size_t count = 100;
    size_t retries = 5;
    int positional = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--at-once") == 0 && i + 1 < argc) {
            at_once = (size_t)number_arg(argv[++i], 1, AIOMETER_MAX_THREADS);
        } else if (strcmp(a, "--rate") == 0 && i + 1 < argc) {
            rate = number_arg(argv[++i], 0.001, 1e6);
        } else if (strcmp(a, "--think") == 0 && i + 1 < argc) {
            think_seconds = number_arg(argv[++i], 0, 3600);
        } else if (strcmp(a, "--retries") == 0 && i + 1 < argc) {
            retries = (size_t)number_arg(argv[++i], 0, 1000);
        } else if (a[0] == '-') {
            usage();
        } else if (positional == 0) {
            base = a;
            positional++;
        } else if (positional == 1) {
            count = (size_t)number_arg(a, 1, 1e7);
            positional++;
        } else {
            usage();
        }
    }
    if (base == NULL)
        usage();

    /* libcurl's global set-up is not thread-safe: do it before any job
     * (and so any pool thread) exists. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fputs("http_fetch: curl_global_init failed\n", stderr);
        return EXIT_FAILURE;
    }

    request *reqs = calloc(count, sizeof *reqs);
    void **args = calloc(count, sizeof *args);
    aiometer_job *jobs = calloc(count, sizeof *jobs);
    void **results = calloc(count, sizeof *results);
    if (reqs == NULL || args == NULL || jobs == NULL || results == NULL) {
        fputs("http_fetch: out of memory\n", stderr);
        return EXIT_FAILURE;
    }
    size_t base_len = strlen(base);
    for (size_t i = 0; i < count; i++) {
        reqs[i].index = i;
        reqs[i].url = malloc(base_len + 24);
        if (reqs[i].url == NULL) {
            fputs("http_fetch: out of memory\n", stderr);
            return EXIT_FAILURE;
        }
        sprintf(reqs[i].url, "%s%zu", base, i);
        args[i] = &reqs[i];
        jobs[i].fn = fetch;
        jobs[i].arg = &reqs[i];
    }

    aiometer_stats stats;
    aiometer_options opts = {0};
    opts.max_at_once = at_once; /* Limit the transfers running at any time. */
    opts.max_per_second = rate; /* Limit the rate, not to overload the server. */
    opts.retries = retries;     /* Ask again when the server says it is busy. */
    opts.stats = &stats;
    if (isatty(STDERR_FILENO)) {
        opts.progress = show_progress;
        opts.progress_arg = &line;
        opts.progress_interval = 0.2;
    }
    int status = EXIT_SUCCESS;

    /* First: process responses as they are made available. */
    printf("Responses as they arrive (amap):\n");
    fflush(stdout);
    reset_progress("amap");
    aiometer_amap *it;
    int err = aiometer_amap_open(&it, fetch, args, count, &opts);
    if (err != 0) {
        fprintf(stderr, "http_fetch: aiometer_amap_open: %s\n", aiometer_strerror(err));
        return EXIT_FAILURE;
    }
    void *result;
    while ((err = aiometer_amap_next(it, &result, NULL)) == 0) {
        /* NULL is a transfer that stopped because another job failed. */
        if (result != NULL)
            print_response(result);
    }
    /* A job's failure is reported once; the loop then goes on to the
     * responses that did arrive, so only the first error stops it here. */
    int close_err = aiometer_amap_close(it);
    reset_progress("");
    if (err != AIOMETER_DONE || close_err != 0) {
        fprintf(stderr, "http_fetch: amap: %s\n",
                aiometer_strerror(err != AIOMETER_DONE ? err : close_err));
        status = EXIT_FAILURE;
    } else {
        print_stats(&stats);
    }

    /* Then: fetch them all again and collect the responses in input order. */
    if (status == EXIT_SUCCESS) {
        printf("All responses in order (run_all):\n");
        fflush(stdout);
        reset_progress("run_all");
        err = aiometer_run_all(jobs, count, results, &opts);
        reset_progress("");
        if (err != 0) {
            fprintf(stderr, "http_fetch: run_all: %s\n", aiometer_strerror(err));
            status = EXIT_FAILURE;
        } else {
            for (size_t i = 0; i < count; i++)
                print_response(results[i]);
            print_stats(&stats);
        }
    }

    for (size_t i = 0; i < count; i++) {
        free(reqs[i].url);
        free(reqs[i].body);
    }
    free(reqs);
    free(args);
    free(jobs);
    free(results);
    curl_global_cleanup();
    return status;
}
