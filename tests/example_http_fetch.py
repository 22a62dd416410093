#!/usr/bin/env python3
"""Helper of tests/example_http_fetch.sh.

    example_http_fetch.py serve PORT_FILE LOG_FILE
        Serve {"index": i} for GET /i on 127.0.0.1, on a port the kernel
        picks (written to PORT_FILE), logging each request's arrival time
        and status.  Some URLs are busy on every other request: the first
        request for each of them in a run is answered 429 with Retry-After
        (BUSY_AFTER) or 503 without one (BUSY_BACKOFF), and the next 200.

    example_http_fetch.py check OUT_FILE LOG_FILE COUNT RATE BURST AT_ONCE
        Check http_fetch's output and the server's log; exit 1 on a problem.
"""
import http.server
import json
import os
import re
import sys
import threading
import time

# However long the test takes, the server never outlives it by much.
SERVER_LIFETIME = 300

# Jitter allowed between a job's start and its request reaching the server
# (thread wake-ups, connect, Python's request threads), in seconds.  The
# rate check allows RATE * JITTER extra requests in any window, and at
# least 2.  On a 2-core machine with a load of 10 the worst window seen was
# about 0.075 s of jitter; 0.25 s leaves room.  Without a rate limit the 60
# requests of a run arrive within about 0.2 s, 30 or more over the bound,
# so the check still fails by a wide margin.
JITTER = 0.25

# Indices whose every other request is refused: 429 with "Retry-After: 1",
# and 503 with no Retry-After (http_fetch then backs off).
BUSY_AFTER = {3, 17, 41}
BUSY_BACKOFF = {8, 29}
RETRY_AFTER = 1.0


def serve(port_file, log_file):
    log = open(log_file, "w", buffering=1)
    log_lock = threading.Lock()
    seen = {}  # index -> requests so far; log_lock

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            arrived = time.monotonic()
            try:
                index = int(self.path.strip("/"))
            except ValueError:
                self.send_error(404)
                return
            with log_lock:
                n = seen.get(index, 0)
                seen[index] = n + 1
                busy = n % 2 == 0 and index in BUSY_AFTER | BUSY_BACKOFF
                status = (429 if index in BUSY_AFTER else 503) if busy else 200
                log.write("%.6f %d %d\n" % (arrived, index, status))
            if busy:
                self.send_response(status)
                if index in BUSY_AFTER:
                    self.send_header("Retry-After", "%d" % RETRY_AFTER)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = (json.dumps({"index": index}) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    server = Server(("127.0.0.1", 0), Handler)
    # Write the port under another name, then rename, so that the shell
    # never reads half of it.
    with open(port_file + ".tmp", "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.rename(port_file + ".tmp", port_file)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    time.sleep(SERVER_LIFETIME)


def indices(lines, problems, section):
    """The "index" of each JSON line of a section of the output."""
    out = []
    for line in lines:
        try:
            out.append(json.loads(line)["index"])
        except (ValueError, KeyError, TypeError):
            problems.append("%s: not a response: %r" % (section, line))
    return out


def check_rate(times, count, rate, burst, phase, problems):
    """No window [t_i, t_j] may hold more than rate * (t_j - t_i) + burst
    requests, give or take the jitter."""
    slack = max(2.0, rate * JITTER)
    worst, worst_pair = float("-inf"), None
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            excess = (j - i + 1) - (rate * (times[j] - times[i]) + burst)
            if excess > worst:
                worst, worst_pair = excess, (i, j)
    span = times[-1] - times[0]
    print("%s: %d requests over %.3f s (%.1f a second); worst window: %+.2f requests "
          "over rate * time + burst (allowed %+.1f)"
          % (phase, len(times), span, (len(times) - 1) / span if span > 0 else float("inf"),
             worst, slack))
    if worst > slack:
        i, j = worst_pair
        problems.append("%s: requests %d..%d (%d of them) arrived within %.3f s, more than "
                        "%.0f a second allows" % (phase, i, j, j - i + 1, times[j] - times[i], rate))
    # A limiter that is far too strict is a bug as well; the bound is loose
    # because a busy machine can only make a run slower.
    expected = (count - burst) / rate
    if span > 3 * expected + 5:
        problems.append("%s: took %.2f s, expected about %.2f s" % (phase, span, expected))


def check(out_file, log_file, count, rate, burst, at_once):
    count, rate, burst, at_once = int(count), float(rate), int(burst), int(at_once)
    problems = []
    lines = open(out_file).read().splitlines()
    amap_head = "Responses as they arrive (amap):"
    all_head = "All responses in order (run_all):"
    if amap_head not in lines or all_head not in lines:
        print("FAIL: the output lacks its section headings")
        return 1
    a, b = lines.index(amap_head), lines.index(all_head)
    amap_lines = [l for l in lines[a + 1:b] if not l.startswith("(")]
    all_lines = [l for l in lines[b + 1:] if not l.startswith("(")]
    stats_lines = [l for l in lines if l.startswith("(")]

    arrived = indices(amap_lines, problems, "amap")
    if sorted(arrived) != list(range(count)):
        problems.append("amap: expected every index 0..%d once, got %s" % (count - 1, arrived))
    ordered = indices(all_lines, problems, "run_all")
    if ordered != list(range(count)):
        problems.append("run_all: expected indices 0..%d in order, got %s" % (count - 1, ordered))
    print("amap order: %s" % " ".join(map(str, arrived)))

    # The statistics line of each run: "at most K at once".
    if len(stats_lines) != 2:
        problems.append("expected 2 statistics lines, got %d" % len(stats_lines))
    busy = [i for i in sorted(BUSY_AFTER | BUSY_BACKOFF) if i < count]
    for line in stats_lines:
        m = re.search(r"(\d+) fetched .* at most (\d+) at once.*; (\d+) retried", line)
        if not m:
            problems.append("unreadable statistics line: %r" % line)
        elif (int(m.group(1)) != count or not 1 <= int(m.group(2)) <= at_once
              or int(m.group(3)) != len(busy)):
            problems.append("statistics disagree with the run: %r" % line)

    # The server saw the amap run's requests, then the run_all run's: the
    # second call starts only after the first has returned.
    # Each busy URL costs one refused request per run, retried: by
    # Retry-After no sooner than RETRY_AFTER later, by backoff some time
    # later.  Retries are starts like any other, so the rate holds over
    # all requests.
    log = [line.split() for line in open(log_file).read().splitlines()]
    per_run = count + len(busy)
    if len(log) != 2 * per_run:
        problems.append("the server saw %d requests, expected %d" % (len(log), 2 * per_run))
    else:
        for phase, part in (("amap", log[:per_run]), ("run_all", log[per_run:])):
            ok = sorted(int(i) for _, i, s in part if s == "200")
            if ok != list(range(count)):
                problems.append("%s: the server did not answer every index once" % phase)
            for index in busy:
                tries = [(float(t), s) for t, i, s in part if int(i) == index]
                if [s for _, s in tries] not in (["429", "200"], ["503", "200"]):
                    problems.append("%s: index %d: requests %s" % (phase, index, tries))
                elif index in BUSY_AFTER and tries[1][0] - tries[0][0] < RETRY_AFTER - 0.01:
                    problems.append("%s: index %d asked again %.3f s after Retry-After: %g"
                                    % (phase, index, tries[1][0] - tries[0][0], RETRY_AFTER))
            times = sorted(float(t) for t, _, _ in part)
            check_rate(times, per_run, rate, burst, phase, problems)

    for p in problems:
        print("FAIL: " + p)
    if not problems:
        print("PASS: %d responses in each run, in order where asked, at most %g starts a second"
              % (count, rate))
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 8 and sys.argv[1] == "check":
        sys.exit(check(*sys.argv[2:]))
    else:
        sys.exit(__doc__)
