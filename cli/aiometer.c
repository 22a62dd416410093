/* aiometer.c - aiometer(1): run a command once per input line, with a cap on
 * how many run at once and how many start per second.
 *
 * The shape of a run: the library's amap pulls arguments from a lazy source
 * (the input, read only when a job can start, so memory stays bounded
 * whatever its length: input.c), runs each job on its pool (spawn.c), and
 * hands the finished jobs back to this thread, in input order with -k,
 * which writes their output whole (output.c).
 *
 * Signals: SIGINT, SIGTERM, SIGHUP and SIGQUIT are blocked in every thread
 * (the mask is set before the first thread starts, and threads inherit it)
 * and taken by one thread in sigwait().  The first one stops new starts and
 * cancels the call,
 * which every job sees on its cancel descriptor and answers by killing its
 * process group; a second SIGINT makes them SIGKILL at once.  Stopping the
 * starts also makes the stop pipe readable, which ends a wait for input:
 * the call counts the thread that waits there as running, and would wait
 * for it. */
#include "config.h"
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

struct cli_run *cli_the_run;

/* Where the arguments come from.  The library never calls the source twice
 * at once, so it needs no lock. */
struct source {
    const struct cli_config *cfg;
    struct cli_input *in; /* NULL: the ::: words */
    size_t next;     /* the next ::: word */
    size_t seq;      /* jobs handed out so far */
};

static int next_arg(void *state, void **out)
{
    struct source *src = state;
    struct cli_job *job;
    char *arg;

    if (atomic_load(&cli_the_run->stop_starting))
        return AIOMETER_DONE;
    if (!src->in) {
        if (src->next >= src->cfg->nargs)
            return AIOMETER_DONE;
        arg = strdup(src->cfg->args[src->next++]);
    } else {
        /* A stop while waiting for input ends the input: AIOMETER_DONE.
         * The deadline fails the call with ETIMEDOUT, which main takes
         * for the deadline, as the library's own would be. */
        int err = cli_input_next(src->in, &arg);

        if (err)
            return err;
    }
    job = calloc(1, sizeof(*job));
    if (!job || !arg) {
        free(job);
        free(arg);
        return ENOMEM;
    }
    job->arg = arg;
    job->seq = ++src->seq;
    job->out.fd = job->err.fd = -1;
    *out = job;
    return 0;
}

static int stop_w = -1;

void cli_stop_starting(struct cli_run *run)
{
    /* One byte, by whoever stops first; the pipe stays readable after. */
    if (atomic_exchange(&run->stop_starting, 1) == 0)
        (void)cli_write_all(stop_w, "s", 1);
}

void cli_cancel_run(struct cli_run *run)
{
    cli_stop_starting(run);
    pthread_mutex_lock(&run->lock);
    if (run->it)
        aiometer_amap_cancel(run->it);
    pthread_mutex_unlock(&run->lock);
}

static atomic_int got_signal;
static int kill_now_w = -1;

/* The signal thread: the only place the signals of stop_signals are taken. */
static void *signal_thread(void *arg)
{
    sigset_t *set = arg;
    int sig, count = 0;

    for (;;) {
        if (sigwait(set, &sig) != 0)
            continue;
        if (count++ == 0) {
            atomic_store(&got_signal, sig);
            cli_cancel_run(cli_the_run);
        } else if (sig == SIGINT) {
            /* A second SIGINT: no grace, every job's group gets SIGKILL. */
            (void)cli_write_all(kill_now_w, "k", 1);
        }
    }
    return NULL;
}

/* A job the library never handed back (retry.c): one that finished, or
 * one that was waiting to be tried again when the call ended, whose last
 * attempt failed.  Each is written like any finished job. */
struct leftovers {
    const struct cli_config *cfg;
    int output_gone; /* writing failed: write nothing more */
};

static void report_leftover(struct cli_job *job, void *arg)
{
    struct leftovers *left = arg;

    if (job->parked)
        atomic_fetch_add(&cli_the_run->failed, 1);
    if (!left->output_gone && cli_output_job(left->cfg, job) != 0)
        left->output_gone = 1;
}

/* A standard descriptor we were started without must stay unused: the
 * next descriptor we open would take its number, and the input would be
 * read from, or the output written into, a pipe of our own (the kill
 * pipe, say, whose read end the kill then waits on).  Each closed one gets
 * /dev/null opened the wrong way round, so that it behaves as the closed
 * descriptor it stands for: reading 0, or writing 1 or 2, fails with
 * EBADF, and the manual's statuses for an unreadable input and unwritable
 * output apply.  Close-on-exec: a job, too, finds it closed.  open() takes
 * the lowest free number, so going up from 0 fills each gap in place. */
static int reserve_std_fds(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        if (open("/dev/null", (fd == 0 ? O_WRONLY : O_RDONLY) | O_CLOEXEC) < 0)
            return errno;
    }
    return 0;
}

/* The signals that stop a run, into *set.  The jobs run in process groups
 * of their own, so a hangup or a quit from the terminal never reaches them:
 * dying of SIGHUP or SIGQUIT would leave them running, orphaned.  Each is
 * taken like SIGTERM instead.  A SIGHUP ignored when we start (nohup) stays
 * ignored, for us and the jobs: a blocked signal is kept pending even when
 * ignored, and sigwait would take it.  SIGINT and SIGQUIT are taken even so,
 * as SIGINT always was: a shell without job control starts a background
 * command with both ignored, and it must still answer kill -INT. */
static void stop_signals(sigset_t *set)
{
    struct sigaction hup;

    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGQUIT);
    if (sigaction(SIGHUP, NULL, &hup) != 0 || hup.sa_handler != SIG_IGN)
        sigaddset(set, SIGHUP);
}

static int fail(const char *what, int err)
{
    fprintf(stderr, "aiometer: %s: %s\n", what, strerror(err));
    return CLI_EXIT_ERROR;
}

int main(int argc, char **argv)
{
    static struct cli_config cfg;
    static struct cli_run run;
    struct source src = {0};
    struct cli_input input = {0};
    struct leftovers left = {&cfg, 0};
    aiometer_options opts = {0};
    aiometer_limiter *lim = NULL;
    aiometer_pool *pool = NULL;
    aiometer_amap *it;
    pthread_t sig_tid;
    sigset_t set;
    int ret, err, pipefd[2], error_seen = 0, deadline_hit = 0;
    int output_gone = 0;
    size_t failed;
    void *result;

    err = reserve_std_fds();
    if (err)
        return fail("/dev/null", err);
    ret = cli_parse_options(argc, argv, &cfg);
    if (ret)
        return ret < 0 ? 0 : ret;

    /* A reader that goes away gives EPIPE on write, not a silent death;
     * a SIGCHLD ignored by whoever started us would reap our children
     * behind waitpid's back. */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGCHLD, SIG_DFL);
    /* Processes a job leaves behind become our children when the job's
     * command ends, so that a kill can tell when its whole group is gone
     * (reaped) instead of waiting on zombies for some init to collect. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    cli_raise_fd_limit();
    stop_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    run.cfg = &cfg;
    pthread_mutex_init(&run.lock, NULL);
    pthread_mutex_init(&run.held_lock, NULL);
    cli_the_run = &run;
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return fail("pipe", errno);
    run.kill_now_fd = pipefd[0];
    kill_now_w = pipefd[1];
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return fail("pipe", errno);
    run.stop_fd = pipefd[0];
    stop_w = pipefd[1];

    src.cfg = &cfg;
    if (cfg.args) {
        cli_total_jobs = cfg.nargs;
    } else {
        input.fd = 0;
        if (cfg.arg_file) {
            input.fd = open(cfg.arg_file, O_RDONLY | O_CLOEXEC);
            if (input.fd < 0)
                return fail(cfg.arg_file, errno);
        }
        input.delim = cfg.null_sep ? '\0' : '\n';
        input.stop_fd = run.stop_fd;
        src.in = &input;
    }

    ret = cli_open_shared_limiter(&cfg, &lim);
    if (ret)
        return ret;
    if (lim) {
        opts.limiter = lim;
    } else {
        opts.max_per_second = cfg.rate;
        opts.max_burst = cfg.burst;
    }
    err = aiometer_pool_create(&pool, cfg.max_at_once);
    if (err)
        return fail("cannot make the thread pool", err);
    ret = cli_output_open(&cfg);
    if (ret)
        return ret;
    err = pthread_create(&sig_tid, NULL, signal_thread, &set);
    if (err)
        return fail("cannot start the signal thread", err);
    pthread_detach(sig_tid);

    opts.max_at_once = cfg.max_at_once;
    opts.pool = pool;
    opts.timeout = cfg.deadline;
    opts.ordered = cfg.keep_order;
    opts.retries = cfg.retries;
    opts.retry_delay = cfg.retry_delay;
    opts.retry_max_delay = cfg.retry_max_delay;
    if (cfg.progress != CLI_PROGRESS_OFF) {
        opts.progress = cli_progress;
        opts.progress_arg = &run;
        opts.progress_interval = 0.1;
    }

    /* The reader's deadline starts with the library's, a moment earlier. */
    if (cfg.deadline > 0)
        input.deadline_ns = cli_now_ns() + (uint64_t)(cfg.deadline * 1e9);
    pthread_mutex_lock(&run.lock);
    err = aiometer_amap_open_source(&it, cli_run_job, next_arg, &src, &opts);
    if (!err)
        run.it = it;
    pthread_mutex_unlock(&run.lock);
    if (err)
        return fail("cannot start", err);

    for (;;) {
        err = aiometer_amap_next(it, &result, NULL);
        if (err == 0) {
            struct cli_job *job = result;

            cli_held_remove(&run, job);
            if (cfg.keep_order) {
                /* Jobs before this one that a stop ended in their backoff:
                 * the library passed over their places (retry.c). */
                left.output_gone = output_gone;
                cli_retry_passed_over(&run, job->seq, report_leftover, &left);
                if (left.output_gone && !output_gone) {
                    output_gone = error_seen = 1;
                    cli_cancel_run(&run);
                }
            }
            if (!output_gone && cli_output_job(&cfg, job) != 0) {
                /* The output is gone: stop everything, keep the rest quiet. */
                output_gone = error_seen = 1;
                cli_cancel_run(&run);
            }
            cli_job_free(job);
            continue;
        }
        if (err == AIOMETER_DONE || err == ECANCELED || err == ETIMEDOUT) {
            deadline_hit = err == ETIMEDOUT;
            break;
        }
        /* A job whose backoff the end of the call cut short: it is
         * reported from the held list after the close. */
        if (err == CLI_ATTEMPT_FAILED && !input.read_err)
            continue;
        /* A failing source (a read error) or shared limiter (Redis gone):
         * no further job starts, the running ones are cancelled, and the
         * jobs that did finish are still handed back. */
        if (error_seen)
            ;
        else if (input.read_err)
            fprintf(stderr, "aiometer: cannot read the input: %s\n", aiometer_strerror(err));
        else if (cfg.redis_url)
            fprintf(stderr, "aiometer: --redis %s: %s: no further job starts\n", cfg.redis_url,
                    aiometer_strerror(err));
        else
            fprintf(stderr, "aiometer: the run failed: %s\n", aiometer_strerror(err));
        error_seen = 1;
    }
    pthread_mutex_lock(&run.lock);
    run.it = NULL;
    pthread_mutex_unlock(&run.lock);
    err = aiometer_amap_close(it);
    if (err == ETIMEDOUT)
        deadline_hit = 1;
    cli_progress_end();
    left.output_gone = output_gone;
    cli_retry_leftovers(&run, report_leftover, &left);
    if (left.output_gone)
        error_seen = 1;
    cli_output_close();
    if (deadline_hit && !atomic_load(&got_signal))
        fprintf(stderr, "aiometer: --deadline of %gs reached: no further job started\n",
                cfg.deadline);
    if (lim)
        aiometer_limiter_destroy(lim);
    aiometer_pool_destroy(pool);
    if (src.in && src.in->fd != 0)
        close(src.in->fd);
    cli_input_free(&input);

    switch (atomic_load(&got_signal)) {
    case SIGINT:
        return 130;
    case 0:
        break;
    default:
        return CLI_EXIT_ERROR;
    }
    if (error_seen)
        return CLI_EXIT_ERROR;
    failed = atomic_load(&run.failed);
    return failed > 100 ? 101 : (int)failed;
}
