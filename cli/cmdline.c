/* cmdline.c - a job's command line from the template: {} and {#}
 * replaced, the argument appended when no {} appears, and with --shell one
 * script for /bin/sh -c in which the argument is always quoted. */
#include "config.h"
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_safe(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           strchr("%+,-./:=@_^", ch) != NULL;
}

char *cli_shell_quote(const char *word, int always)
{
    size_t n = 2, i;
    const char *p;
    char *q, *out;
    int safe = *word != '\0';

    for (p = word; *p; p++) {
        n += *p == '\'' ? 4 : 1;
        safe = safe && is_safe(*p);
    }
    if (safe && !always)
        return strdup(word);
    out = malloc(n + 1);
    if (!out)
        return NULL;
    q = out;
    *q++ = '\'';
    for (i = 0; word[i]; i++) {
        if (word[i] == '\'') {
            /* End the quoted part, an escaped quote, start another. */
            memcpy(q, "'\\''", 4);
            q += 4;
        } else {
            *q++ = word[i];
        }
    }
    *q++ = '\'';
    *q = '\0';
    return out;
}

/* word with every {} replaced by arg and every {#} by seq; *had_arg is set
 * if a {} was seen. */
static char *substitute(const char *word, const char *arg, const char *seq, int *had_arg)
{
    size_t alen = strlen(arg), slen = strlen(seq), n = 0;
    const char *p;
    char *out, *q;

    for (p = word; *p;) {
        if (p[0] == '{' && p[1] == '}') {
            n += alen;
            p += 2;
        } else if (p[0] == '{' && p[1] == '#' && p[2] == '}') {
            n += slen;
            p += 3;
        } else {
            n++;
            p++;
        }
    }
    out = malloc(n + 1);
    if (!out)
        return NULL;
    for (p = word, q = out; *p;) {
        if (p[0] == '{' && p[1] == '}') {
            memcpy(q, arg, alen);
            q += alen;
            p += 2;
            *had_arg = 1;
        } else if (p[0] == '{' && p[1] == '#' && p[2] == '}') {
            memcpy(q, seq, slen);
            q += slen;
            p += 3;
        } else {
            *q++ = *p++;
        }
    }
    *q = '\0';
    return out;
}

void cli_free_argv(char **argv)
{
    if (!argv)
        return;
    for (char **a = argv; *a; a++)
        free(*a);
    free(argv);
}

/* The argument vector of a job, and in *display the command as the user
 * would type it.  NULL on ENOMEM. */
char **cli_build_argv(const struct cli_config *cfg, const struct cli_job *job, char **display)
{
    char seq[32], **argv;
    size_t i, n = 0, dlen = 0;
    int had_arg = 0;

    snprintf(seq, sizeof(seq), "%zu", job->seq);
    *display = NULL;
    /* COMMAND, ARG..., the appended argument, NULL; or sh -c SCRIPT NULL. */
    argv = calloc(cfg->ncmd + 4, sizeof(*argv));
    if (!argv)
        return NULL;
    if (cfg->shell) {
        /* One script: COMMAND's words joined by spaces, the argument
         * quoted wherever it goes, so it is data and never shell text. */
        char *quoted = cli_shell_quote(job->arg, 1), *script, *s;
        size_t len = 0;

        if (!quoted)
            goto fail;
        for (i = 0; i < cfg->ncmd; i++)
            len += strlen(cfg->cmd[i]) + 1;
        script = malloc(len + 1);
        if (!script) {
            free(quoted);
            goto fail;
        }
        for (i = 0, s = script; i < cfg->ncmd; i++) {
            size_t wl = strlen(cfg->cmd[i]);
            memcpy(s, cfg->cmd[i], wl);
            s += wl;
            *s++ = i + 1 < cfg->ncmd ? ' ' : '\0';
        }
        s = substitute(script, quoted, seq, &had_arg);
        free(script);
        if (s && !had_arg) {
            size_t sl = strlen(s), ql = strlen(quoted);
            char *t = realloc(s, sl + ql + 2);
            if (t) {
                t[sl] = ' ';
                memcpy(t + sl + 1, quoted, ql + 1);
            } else {
                free(s);
            }
            s = t;
        }
        free(quoted);
        if (!s)
            goto fail;
        argv[n++] = strdup("/bin/sh");
        argv[n++] = strdup("-c");
        argv[n++] = s;
        if (!argv[0] || !argv[1])
            goto fail;
        *display = strdup(s);
        if (!*display)
            goto fail;
        return argv;
    }
    for (i = 0; i < cfg->ncmd; i++)
        if (!(argv[n++] = substitute(cfg->cmd[i], job->arg, seq, &had_arg)))
            goto fail;
    if (!had_arg && !(argv[n++] = strdup(job->arg)))
        goto fail;
    /* The display: each word quoted only where the shell would need it. */
    for (i = 0; i < n; i++) {
        char *q = cli_shell_quote(argv[i], 0), *d;
        size_t ql;

        if (!q)
            goto fail;
        ql = strlen(q);
        d = realloc(*display, dlen + ql + 2);
        if (!d) {
            free(q);
            goto fail;
        }
        *display = d;
        if (dlen)
            d[dlen++] = ' ';
        memcpy(d + dlen, q, ql + 1);
        dlen += ql;
        free(q);
    }
    return argv;
fail:
    cli_free_argv(argv);
    free(*display);
    *display = NULL;
    return NULL;
}

