/* input.c - the lines of the input (standard input or -a FILE), read only as
 * jobs can start.
 *
 * The reader is called from the library's job source, on whichever thread
 * pulls the next argument, and that thread is counted as running in the
 * call: the call cannot end while it waits for input.  So no wait here may
 * outlast a stop.  Before each read() it polls the input together with the
 * run's stop descriptor, and only until the --deadline: stdio's getdelim
 * would sit in read() until the next line or the end of the input came,
 * whatever a signal, --halt or the deadline had said meanwhile.
 *
 * The input descriptor is left blocking (it may be shared with other
 * processes, a terminal say, and O_NONBLOCK would change it for them too);
 * poll() said it is readable, so read() returns at once, unless another
 * process reading the same pipe took the data in between. */
#include "config.h"
#include "cli.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What one read() asks for, and the buffer's first size: a line longer than
 * this makes the buffer grow to hold it, and it stays that big. */
#define INPUT_CHUNK 65536
/* The longest single poll() before the deadline is looked at again. */
#define INPUT_MAX_WAIT_MS 3600000

/* Wait until the input is readable: 0; AIOMETER_DONE once the stop
 * descriptor is readable; ETIMEDOUT at the deadline. */
static int wait_readable(struct cli_input *in)
{
    for (;;) {
        struct pollfd p[2] = {{in->fd, POLLIN, 0}, {in->stop_fd, POLLIN, 0}};
        uint64_t left_ms;
        int wait_ms = -1;

        if (in->deadline_ns) {
            uint64_t now = cli_now_ns();

            if (now >= in->deadline_ns)
                return ETIMEDOUT;
            /* Rounded up, so that the deadline has passed when poll returns;
             * a far one (--deadline goes up to 1e9 s) is waited for in
             * turns that fit in an int. */
            left_ms = (in->deadline_ns - now + 999999) / 1000000;
            wait_ms = left_ms > INPUT_MAX_WAIT_MS ? INPUT_MAX_WAIT_MS : (int)left_ms;
        }
        if (poll(p, 2, wait_ms) < 0) {
            if (errno == EINTR)
                continue;
            return 0; /* cannot happen with two valid descriptors: let read() tell */
        }
        if (p[1].revents)
            return AIOMETER_DONE;
        /* POLLHUP or POLLERR too: read() then tells the end or the error. */
        if (p[0].revents)
            return 0;
    }
}

/* Read once more into the buffer, growing it if it is full: 0 (with in->eof
 * set at the end of the input), AIOMETER_DONE or ETIMEDOUT as
 * wait_readable, ENOMEM, or a read error's errno in in->read_err. */
static int fill(struct cli_input *in)
{
    ssize_t r;
    int ret;

    /* What was handed out is dropped, so the buffer grows only for a line
     * that does not fit in it. */
    if (in->start > 0) {
        memmove(in->buf, in->buf + in->start, in->len);
        in->start = 0;
    }
    if (in->len == in->cap) {
        size_t cap = in->cap ? in->cap * 2 : INPUT_CHUNK;
        char *b = realloc(in->buf, cap);

        if (!b)
            return ENOMEM;
        in->buf = b;
        in->cap = cap;
    }
    ret = wait_readable(in);
    if (ret)
        return ret;
    do
        r = read(in->fd, in->buf + in->len, in->cap - in->len);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        in->read_err = errno;
        return in->read_err;
    }
    if (r == 0)
        in->eof = 1;
    in->len += (size_t)r;
    return 0;
}

int cli_input_next(struct cli_input *in, char **line)
{
    for (;;) {
        char *begin = in->buf + in->start;
        char *end = in->len ? memchr(begin, in->delim, in->len) : NULL;
        size_t n, used;
        int ret;

        if (!end && !in->eof) {
            ret = fill(in);
            if (ret)
                return ret;
            continue;
        }
        if (!end && in->len == 0)
            return AIOMETER_DONE;
        /* A whole line, or the last one, which had no delimiter. */
        n = end ? (size_t)(end - begin) : in->len;
        used = end ? n + 1 : n;
        *line = malloc(n + 1);
        if (!*line)
            return ENOMEM;
        memcpy(*line, begin, n);
        (*line)[n] = '\0';
        in->start += used;
        in->len -= used;
        return 0;
    }
}

void cli_input_free(struct cli_input *in)
{
    free(in->buf);
    in->buf = NULL;
    in->start = in->len = in->cap = 0;
}
