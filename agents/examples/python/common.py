"""Plumbing shared by the example services (Python 3 standard library only).

The four services (portal.py, auth.py, proc.py, db.py) are deliberately ordinary: they know
nothing about Triad except the environment contract of the mesh (docs/mesh.md):

  PORT                      where the instance must listen (on 127.0.0.1 unless --host)
  TRIAD_UPSTREAM_<SERVICE>  base URL through which it calls SERVICE (its sidecar, or the
                            service itself when run without a mesh)

and, like any service behind Istio, they copy the trace headers of the request they are
serving onto the requests they make for it. They never copy `x-version`: carrying version
pins along a transaction is the mesh's job.
"""

import argparse
import http.client
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# Headers an application behind Istio/Envoy propagates. `x-b3-traceid` is the one the mesh
# keys transactions on; the others cost nothing to copy. `x-version` is NOT in this list.
TRACE_HEADERS = (
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "traceparent",
    "tracestate",
    "x-request-id",
)

MAX_BODY_BYTES = 1 << 20


def log_error(service, message):
    sys.stderr.write("%s: %s\n" % (service, message))
    sys.stderr.flush()


# --------------------------------------------------------------------------------------------
# Requests and responses


class BadRequest(Exception):
    def __init__(self, message, status=400, error="bad_request"):
        super().__init__(message)
        self.status = status
        self.error = error


class Request:
    __slots__ = ("method", "path", "query", "headers", "body")

    def __init__(self, method, path, query, headers, body):
        self.method = method
        self.path = path
        self.query = query  # dict: name -> last value
        self.headers = headers  # http.client.HTTPMessage (case-insensitive get)
        self.body = body

    def header(self, name):
        return self.headers.get(name)

    def json(self, default=None):
        """The body as a JSON object; `default` when the body is empty."""
        if not self.body or not self.body.strip():
            return {} if default is None else default
        try:
            value = json.loads(self.body)
        except ValueError as e:
            raise BadRequest("request body is not valid JSON: %s" % e)
        if not isinstance(value, dict):
            raise BadRequest("request body must be a JSON object")
        return value

    def trace_headers(self):
        """The trace headers to copy onto outgoing requests made for this request."""
        out = {}
        for name in TRACE_HEADERS:
            value = self.headers.get(name)
            if value is not None:
                out[name] = value
        return out

    def trace_id(self):
        return self.headers.get("x-b3-traceid")


class Response:
    __slots__ = ("status", "body", "headers")

    def __init__(self, status, body, headers=None):
        self.status = status
        self.body = body  # JSON-serialisable object
        self.headers = headers or {}


def error_response(status, error, detail, **extra):
    body = {"ok": False, "error": error, "detail": detail}
    body.update(extra)
    return Response(status, body)


# --------------------------------------------------------------------------------------------
# Server


def _make_handler(service, version, app, emit_x_version, log_requests):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive
        # One write per response: BaseHTTPRequestHandler otherwise sends headers and body as
        # two packets and the second waits ~40 ms for the peer's delayed ACK.
        wbufsize = 65536
        disable_nagle_algorithm = True
        def version_string(self):
            return "triad-example-%s/%s" % (service, version)

        def log_message(self, fmt, *args):  # quiet by default
            if log_requests:
                sys.stderr.write("%s %s\n" % (service, fmt % args))

        def log_error(self, fmt, *args):
            log_error(service, fmt % args)

        def _read_body(self):
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks, total = [], 0
                while True:
                    line = self.rfile.readline(65537)
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(chunks)
                    total += size
                    if total > MAX_BODY_BYTES:
                        raise BadRequest("request body too large", 413, "too_large")
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline(3)
            length = self.headers.get("Content-Length")
            if not length:
                return b""
            try:
                n = int(length)
            except ValueError:
                raise BadRequest("bad Content-Length")
            if n < 0:
                raise BadRequest("bad Content-Length")
            if n > MAX_BODY_BYTES:
                self.close_connection = True  # the body is not read
                raise BadRequest("request body too large", 413, "too_large")
            return self.rfile.read(n)

        def _dispatch(self):
            try:
                split = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(split.query).items()}
                body = self._read_body()
                response = app(Request(self.command, split.path, query, self.headers, body))
            except BadRequest as e:
                response = error_response(e.status, e.error, str(e))
            except Exception:  # a bug: answer 500, say why on stderr
                log_error(service, "unhandled error:\n" + traceback.format_exc())
                response = error_response(500, "internal_error", "%s failed; see its stderr" % service)
            self._write(response)

        def _write(self, response):
            payload = json.dumps(response.body, separators=(",", ":")).encode() + b"\n"
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if emit_x_version:
                self.send_header("x-version", "%s-%s" % (service, version))
            for name, value in response.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512  # the default of 5 drops SYNs under a burst of new connections


def parse_args(service, description, argv=None, versions=None):
    p = argparse.ArgumentParser(prog="%s.py" % service, description=description)
    p.add_argument("--version", default=os.environ.get("SERVICE_VERSION", "v1"),
                   choices=versions,
                   help="version this instance runs (env SERVICE_VERSION; default v1)")
    p.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"),
                   help="address to listen on (env HOST; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None,
                   help="port to listen on (default: env PORT, which is required otherwise)")
    p.add_argument("--emit-x-version", action="store_true",
                   default=os.environ.get("EMIT_X_VERSION", "") in ("1", "true", "yes"),
                   help="add `x-version: <service>-<version>` to every response (env "
                        "EMIT_X_VERSION=1). Off by default: in a Triad mesh the sidecar adds it.")
    p.add_argument("--log-requests", action="store_true",
                   default=os.environ.get("LOG_REQUESTS", "") in ("1", "true", "yes"),
                   help="log one line per request to stderr (env LOG_REQUESTS=1; default quiet)")
    args = p.parse_args(argv)
    if args.port is None:
        port = os.environ.get("PORT")
        if not port:
            p.error("PORT is not set (and no --port given)")
        try:
            args.port = int(port)
        except ValueError:
            p.error("PORT=%r is not a port number" % port)
    if not 0 <= args.port <= 65535:
        p.error("port %d out of range" % args.port)
    return args


def serve(service, args, app):
    """Run `app(Request) -> Response` until SIGTERM/SIGINT."""
    handler = _make_handler(service, args.version, app, args.emit_x_version, args.log_requests)
    try:
        server = _Server((args.host, args.port), handler)
    except OSError as e:
        log_error(service, "cannot listen on %s:%d: %s" % (args.host, args.port, e))
        sys.exit(1)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.log_requests:
        sys.stderr.write("%s %s listening on %s:%d\n" % (service, args.version, args.host,
                                                          server.server_address[1]))
        sys.stderr.flush()
    server.serve_forever(poll_interval=0.2)
    server.server_close()


# --------------------------------------------------------------------------------------------
# Upstream calls


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer in time (no HTTP status)."""

    def __init__(self, service, kind, detail):
        super().__init__("%s %s: %s" % (service, kind, detail))
        self.service = service
        self.kind = kind  # "unreachable" | "timeout"
        self.detail = detail


class UpstreamResponse:
    __slots__ = ("status", "headers", "raw")

    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers
        self.raw = raw

    def json(self):
        try:
            value = json.loads(self.raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def summary(self, limit=300):
        """The upstream's answer for an error body: its JSON, or the start of its text."""
        value = self.json()
        if value is not None:
            return value
        return self.raw[:limit].decode("utf-8", "replace")


_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError,
          http.client.BadStatusLine)  # RemoteDisconnected is both of the first and the last


class Upstream:
    """Calls one service through its base URL over pooled keep-alive connections."""

    def __init__(self, service, base_url, timeout):
        split = urlsplit(base_url)
        if split.scheme != "http" or not split.hostname:
            raise ValueError("%s: base URL %r must look like http://HOST:PORT[/prefix]"
                             % (service, base_url))
        self.service = service
        self.host = split.hostname
        self.port = split.port or 80
        self.prefix = split.path.rstrip("/")
        self.timeout = timeout
        self._idle = []
        self._lock = threading.Lock()

    def _get(self):
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout), False

    def _put(self, conn):
        with self._lock:
            if len(self._idle) < 256:
                self._idle.append(conn)
                return
        conn.close()

    def call(self, method, path, body=None, headers=None):
        payload = None
        hdrs = dict(headers or {})
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            hdrs["Content-Type"] = "application/json"
        # Only a connection taken from the pool may be stale (closed by the peer while idle);
        # a request that fails on one before any answer is sent again once, on a new connection.
        for _ in range(2):
            conn, reused = self._get()
            try:
                conn.request(method, self.prefix + path, body=payload, headers=hdrs)
                resp = conn.getresponse()
                raw = resp.read()
            except _STALE as e:
                conn.close()
                if reused:
                    continue
                raise UpstreamError(self.service, "unreachable", repr(e))
            except socket.timeout:
                conn.close()
                raise UpstreamError(self.service, "timeout",
                                    "no answer within %.1f s" % self.timeout)
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise UpstreamError(self.service, "unreachable", repr(e))
            if resp.will_close:
                conn.close()
            else:
                self._put(conn)
            return UpstreamResponse(resp.status, resp.headers, raw)
        raise UpstreamError(self.service, "unreachable", "connection closed twice")


def upstreams(service, names):
    """The Upstream for each name, from TRIAD_UPSTREAM_<NAME>; exits 2 when one is missing."""
    timeout = float(os.environ.get("UPSTREAM_TIMEOUT_S", "30"))
    out = {}
    for name in names:
        var = "TRIAD_UPSTREAM_" + name.upper().replace("-", "_")
        url = os.environ.get(var)
        if not url:
            log_error(service, "%s is not set: %s calls %s through it" % (var, service, name))
            sys.exit(2)
        try:
            out[name] = Upstream(name, url, timeout)
        except ValueError as e:
            log_error(service, "%s: %s" % (var, e))
            sys.exit(2)
    return out


# --------------------------------------------------------------------------------------------
# Input checks shared by the services

ITEM_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}\Z")
USER_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}\Z")


def order_from(values):
    """(item, qty) from a dict of request values; BadRequest when invalid."""
    item = values.get("item", "coffee")
    if not isinstance(item, str) or not ITEM_RE.match(item):
        raise BadRequest("item must match [a-z0-9][a-z0-9-]{0,63}")
    qty = values.get("qty", 1)
    if isinstance(qty, str) and qty.isdigit():
        qty = int(qty)
    if not isinstance(qty, int) or isinstance(qty, bool) or not 1 <= qty <= 1000:
        raise BadRequest("qty must be an integer from 1 to 1000")
    return item, qty


def health(service, version):
    return Response(200, {"status": "ok", "service": service, "version": version})


def not_found(req):
    return error_response(404, "not_found", "no route for %s %s" % (req.method, req.path))


def now_ms():
    return int(time.time() * 1000)
