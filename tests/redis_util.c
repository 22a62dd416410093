/* redis_util.c - see redis_util.h. */
#include "config.h"
#include "redis_util.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int on_path(const char *prog)
{
    const char *path = getenv("PATH");
    char buf[4096];

    while (path && *path) {
        size_t n = strcspn(path, ":");

        snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, prog);
        if (access(buf, X_OK) == 0)
            return 1;
        path += n + (path[n] == ':');
    }
    return 0;
}

void ru_require_redis(void)
{
    const char *req = getenv("AIOMETER_REQUIRE_REDIS");

    if (on_path("redis-server"))
        return;
    if (req && strcmp(req, "1") == 0) {
        fprintf(stderr, "redis-server is not on PATH and AIOMETER_REQUIRE_REDIS=1: failing\n");
        exit(1);
    }
    fprintf(stderr, "SKIP: redis-server is not on PATH (apt-get install redis-server); "
                    "set AIOMETER_REQUIRE_REDIS=1 to make this a failure\n");
    exit(77);
}

/* A loopback port that was free a moment ago. */
static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

redisContext *ru_connect(const ru_server *s)
{
    struct timeval tv = { 2, 0 };
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    redisReply *r;

    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (s->password[0]) {
        r = redisCommand(c, "AUTH %s", s->password);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            if (r)
                freeReplyObject(r);
            redisFree(c);
            return NULL;
        }
        freeReplyObject(r);
    }
    return c;
}

static int spawn(ru_server *s)
{
    char port[16], logfile[96];
    int i;

    snprintf(port, sizeof(port), "%d", s->port);
    snprintf(logfile, sizeof(logfile), "%s/redis.log", s->dir);
    s->pid = fork();
    if (s->pid < 0)
        return -1;
    if (s->pid == 0) {
        const char *argv[20] = { "redis-server", "--port", port, "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", s->dir,
                                 "--logfile", logfile, "--daemonize", "no" };
        int n = 15;

        if (s->password[0]) {
            argv[n++] = "--requirepass";
            argv[n++] = s->password;
        }
        argv[n] = NULL;
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    /* Ready when it answers PING (or asks for the password). */
    for (i = 0; i < 500; i++) {
        struct timeval tv = { 0, 200000 };
        redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
        int status;

        if (c && !c->err) {
            redisReply *r = redisCommand(c, "PING");
            int ok = r != NULL;

            if (r)
                freeReplyObject(r);
            redisFree(c);
            if (ok)
                return 0;
        } else if (c) {
            redisFree(c);
        }
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            fprintf(stderr, "redis-server exited at start (port %d)\n", s->port);
            s->pid = 0;
            return -1;
        }
        sleep_ms(10);
    }
    fprintf(stderr, "redis-server did not answer on port %d\n", s->port);
    return -1;
}

int ru_start(ru_server *s, const char *password)
{
    int tries;

    memset(s, 0, sizeof(*s));
    snprintf(s->password, sizeof(s->password), "%s", password ? password : "");
    snprintf(s->dir, sizeof(s->dir), "/tmp/aiometer-redis.XXXXXX");
    if (!mkdtemp(s->dir)) {
        perror("mkdtemp");
        return -1;
    }
    /* Another program may take the free port first: try a few. */
    for (tries = 0; tries < 5; tries++) {
        s->port = free_port();
        if (s->port > 0 && spawn(s) == 0)
            break;
        s->port = -1;
    }
    if (s->port < 0)
        return -1;
    if (s->password[0])
        snprintf(s->url, sizeof(s->url), "redis://:%s@127.0.0.1:%d", s->password, s->port);
    else
        snprintf(s->url, sizeof(s->url), "redis://127.0.0.1:%d", s->port);
    return 0;
}

int ru_restart(ru_server *s)
{
    return spawn(s);
}

void ru_kill(ru_server *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

void ru_pause(ru_server *s, int on)
{
    if (s->pid > 0)
        kill(s->pid, on ? SIGSTOP : SIGCONT);
}

void ru_stop(ru_server *s)
{
    char cmd[128];

    if (s->pid > 0) {
        kill(s->pid, SIGCONT);
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
    if (s->dir[0]) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", s->dir);
        s->dir[0] = '\0';
    }
}

long long ru_int(const ru_server *s, const char *fmt, ...)
{
    redisContext *c = ru_connect(s);
    redisReply *r;
    long long v = -1;
    va_list ap;

    if (!c)
        return -1;
    va_start(ap, fmt);
    r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (r && r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return v;
}

unsigned long long ru_time_us(redisContext *c)
{
    redisReply *r = redisCommand(c, "TIME");
    unsigned long long v = 0;

    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
        v = strtoull(r->element[0]->str, NULL, 10) * 1000000ull +
            strtoull(r->element[1]->str, NULL, 10);
    if (r)
        freeReplyObject(r);
    return v;
}
