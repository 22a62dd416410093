/* spawn.c - one job: its child process and its output.
 *
 * A job runs on a thread of the library's pool.  It spawns its command with
 * posix_spawn (no shell unless --shell), in a process group of its own so
 * that a kill reaches the command's children too, with /dev/null as standard
 * input.  Then it waits in one poll() for the child to end (a pidfd), for
 * its output (two pipes, unless --ungroup), for the call's cancellation
 * (aiometer_cancel_fd: --halt now, --deadline, a signal), for the order to
 * kill at once (a second SIGINT) and for its own --timeout.  A kill is
 * SIGTERM to the group, then SIGKILL one second later if any of it is left;
 * the job returns only when nothing of its group is left. */
#include "config.h"
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* A kill waits this long between SIGTERM and SIGKILL. */
#define KILL_GRACE_NS 1000000000ull
/* How often to look when there is nothing to wait on (no pidfd, or the
 * group outlives its leader). */
#define TICK_MS 10

uint64_t cli_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- captured output ---------------------------------------------------------- */

const char *cli_sink_dir(void)
{
    const char *dir = getenv("TMPDIR");

    return dir && *dir ? dir : "/tmp";
}

void cli_raise_fd_limit(void)
{
    struct rlimit rl;

    /* The soft limit is often 1024 for the sake of select(), which we do
     * not use; a job that cannot get a descriptor fails.  Jobs inherit
     * the raised limit (posix_spawn cannot set it back for them). */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Where the output outgrows memory: an unlinked temporary file. */
static int sink_to_file(struct cli_sink *s)
{
    const char *dir = cli_sink_dir();
    char path[4096];

    s->fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (s->fd >= 0)
        return 0;
    snprintf(path, sizeof(path), "%s/aiometer.XXXXXX", dir);
    s->fd = mkostemp(path, O_CLOEXEC);
    if (s->fd < 0)
        return errno;
    unlink(path);
    return 0;
}

/* Keep n more bytes: 0 or an errno value. */
static int sink_keep(struct cli_sink *s, const char *data, size_t n)
{
    int err;

    if (s->fd < 0 && s->len + n > CLI_SINK_MEMORY) {
        err = sink_to_file(s);
        if (err)
            return err;
    }
    if (s->fd >= 0)
        return cli_write_all(s->fd, data, n);
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        char *b;

        while (cap < s->len + n)
            cap *= 2;
        b = realloc(s->buf, cap);
        if (!b)
            return ENOMEM;
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, n);
    s->len += n;
    return 0;
}

int cli_sink_append(struct cli_sink *s, const char *data, size_t n)
{
    /* Once a piece is lost, nothing after it is kept either: the output
     * is cut short where the loss began, never holed in the middle (a
     * full disk may take a later write again). */
    if (!s->err)
        s->err = sink_keep(s, data, n);
    return s->err;
}

void cli_sink_free(struct cli_sink *s)
{
    free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->err = 0;
}

/* Read what the pipe has; close it at its end.  Nonblocking. */
static void drain(int *fd, struct cli_sink *s)
{
    char buf[16384];
    ssize_t r;

    while (*fd >= 0) {
        r = read(*fd, buf, sizeof(buf));
        if (r > 0) {
            /* A sink that cannot take more drops the rest, which fails
             * the job (cli_job_failed); the pipe is still read to its end,
             * so that the command is not blocked on it. */
            (void)cli_sink_append(s, buf, (size_t)r);
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        close(*fd);
        *fd = -1;
    }
}

/* ---- the child ------------------------------------------------------------------ */

static int spawn(char **argv, int out_w, int err_w, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, dfl;
    int err;

    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (out_w >= 0) {
        /* dup2 clears close-on-exec on the copies; every other descriptor
         * of ours is close-on-exec, so no other child holds these pipes. */
        posix_spawn_file_actions_adddup2(&fa, out_w, 1);
        posix_spawn_file_actions_adddup2(&fa, err_w, 2);
    }
    /* The command gets a signal mask of its own (ours blocks the signals
     * that stop a run, for the signal thread) and SIGPIPE back to its
     * default. */
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);
    err = posix_spawnp(pid, argv[0], &fa, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return err;
}

static int pidfd_of(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    return -1;
#endif
}

/* Run the child to its end, capturing its output into the job's sinks. */
static void supervise(struct cli_job *job, struct cli_child *child, int out_r, int err_r)
{
    pid_t pid = child->pid;
    const struct cli_config *cfg = cli_the_run->cfg;
    int pidfd = pidfd_of(pid), cancel_fd = aiometer_cancel_fd();
    uint64_t start = cli_now_ns(), expire = 0, kill_at = 0;
    int status = 0, exited = 0, killing = 0, killed_hard = 0, group_gone = 0;

    if (cfg->timeout > 0)
        expire = start + (uint64_t)(cfg->timeout * 1e9);
    for (;;) {
        struct pollfd p[5];
        int np = 0, wait_ms = -1, i_out = -1, i_err = -1, i_pid = -1, i_cancel = -1, i_kill;
        uint64_t now = cli_now_ns(), next = 0;

        /* The leader ended and its output is read; if it was killed, the
         * rest of its group is gone too: done. */
        if (exited && out_r < 0 && err_r < 0 && (!killing || group_gone))
            break;
        if (out_r >= 0) {
            i_out = np;
            p[np++] = (struct pollfd){out_r, POLLIN, 0};
        }
        if (err_r >= 0) {
            i_err = np;
            p[np++] = (struct pollfd){err_r, POLLIN, 0};
        }
        if (!exited && pidfd >= 0) {
            i_pid = np;
            p[np++] = (struct pollfd){pidfd, POLLIN, 0};
        }
        if (!killing && cancel_fd >= 0) {
            i_cancel = np;
            p[np++] = (struct pollfd){cancel_fd, POLLIN, 0};
        }
        i_kill = np;
        p[np++] = (struct pollfd){cli_the_run->kill_now_fd, POLLIN, 0};
        if (!killing && expire)
            next = expire;
        if (killing && !killed_hard)
            next = kill_at;
        if (next)
            wait_ms = next <= now ? 0 : (int)((next - now + 999999) / 1000000);
        if ((!exited && pidfd < 0) || (!killing && cancel_fd < 0) || exited)
            wait_ms = wait_ms < 0 || wait_ms > TICK_MS ? TICK_MS : wait_ms;
        if (poll(p, (nfds_t)np, wait_ms) < 0 && errno != EINTR)
            wait_ms = TICK_MS; /* cannot happen with valid descriptors */
        now = cli_now_ns();

        if (i_out >= 0 && p[i_out].revents)
            drain(&out_r, &job->out);
        if (i_err >= 0 && p[i_err].revents)
            drain(&err_r, &job->err);

        /* Whatever asks for a kill: SIGTERM now, SIGKILL after the grace
         * (at once for a second SIGINT). */
        if (!killing && ((i_cancel >= 0 && p[i_cancel].revents) ||
                         (cancel_fd < 0 && aiometer_cancelled()) || (expire && now >= expire))) {
            job->timed_out = expire && now >= expire && !aiometer_cancelled();
            killing = 1;
            kill_at = now + KILL_GRACE_NS;
            kill(-pid, SIGTERM);
        }
        if (p[i_kill].revents || (killing && !killed_hard && now >= kill_at)) {
            killing = killed_hard = 1;
            kill(-pid, SIGKILL);
        }

        if (!exited && (pidfd < 0 || p[i_pid].revents)) {
            pid_t r = waitpid(pid, &status, pidfd < 0 ? WNOHANG : 0);
            if (r == pid || (r < 0 && errno != EINTR)) {
                exited = 1;
                cli_reap_forget(child);
                /* What it wrote before it ended is in the pipes now; a
                 * child it left behind may keep them open, and is not
                 * waited for unless the job is being killed. */
                drain(&out_r, &job->out);
                drain(&err_r, &job->err);
                if (!killing) {
                    if (out_r >= 0)
                        close(out_r);
                    if (err_r >= 0)
                        close(err_r);
                    out_r = err_r = -1;
                }
            }
        }
        if (exited && killing) {
            /* The leader is reaped but its group number stays taken while
             * any of the group is left, so kill(-pid) still reaches only
             * them.  Wait for them until the SIGKILL, then stop reading.
             * They are our children once orphaned (we are a subreaper), so
             * the dead ones are reaped here, not counted as left. */
            while (waitpid(-pid, NULL, WNOHANG) > 0)
                ; /* members orphaned to us, the subreaper: see main */
            if (kill(-pid, 0) < 0 && errno == ESRCH) {
                group_gone = 1;
            } else if (killed_hard) {
                kill(-pid, SIGKILL);
                group_gone = 1;
            }
            if (group_gone) {
                if (out_r >= 0)
                    close(out_r);
                if (err_r >= 0)
                    close(err_r);
                out_r = err_r = -1;
            }
        }
    }
    if (pidfd >= 0)
        close(pidfd);
    /* Members of the group that ended and were orphaned to us. */
    while (waitpid(-pid, NULL, WNOHANG) > 0)
        ;
    job->runtime = (double)(cli_now_ns() - start) / 1e9;
    if (WIFSIGNALED(status)) {
        job->sig = WTERMSIG(status);
        job->exitval = 0;
    } else {
        job->exitval = WEXITSTATUS(status);
    }
}

/* Before another attempt of a job: forget the last one's output and
 * status, keeping only its figures for the joblog. */
static void forget_attempt(const struct cli_config *cfg, struct cli_job *job)
{
    cli_retry_record(cfg, job);
    cli_sink_free(&job->out);
    cli_sink_free(&job->err);
    free(job->display);
    job->display = NULL;
    job->spawn_err = job->exitval = job->sig = job->timed_out = 0;
    job->runtime = 0;
}

void *cli_run_job(void *arg)
{
    struct cli_job *job = arg;
    struct cli_run *run = cli_the_run;
    const struct cli_config *cfg = run->cfg;
    int out[2] = {-1, -1}, err[2] = {-1, -1};
    struct cli_child child;
    struct timespec rt;
    char **argv;
    pid_t pid;

    if (job->attempts)
        cli_held_remove(run, job);
    /* The library books the start before calling us; a halt or a signal
     * since then means this job must not start after all.  A job that
     * was waiting to be tried again ends with its last attempt, failed. */
    if (atomic_load(&run->stop_starting) || aiometer_cancelled()) {
        if (job->attempts)
            goto end;
        cli_held_add(run, job, 0);
        return job;
    }
    if (job->attempts)
        forget_attempt(cfg, job);
    job->attempts++;
    argv = cli_build_argv(cfg, job, &job->display);
    if (!argv) {
        job->started = 1;
        job->spawn_err = ENOMEM;
        job->exitval = 127;
        goto done;
    }
    if (!job->started)
        atomic_fetch_add(&run->started, 1);
    job->started = 1;
    clock_gettime(CLOCK_REALTIME, &rt);
    job->start_real = (double)rt.tv_sec + (double)rt.tv_nsec / 1e9;
    if (cfg->dry_run) {
        (void)cli_sink_append(&job->out, job->display, strlen(job->display));
        (void)cli_sink_append(&job->out, "\n", 1);
        cli_free_argv(argv);
        goto done;
    }
    if (!cfg->ungroup && (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0)) {
        job->spawn_err = errno;
    } else {
        cli_reap_begin();
        job->spawn_err = spawn(argv, out[1], err[1], &pid);
        cli_reap_end(&child, job->spawn_err ? -1 : pid);
    }
    if (out[1] >= 0)
        close(out[1]);
    if (err[1] >= 0)
        close(err[1]);
    if (out[0] >= 0)
        fcntl(out[0], F_SETFL, O_NONBLOCK);
    if (err[0] >= 0)
        fcntl(err[0], F_SETFL, O_NONBLOCK);
    if (job->spawn_err) {
        char msg[512];
        int n = snprintf(msg, sizeof(msg), "aiometer: %s: %s\n", argv[0], strerror(job->spawn_err));

        job->exitval = job->spawn_err == ENOENT ? 127 : 126;
        if (cfg->ungroup)
            (void)cli_write_all(2, msg, (size_t)n);
        else
            (void)cli_sink_append(&job->err, msg, (size_t)n);
        if (out[0] >= 0)
            close(out[0]);
        if (err[0] >= 0)
            close(err[0]);
    } else {
        supervise(job, &child, out[0], err[0]);
    }
    cli_free_argv(argv);
done:
    /* A job with an attempt left is not a failure yet: it neither counts
     * nor halts anything. */
    if (cli_job_failed(job) && cli_retry_attempt(run, job))
        return job;
end:
    if (cli_job_failed(job)) {
        atomic_fetch_add(&run->failed, 1);
        if (cfg->halt != CLI_HALT_NEVER)
            cli_stop_starting(run);
        if (cfg->halt == CLI_HALT_NOW)
            cli_cancel_run(run);
    }
    atomic_fetch_add(&run->finished, 1);
    cli_held_add(run, job, 0);
    return job;
}

int cli_job_failed(const struct cli_job *job)
{
    return job->started && (job->spawn_err || job->exitval != 0 || job->sig != 0 ||
                            job->out.err || job->err.err);
}

void cli_job_free(struct cli_job *job)
{
    if (!job)
        return;
    cli_sink_free(&job->out);
    cli_sink_free(&job->err);
    free(job->display);
    free(job->arg);
    free(job->tries);
    free(job);
}
