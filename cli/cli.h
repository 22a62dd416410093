/* cli.h - the aiometer(1) command's private declarations.
 *
 * The command is built only on the library's public header: nothing here
 * reaches into src/.  Its files, one concern each:
 *   options.c   the command line, checked before anything runs
 *   input.c     the input's lines, read as jobs can start, until a stop
 *   cmdline.c   a job's command line: {} and {#}, --shell quoting
 *   spawn.c     one job: the child process, its output
 *   output.c    grouped output, --tag, --joblog and --progress
 *   retry.c     --retries: a failed attempt's record, jobs in backoff
 *   reap.c      the processes a job leaves behind, reaped when they end
 *   shared.c    the shared limiter: --limiter NAME or --redis URL --key K
 *   aiometer.c  main: input, signals, the amap loop, the exit status
 */
#ifndef AIOMETER_CLI_H
#define AIOMETER_CLI_H

#include <aiometer.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* The exit status of any error other than failed jobs. */
#define CLI_EXIT_ERROR 255
/* Jobs may run at once at most this many: the pool is made this size. */
#define CLI_MAX_JOBS AIOMETER_MAX_THREADS
/* --retries at most: enough for any backoff schedule a person would want,
 * and a bound on the joblog lines a job keeps. */
#define CLI_MAX_RETRIES 1000

enum cli_halt { CLI_HALT_NEVER, CLI_HALT_SOON, CLI_HALT_NOW };
enum cli_progress { CLI_PROGRESS_OFF, CLI_PROGRESS_TTY, CLI_PROGRESS_ALWAYS };

/* What the command line asked for.  Filled by cli_parse_options and never
 * changed afterwards, so every thread may read it without a lock. */
struct cli_config {
    char **cmd;         /* COMMAND [ARG...], the template, NULL-terminated */
    size_t ncmd;
    char **args;        /* the words after :::, or NULL: read the input */
    size_t nargs;
    const char *arg_file; /* -a FILE, or NULL: standard input */
    int null_sep;       /* -0: NUL-separated input */
    size_t max_at_once; /* -j */
    double rate;        /* -r; 0: none */
    size_t burst;       /* --burst; 0: 1 */
    const char *limiter; /* --limiter NAME, or NULL */
    size_t limiter_max; /* --limiter-max-at-once; 0: none */
    const char *redis_url; /* --redis URL, or NULL */
    const char *redis_key; /* --key K, with --redis */
    size_t retries;     /* --retries: extra attempts of a failed job */
    double retry_delay; /* --retry-delay; 0: the library's (0.1 s) */
    double retry_max_delay; /* --retry-max-delay; 0: the library's (30 s) */
    int keep_order;     /* -k */
    int ungroup;        /* -u */
    int tag;            /* --tag */
    int shell;          /* --shell */
    int dry_run;        /* --dry-run */
    double timeout;     /* --timeout, per job; 0: none */
    double deadline;    /* --deadline, the whole run; 0: none */
    enum cli_halt halt;
    const char *joblog; /* --joblog FILE, or NULL */
    enum cli_progress progress;
};

/* Parse argv into *cfg.  0, or CLI_EXIT_ERROR after printing a short
 * message that names the offending option; -1 when --help or --version was
 * answered and the command should exit 0. */
int cli_parse_options(int argc, char **argv, struct cli_config *cfg);

/* Captured output of one stream: memory first, then an unlinked temporary
 * file once it passes CLI_SINK_MEMORY bytes, so a job that prints a lot
 * costs disk, not memory. */
#define CLI_SINK_MEMORY (64 * 1024)
struct cli_sink {
    char *buf;
    size_t len, cap;
    int fd;  /* -1 until the output outgrew memory */
    int err; /* 0, or why the rest of the output was dropped (errno) */
};

/* A failed attempt of a job that was tried again, for --joblog. */
struct cli_attempt {
    double start_real, runtime;
    int exitval, sig;
};

/* One job, from the input to its last line of output.  A pool thread fills
 * in everything below `seq` and `arg` while it runs an attempt of the job;
 * the main thread reads it only after the job was handed back by
 * aiometer_amap_next, which orders the two, or after the call was closed
 * (a job the library never handed back: see retry.c).  Two
 * attempts of a job never run at once, and the library orders one after
 * the other. */
struct cli_job {
    size_t seq;        /* {#}: the position in the input, from 1 */
    char *arg;         /* {}: the argument */
    int started;       /* 0: the job never started (halt, signal) */
    size_t attempts;   /* attempts started so far (--retries) */
    struct cli_attempt *tries; /* the failed attempts before the last, for --joblog */
    size_t ntries;
    struct cli_job *prev, *next; /* in cli_run.held while the library holds it */
    int parked;        /* on cli_run.held to wait out a backoff, not finished */
    int spawn_err;     /* errno of posix_spawn, or 0 */
    int exitval;       /* exit status, or 0 if a signal ended it */
    int sig;           /* the signal that ended it, or 0 */
    int timed_out;     /* --timeout killed it */
    double start_real; /* Unix time of its start, for --joblog only */
    double runtime;    /* seconds, on CLOCK_MONOTONIC */
    char *display;     /* the command as --dry-run and --joblog show it */
    struct cli_sink out, err;
};

/* State shared by the main thread, the signal thread and the job threads. */
struct cli_run {
    const struct cli_config *cfg;
    atomic_int stop_starting; /* halt or a signal: no further job starts */
    int stop_fd; /* readable once stop_starting is set: ends a wait for input */
    atomic_size_t started, finished, failed;
    int kill_now_fd; /* readable once every child must get SIGKILL at once */
    /* The running call, for cancelling it from a job (--halt now) or the
     * signal thread.  `lock` guards `it`: it is set after the call opened
     * and cleared before it is closed. */
    pthread_mutex_t lock;
    aiometer_amap *it;
    /* Jobs the library holds: finished and not yet handed back, or
     * waiting out a backoff.  What the end of the call leaves there is
     * still written (retry.c).  held_lock guards the list and each job's
     * prev, next and parked; nothing else is done while it is held. */
    pthread_mutex_t held_lock;
    struct cli_job *held;
    /* How many of the held jobs are parked: written under held_lock, read
     * without it, so that with -k a job handed back looks for parked jobs
     * before it (cli_retry_passed_over) only when there are any. */
    atomic_size_t nparked;
};

/* The error a failed attempt passes to aiometer_retry.  The library hands
 * it back only for a job whose backoff the end of the call cut short, and
 * such jobs are reported from cli_run.held instead. */
#define CLI_ATTEMPT_FAILED ECHILD

/* retry.c.  Called by the job thread at the end of a failed attempt: 1 if
 * the job was parked for another attempt (it called aiometer_retry), 0 if
 * this attempt is its last. */
int cli_retry_attempt(struct cli_run *run, struct cli_job *job);
/* A job function hands the job back to the library: put it on the held
 * list, parked (waiting to retry) or finished. */
void cli_held_add(struct cli_run *run, struct cli_job *job, int parked);
/* The job is running its next attempt, or the main thread has taken it
 * from aiometer_amap_next: off the held list. */
void cli_held_remove(struct cli_run *run, struct cli_job *job);
/* As the next attempt begins, keep the last one's figures for --joblog,
 * which writes one line per attempt. */
void cli_retry_record(const struct cli_config *cfg, struct cli_job *job);
/* With -k, before job seq is written: the parked jobs before it, which a
 * stop ended in their backoff and the library passed over, in input order,
 * each passed to report and freed (as cli_retry_leftovers does). */
void cli_retry_passed_over(struct cli_run *run, size_t seq,
                           void (*report)(struct cli_job *job, void *arg), void *arg);
/* After the call was closed: the jobs still held, which the library never
 * handed back, in input order.  Each is passed to report (which writes it,
 * and counts it as failed if it is parked: its last attempt failed) and
 * freed. */
void cli_retry_leftovers(struct cli_run *run, void (*report)(struct cli_job *job, void *arg),
                         void *arg);

/* reap.c.  A job's command, from its spawn until its job reaped it: the
 * reaper of leftovers never takes its exit status.  A spawn goes between
 * cli_reap_begin and cli_reap_end (pid -1 if it failed), which lists it;
 * cli_reap_forget takes it off the list once its thread has reaped it. */
struct cli_child {
    pid_t pid;
    struct cli_child *prev, *next;
};
void cli_reap_begin(void);
void cli_reap_end(struct cli_child *c, pid_t pid);
void cli_reap_forget(struct cli_child *c);

/* shared.c: open the limiter of --limiter or --redis, if either was given
 * (*lim stays NULL otherwise).  0, or CLI_EXIT_ERROR after a message. */
int cli_open_shared_limiter(const struct cli_config *cfg, aiometer_limiter **lim);

/* No further job starts: set stop_starting and wake a wait for input (any
 * thread). */
void cli_stop_starting(struct cli_run *run);
/* That, and cancel the running call, if there is one (any thread). */
void cli_cancel_run(struct cli_run *run);

/* input.c: the input's lines, for the job source (which the library never
 * calls twice at once, so the reader needs no lock). */
struct cli_input {
    int fd;               /* standard input or -a FILE */
    int delim;            /* '\n', or '\0' with -0 */
    int stop_fd;          /* a wait for input ends once it is readable */
    uint64_t deadline_ns; /* --deadline on cli_now_ns's clock; 0: none */
    char *buf;            /* read but not handed out: buf[start, start+len) */
    size_t start, len, cap;
    int eof;
    int read_err;         /* errno of a failed read, or 0 */
};
/* The next line without its delimiter (malloc'd) in *line: 0; AIOMETER_DONE
 * at the end of the input or once stop_fd is readable; ETIMEDOUT at the
 * deadline; ENOMEM; or a read error's errno, also left in read_err. */
int cli_input_next(struct cli_input *in, char **line);
void cli_input_free(struct cli_input *in);

/* spawn.c: nanoseconds on CLOCK_MONOTONIC. */
uint64_t cli_now_ns(void);

/* The job function given to the library: runs one struct cli_job. */
void *cli_run_job(void *job);
/* The run that every job belongs to; set once before the call opens. */
extern struct cli_run *cli_the_run;

/* A job is a failure if it started and did not exit with status 0, or if
 * part of its output could not be kept. */
int cli_job_failed(const struct cli_job *job);
void cli_job_free(struct cli_job *job);

/* Raise the soft limit on open descriptors to the hard one: with -k, each
 * finished job that waits for an earlier one keeps its sinks' temporary
 * files open. */
void cli_raise_fd_limit(void);

/* Append to a sink; 0 or an errno value.  After an error the sink keeps
 * what it had and takes nothing more: s->err says why. */
int cli_sink_append(struct cli_sink *s, const char *data, size_t n);
/* The directory of the temporary files: $TMPDIR, or /tmp. */
const char *cli_sink_dir(void);
void cli_sink_free(struct cli_sink *s);

/* output.c: all of it runs on the main thread, except the progress line,
 * which the library calls from a job thread; cli_output_lock orders the two
 * on standard error. */
int cli_output_open(const struct cli_config *cfg);
int cli_output_job(const struct cli_config *cfg, const struct cli_job *job);
void cli_output_close(void);
void cli_progress(const aiometer_progress *p, void *user);
void cli_progress_end(void);
extern size_t cli_total_jobs; /* for the ETA; 0: unknown */

/* Write all of buf to fd, retrying short writes and EINTR; 0 or errno. */
int cli_write_all(int fd, const char *buf, size_t n);

/* cmdline.c: the argument vector of a job, and in *display the command as
 * the user would type it (malloc'd); NULL on ENOMEM. */
char **cli_build_argv(const struct cli_config *cfg, const struct cli_job *job, char **display);
void cli_free_argv(char **argv);

/* A word quoted for /bin/sh ('...' with each ' written '\''), malloc'd.
 * Words made only of safe characters come back unquoted when `always` is 0. */
char *cli_shell_quote(const char *word, int always);

#endif /* AIOMETER_CLI_H */
