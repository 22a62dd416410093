/*
 * redis_util.h - a private redis-server for the Redis tests: started on a
 * free loopback port in a temporary directory with no persistence, stopped,
 * paused (SIGSTOP), killed and restarted on the same port; plus a blocking
 * hiredis connection to inspect what the server holds.
 */
#ifndef AIOMETER_REDIS_UTIL_H
#define AIOMETER_REDIS_UTIL_H

#include <hiredis/hiredis.h>
#include <sys/types.h>

typedef struct ru_server {
    pid_t pid;
    int port;
    char dir[64];
    char password[32]; /* "" for none */
    char url[128];     /* redis://[:password@]127.0.0.1:port */
} ru_server;

/* Exit 77 (skip) with a message when redis-server is not on PATH, unless
 * AIOMETER_REQUIRE_REDIS=1 asks for a failure (exit 1) instead. */
void ru_require_redis(void);

/* Start a server (password NULL or "" for none); 0 or -1 with a message. */
int ru_start(ru_server *s, const char *password);
/* Start it again on the same port and directory after ru_kill. */
int ru_restart(ru_server *s);
void ru_kill(ru_server *s);           /* SIGKILL and reap */
void ru_stop(ru_server *s);           /* SIGTERM, reap, remove the directory */
void ru_pause(ru_server *s, int on);  /* SIGSTOP / SIGCONT */

/* A blocking connection (with the password), or NULL. */
redisContext *ru_connect(const ru_server *s);
/* A command on a connection made for it: its integer reply, or -1. */
long long ru_int(const ru_server *s, const char *fmt, ...);
/* The server's TIME in microseconds on c, or 0. */
unsigned long long ru_time_us(redisContext *c);

#endif
