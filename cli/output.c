/* output.c - what the command writes: each job's output whole, --tag,
 * --joblog and the --progress line.
 *
 * Job output and the joblog are written by the main thread only, one job
 * at a time, so two jobs' output never interleave.  The progress line is
 * drawn from whichever job thread the library calls it on; output_lock
 * keeps it off standard error while a job's output is being written there. */
#include "config.h"
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

size_t cli_total_jobs;

static pthread_mutex_t output_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *joblog;
static int progress_on;  /* the line is drawn */
static int progress_shown; /* a line is on the screen now: clear it first */

int cli_write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

int cli_output_open(const struct cli_config *cfg)
{
    if (cfg->joblog) {
        joblog = fopen(cfg->joblog, "we");
        if (!joblog) {
            fprintf(stderr, "aiometer: --joblog %s: %s\n", cfg->joblog, strerror(errno));
            return CLI_EXIT_ERROR;
        }
        /* GNU parallel's column names, for the columns we have. */
        fputs("Seq\tStarttime\tJobRuntime\tExitval\tSignal\tCommand\n", joblog);
        fflush(joblog);
    }
    progress_on = cfg->progress == CLI_PROGRESS_ALWAYS ||
                  (cfg->progress == CLI_PROGRESS_TTY && isatty(2));
    return 0;
}

void cli_output_close(void)
{
    if (joblog)
        fclose(joblog);
    joblog = NULL;
}

/* Write data to fd, each line preceded by tag and a tab.  *bol says whether
 * the next byte starts a line; it carries over between calls. */
static int write_tagged(int fd, const char *tag, const char *data, size_t n, int *bol)
{
    size_t tlen = strlen(tag);
    int err = 0;

    while (n > 0 && !err) {
        const char *nl = memchr(data, '\n', n);
        size_t len = nl ? (size_t)(nl - data) + 1 : n;

        if (*bol) {
            err = cli_write_all(fd, tag, tlen);
            if (!err)
                err = cli_write_all(fd, "\t", 1);
        }
        if (!err)
            err = cli_write_all(fd, data, len);
        *bol = nl != NULL;
        data += len;
        n -= len;
    }
    return err;
}

/* One captured stream, memory then file, to fd. */
static int emit_sink(const struct cli_sink *s, int fd, const char *tag)
{
    int bol = 1, err = 0;
    char buf[65536];
    ssize_t r;

    if (s->len)
        err = tag ? write_tagged(fd, tag, s->buf, s->len, &bol)
                  : cli_write_all(fd, s->buf, s->len);
    if (err || s->fd < 0)
        return err;
    if (lseek(s->fd, 0, SEEK_SET) < 0)
        return errno;
    while (!err && (r = read(s->fd, buf, sizeof(buf))) != 0) {
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        err = tag ? write_tagged(fd, tag, buf, (size_t)r, &bol)
                  : cli_write_all(fd, buf, (size_t)r);
    }
    return err;
}

/* Take the progress line off the screen before writing to standard
 * error.  The caller holds output_lock. */
static void clear_progress(void)
{
    if (progress_shown) {
        (void)cli_write_all(2, "\r\033[K", 4);
        progress_shown = 0;
    }
}

/* Say on standard error that a stream of the job was cut short, after
 * what was kept of it.  The caller holds output_lock. */
static void tell_lost(const struct cli_job *job, const struct cli_sink *s, const char *name)
{
    char msg[1024];
    int n;

    if (!s->err)
        return;
    n = snprintf(msg, sizeof(msg),
                 "aiometer: job %zu (%s): its standard %s was cut short, and it counts as "
                 "failed: cannot keep it in %s: %s\n",
                 job->seq, job->display ? job->display : job->arg, name, cli_sink_dir(),
                 strerror(s->err));
    if (n > 0)
        (void)cli_write_all(2, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
}

int cli_output_job(const struct cli_config *cfg, const struct cli_job *job)
{
    const char *tag = cfg->tag ? job->arg : NULL;
    int err = 0;

    if (!job->started)
        return 0;
    if (job->out.len || job->out.fd >= 0)
        err = emit_sink(&job->out, 1, tag);
    if (!err && (job->err.len || job->err.fd >= 0)) {
        pthread_mutex_lock(&output_lock);
        clear_progress();
        err = emit_sink(&job->err, 2, tag);
        pthread_mutex_unlock(&output_lock);
    }
    if (!err && (job->out.err || job->err.err)) {
        pthread_mutex_lock(&output_lock);
        clear_progress();
        tell_lost(job, &job->out, "output");
        tell_lost(job, &job->err, "error");
        pthread_mutex_unlock(&output_lock);
    }
    if (err) {
        fprintf(stderr, "aiometer: cannot write the output: %s\n", strerror(err));
        return CLI_EXIT_ERROR;
    }
    if (joblog) {
        /* One line per attempt, in the order they ran: the retried ones,
         * then the last, which decided the job's fate. */
        for (size_t i = 0; i < job->ntries; i++)
            fprintf(joblog, "%zu\t%.6f\t%.6f\t%d\t%d\t%s\n", job->seq, job->tries[i].start_real,
                    job->tries[i].runtime, job->tries[i].exitval, job->tries[i].sig,
                    job->display ? job->display : "");
        fprintf(joblog, "%zu\t%.6f\t%.6f\t%d\t%d\t%s\n", job->seq, job->start_real,
                job->runtime, job->exitval, job->sig, job->display ? job->display : "");
        if (fflush(joblog) != 0) {
            fprintf(stderr, "aiometer: --joblog %s: %s\n", cfg->joblog, strerror(errno));
            return CLI_EXIT_ERROR;
        }
    }
    return 0;
}

/* The library calls this at most ten times a second (progress_interval),
 * never twice at once, and once more at the end of the call. */
void cli_progress(const aiometer_progress *p, void *user)
{
    struct cli_run *run = user;
    size_t started = atomic_load(&run->started), done = atomic_load(&run->finished);
    size_t failed = atomic_load(&run->failed);
    double rate = p->elapsed > 0 ? (double)done / p->elapsed : 0;
    char line[256];
    int n;

    if (!progress_on)
        return;
    n = snprintf(line, sizeof(line), "\raiometer: %zu started, %zu done, %zu failed, %.1f/s",
                 started, done, failed, rate);
    if (cli_total_jobs && rate > 0 && done <= cli_total_jobs && n > 0 &&
        (size_t)n < sizeof(line))
        n += snprintf(line + n, sizeof(line) - (size_t)n, ", ETA %.0fs",
                      (double)(cli_total_jobs - done) / rate);
    if (run->cfg->retries && n > 0 && (size_t)n < sizeof(line))
        n += snprintf(line + n, sizeof(line) - (size_t)n, ", %zu retried", p->retried);
    if (n < 0 || (size_t)n >= sizeof(line) - 4)
        return;
    memcpy(line + n, "\033[K", 3);
    n += 3;
    pthread_mutex_lock(&output_lock);
    (void)cli_write_all(2, line, (size_t)n);
    progress_shown = 1;
    pthread_mutex_unlock(&output_lock);
}

/* The last progress line stays, ended by a newline. */
void cli_progress_end(void)
{
    pthread_mutex_lock(&output_lock);
    if (progress_on && progress_shown)
        (void)cli_write_all(2, "\n", 1);
    progress_shown = 0;
    pthread_mutex_unlock(&output_lock);
}
