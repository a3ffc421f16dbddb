#!/usr/bin/env python3
"""Open-loop load generator for the example system (Python 3 standard library only).

Starts RATE transactions per second for DURATION seconds against a gateway (or Portal run
directly), each with a fresh `x-b3-traceid`, a fraction of them slow (`?delay_ms=SLOW_MS`, so
that they straddle the steps of an upgrade). Transactions are started on schedule whether or
not earlier ones have finished (open loop), by a pool of worker threads that each keep one
HTTP/1.1 keep-alive connection. Prints one JSON summary on stdout:

  {"sent", "ok", "failed", "failures_by_status", "p50_ms", "p99_ms", "achieved_rps", ...}

A transaction is ok when the answer is 2xx and, if the body names a "traceId", it is the one
sent. failures_by_status counts HTTP statuses ("502") and transport errors ("error:Timeout").
Latency is measured from the moment a worker sends the request; `max_start_lag_ms` says how
far behind schedule the workers fell (raise --concurrency if it grows).

  python3 loadgen.py http://127.0.0.1:8000 --rate 200 --duration 10 --slow-fraction 0.1 --slow-ms 400

With --closed-loop the rate is ignored: each worker sends its next transaction as soon as its
last one was answered, for DURATION seconds, and `throughput_tps` (ok transactions per second
of wall time) is the system's throughput at that concurrency.
"""

import argparse
import http.client
import json
import math
import os
import queue
import random
import socket
import sys
import threading
import time
from urllib.parse import urlsplit


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = max(0, math.ceil(p / 100.0 * len(sorted_values)) - 1)
    return round(sorted_values[k], 2)


class Worker(threading.Thread):
    def __init__(self, args, target, jobs, results):
        super().__init__(daemon=True)
        self.args, self.target, self.jobs, self.results = args, target, jobs, results
        self.conn = None
        self.reconnects = 0

    def _connect(self):
        host, port, _ = self.target
        return http.client.HTTPConnection(host, port, timeout=self.args.timeout)

    def _exchange(self, method, path, body, headers):
        """(status, body bytes); retries once when a reused keep-alive connection was stale."""
        for attempt in range(2):
            reused = self.conn is not None
            if self.conn is None:
                self.conn = self._connect()
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError,
                    http.client.BadStatusLine):
                self.conn.close()
                self.conn = None
                if reused and attempt == 0:
                    self.reconnects += 1
                    continue
                raise
            except BaseException:
                self.conn.close()
                self.conn = None
                raise
            if resp.will_close:
                self.conn.close()
                self.conn = None
            return resp.status, raw
        raise ConnectionError("connection closed twice")

    def run(self):
        a = self.args
        _, _, base_path = self.target
        while True:
            job = self.jobs.get()
            if job is None:
                break
            seq, due, slow = job
            trace_id = os.urandom(16).hex()
            path = a.path if a.path.startswith("/") else "/" + a.path
            path = base_path + path
            if slow:
                path += ("&" if "?" in path else "?") + "delay_ms=%d" % a.slow_ms
            headers = {"x-b3-traceid": trace_id}
            headers.update(a.header_dict)
            body = None
            if a.method in ("POST", "PUT", "PATCH"):
                body = a.body.encode()
                headers["Content-Type"] = "application/json"
            start = time.monotonic()
            status, raw, error = None, b"", None
            try:
                status, raw = self._exchange(a.method, path, body, headers)
            except socket.timeout:
                error = "error:Timeout"
            except Exception as e:  # transport failure
                error = "error:" + type(e).__name__
            end = time.monotonic()
            self.results.append((seq, trace_id, slow, due, start, end, status, raw, error))
        if self.conn is not None:
            self.conn.close()


def classify(rec):
    """(ok, key, parsed body) for one result."""
    seq, trace_id, slow, due, start, end, status, raw, error = rec
    if error:
        return False, error, None
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if not 200 <= status < 300:
        return False, str(status), body
    if isinstance(body, dict):
        if body.get("ok") is False:
            return False, "%d:not_ok" % status, body
        if "traceId" in body and body["traceId"] != trace_id:
            return False, "trace_mismatch", body
    return True, None, body


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", nargs="?", default=os.environ.get("LOADGEN_URL", "http://127.0.0.1:8000"),
                   help="gateway (or Portal) base URL (default http://127.0.0.1:8000)")
    p.add_argument("--rate", type=float, default=200.0, help="transactions per second (default 200)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load (default 10)")
    p.add_argument("--slow-fraction", type=float, default=0.1,
                   help="fraction of transactions made slow (default 0.1)")
    p.add_argument("--slow-ms", type=int, default=400,
                   help="delay_ms of a slow transaction (default 400)")
    p.add_argument("--concurrency", type=int, default=64,
                   help="worker threads, one keep-alive connection each (default 64)")
    p.add_argument("--method", default="POST", help="default POST")
    p.add_argument("--path", default="/order", help="default /order")
    p.add_argument("--body", default='{"item":"coffee","qty":1}', help="JSON body for POST")
    p.add_argument("--header", action="append", default=[], metavar="NAME:VALUE",
                   help="extra request header (repeatable)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, s (default 30)")
    p.add_argument("--seed", type=int, default=None, help="seed for choosing slow transactions")
    p.add_argument("--trace-log", metavar="FILE",
                   help="write one JSON line per transaction: traceId, status, ms, slow, versions")
    p.add_argument("--fail-on-error", action="store_true", help="exit 1 if any transaction failed")
    p.add_argument("--closed-loop", action="store_true",
                   help="ignore --rate: keep every worker busy for --duration seconds (throughput)")
    a = p.parse_args(argv)

    split = urlsplit(a.url)
    if split.scheme != "http" or not split.hostname:
        p.error("URL must look like http://HOST:PORT[/prefix]")
    if a.rate <= 0 or a.duration <= 0 or a.concurrency < 1 or not 0 <= a.slow_fraction <= 1:
        p.error("--rate, --duration and --concurrency must be positive, --slow-fraction in [0, 1]")
    a.method = a.method.upper()
    a.header_dict = {}
    for h in a.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            p.error("--header must be NAME:VALUE")
        a.header_dict[name.strip()] = value.strip()
    target = (split.hostname, split.port or 80, split.path.rstrip("/"))

    rng = random.Random(a.seed)
    # Closed loop: the queue holds one job per worker, so a put waits for a worker to be free.
    jobs = queue.Queue(maxsize=a.concurrency) if a.closed_loop else queue.SimpleQueue()
    results = []
    workers = [Worker(a, target, jobs, results) for _ in range(a.concurrency)]
    for w in workers:
        w.start()

    total = int(round(a.rate * a.duration))
    interval = 1.0 / a.rate
    t0 = time.monotonic() + 0.05
    # The trace log's "start" is relative to t0; this is t0 on the wall clock, to line the log up
    # with other clocks (an upgrade's requestedAt).
    t0_epoch = time.time() + (t0 - time.monotonic())
    sent = 0
    slow_sent = 0
    try:
        deadline = t0 + a.duration
        while (time.monotonic() < deadline) if a.closed_loop else (sent < total):
            # Open loop: each start is due on schedule. Closed loop: now, and the put waits
            # for a free worker (the queue holds one job per worker).
            due = time.monotonic() if a.closed_loop else t0 + sent * interval
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            slow = rng.random() < a.slow_fraction
            slow_sent += slow
            jobs.put((sent, due, slow))
            sent += 1
    except KeyboardInterrupt:
        pass
    for _ in workers:
        jobs.put(None)
    for w in workers:
        w.join()
    wall = time.monotonic() - t0

    ok = 0
    failures = {}
    examples = []
    lat_all, lat_fast = [], []
    first_start = min((r[4] for r in results), default=t0)
    last_start = max((r[4] for r in results), default=t0)
    max_lag = 0.0
    log = open(a.trace_log, "w") if a.trace_log else None
    for rec in sorted(results):
        seq, trace_id, slow, due, start, end, status, raw, error = rec
        good, key, body = classify(rec)
        ms = (end - start) * 1000.0
        max_lag = max(max_lag, start - due)
        if good:
            ok += 1
        else:
            failures[key] = failures.get(key, 0) + 1
            if len(examples) < 5:
                examples.append({"traceId": trace_id, "status": status, "error": key,
                                 "body": raw[:400].decode("utf-8", "replace")})
        if status is not None:
            lat_all.append(ms)
            if not slow:
                lat_fast.append(ms)
        if log:
            entry = {"traceId": trace_id, "status": status, "ok": good, "ms": round(ms, 2),
                     "slow": slow, "start": round(start - t0, 4)}
            if key:
                entry["error"] = key
            if isinstance(body, dict) and isinstance(body.get("versions"), dict):
                entry["versions"] = body["versions"]
            log.write(json.dumps(entry) + "\n")
    if log:
        log.close()
    lat_all.sort()
    lat_fast.sort()
    # Rate of starts: n starts spread over (last - first); the first start opens the window.
    span = last_start - first_start
    achieved = (len(results) - 1) / span if span > 0 and len(results) > 1 else float(len(results))
    summary = {
        "url": a.url,
        "target_rps": a.rate,
        "duration_s": a.duration,
        "started_at_epoch": round(t0_epoch, 4),
        "concurrency": a.concurrency,
        "sent": sent,
        "ok": ok,
        "failed": sent - ok,
        "failures_by_status": failures,
        "slow_sent": slow_sent,
        "p50_ms": percentile(lat_all, 50),
        "p90_ms": percentile(lat_all, 90),
        "p99_ms": percentile(lat_all, 99),
        "max_ms": round(lat_all[-1], 2) if lat_all else None,
        "fast_p50_ms": percentile(lat_fast, 50),
        "fast_p99_ms": percentile(lat_fast, 99),
        "achieved_rps": round(achieved, 1),
        "max_start_lag_ms": round(max_lag * 1000.0, 1),
        "reconnects": sum(w.reconnects for w in workers),
        "wall_s": round(wall, 2),
        "throughput_tps": round(ok / wall, 1) if wall > 0 else None,
        "failure_examples": examples,
    }
    print(json.dumps(summary, indent=2))
    return 1 if a.fail_on_error and summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
