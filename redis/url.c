/* url.c - redis:// and unix:// URLs: where the server is and how to log
 * in.  Anything the grammar in aiometer_redis.h does not allow is EINVAL. */
#include "config.h"
#include "conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

static int hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A copy of s[0..n) with %XX decoded, or NULL (a bad escape, %00 included,
 * or no memory: *err says which). */
static char *decode(const char *s, size_t n, int *err)
{
    char *out = malloc(n + 1), *o = out;
    size_t i;

    if (!out) {
        *err = ENOMEM;
        return NULL;
    }
    for (i = 0; i < n; i++) {
        int hi, lo;

        if (s[i] != '%') {
            *o++ = s[i];
            continue;
        }
        if (i + 2 >= n || (hi = hex(s[i + 1])) < 0 || (lo = hex(s[i + 2])) < 0 ||
            hi * 16 + lo == 0) {
            free(out);
            *err = EINVAL;
            return NULL;
        }
        *o++ = (char)(hi * 16 + lo);
        i += 2;
    }
    *o = '\0';
    return out;
}

/* A decimal number of 1 to 9 digits in s[0..n), or -1. */
static long number(const char *s, size_t n)
{
    long v = 0;
    size_t i;

    if (n == 0 || n > 9)
        return -1;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int parse_unix(struct aiometer__redis_url *u, const char *s)
{
    const char *q = strchr(s, '?');
    size_t n = q ? (size_t)(q - s) : strlen(s);
    int err = 0;

    if (n < 2 || s[0] != '/' || n >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return EINVAL;
    if (q) {
        if (strncmp(q, "?db=", 4) != 0 || (u->db = number(q + 4, strlen(q + 4))) < 0)
            return EINVAL;
    }
    u->path = decode(s, n, &err);
    return u->path ? 0 : err;
}

static int parse_tcp(struct aiometer__redis_url *u, const char *s)
{
    const char *at = strrchr(s, '@'), *h, *end, *colon;
    int err = 0;

    if (at) {
        colon = memchr(s, ':', (size_t)(at - s));
        /* The password is required when there is an '@'; the user is not. */
        if (!colon || colon + 1 == at)
            return EINVAL;
        if (colon > s && !(u->user = decode(s, (size_t)(colon - s), &err)))
            return err;
        if (!(u->password = decode(colon + 1, (size_t)(at - colon - 1), &err)))
            return err;
        s = at + 1;
    }
    if (*s == '[') { /* an IPv6 literal */
        h = s + 1;
        end = strchr(h, ']');
        if (!end || end == h)
            return EINVAL;
        s = end + 1;
    } else {
        h = s;
        end = h + strcspn(h, ":/");
        if (end == h)
            return EINVAL;
        s = end;
    }
    if (!(u->host = decode(h, (size_t)(end - h), &err)))
        return err;
    if (*s == ':') {
        size_t n = strcspn(s + 1, "/");
        long p = number(s + 1, n);

        if (p < 1 || p > 65535)
            return EINVAL;
        u->port = (int)p;
        s += 1 + n;
    }
    if (*s == '/') {
        s++;
        if (*s && (u->db = number(s, strlen(s))) < 0)
            return EINVAL;
        s += strlen(s);
    }
    return *s ? EINVAL : 0;
}

int aiometer__redis_url_parse(struct aiometer__redis_url *u, const char *url)
{
    int err;

    memset(u, 0, sizeof(*u));
    u->port = 6379;
    u->db = -1;
    if (strncmp(url, "redis://", 8) == 0)
        err = parse_tcp(u, url + 8);
    else if (strncmp(url, "unix://", 7) == 0)
        err = parse_unix(u, url + 7);
    else
        err = EINVAL;
    if (err)
        aiometer__redis_url_free(u);
    return err;
}

void aiometer__redis_url_free(struct aiometer__redis_url *u)
{
    free(u->host);
    free(u->path);
    free(u->user);
    free(u->password);
    memset(u, 0, sizeof(*u));
}

