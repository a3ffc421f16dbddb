"""Self-test of the example system, run directly (no mesh).

    python3 -m unittest agents/examples/python/test_system.py     (from the repository root)

Starts the services on free loopback ports with the environment contract of the mesh (docs/mesh.md)
(PORT, TRIAD_UPSTREAM_<S>) and wires two call chains:

    consistent:  portal -> auth-v1 (issue),  proc -> auth-v1 (verify), proc -> db
    mixed:       portal -> auth-v1 (issue),  proc -> auth-v2 (verify), proc -> db

The mixed chain is what an unguarded upgrade of Auth produces in the middle of a transaction;
it must fail visibly.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None, headers=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        payload = None
        if body is not None:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        return resp.status, resp.headers, parsed
    finally:
        conn.close()


class System:
    """Processes started for the tests; stderr of each goes to a file shown on failure."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="triad-examples-")
        self.procs = {}
        self.ports = {}

    def start(self, name, script, args=(), upstreams=None, env=None):
        port = free_port()
        e = dict(os.environ)
        for k in list(e):
            if k.startswith("TRIAD_UPSTREAM_") or k in ("SERVICE_VERSION", "EMIT_X_VERSION",
                                                        "LOG_REQUESTS"):
                del e[k]
        e["PORT"] = str(port)
        for service, target in (upstreams or {}).items():
            e["TRIAD_UPSTREAM_" + service.upper()] = "http://127.0.0.1:%d" % self.ports[target]
        e.update(env or {})
        err = open(os.path.join(self.dir.name, name + ".stderr"), "wb")
        self.procs[name] = (subprocess.Popen(
            [sys.executable, os.path.join(HERE, script)] + list(args),
            env=e, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err), err)
        self.ports[name] = port
        return port

    def wait_healthy(self, deadline_s=15):
        deadline = time.monotonic() + deadline_s
        for name, port in self.ports.items():
            while True:
                proc = self.procs[name][0]
                if proc.poll() is not None:
                    raise RuntimeError("%s exited with %s: %s" % (name, proc.returncode,
                                                                 self.stderr(name)))
                try:
                    status, _, _ = request(port, "GET", "/healthz", timeout=1)
                    if status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("%s not healthy: %s" % (name, self.stderr(name)))
                time.sleep(0.05)

    def stderr(self, name):
        with open(os.path.join(self.dir.name, name + ".stderr"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        for proc, err in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, (proc, err) in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
            err.close()
        self.dir.cleanup()
        return codes


class ExampleSystemTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        s = cls.sys = System()
        try:
            s.start("db", "db.py")
            s.start("auth1", "auth.py", ["--version", "v1"])
            s.start("auth2", "auth.py", ["--version", "v2"], env={"EMIT_X_VERSION": "1"})
            s.start("proc", "proc.py", upstreams={"auth": "auth1", "db": "db"})
            s.start("portal", "portal.py", upstreams={"auth": "auth1", "proc": "proc"})
            s.start("proc_mixed", "proc.py", upstreams={"auth": "auth2", "db": "db"})
            s.start("portal_mixed", "portal.py", upstreams={"auth": "auth1", "proc": "proc_mixed"})
            s.wait_healthy()
        except Exception:
            s.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        codes = cls.sys.stop()
        bad = {n: c for n, c in codes.items() if c != 0}
        assert not bad, "services did not exit 0 on SIGTERM: %r" % bad

    def port(self, name):
        return self.sys.ports[name]

    # -- health and the environment contract -------------------------------------------------

    def test_healthz(self):
        for name, service, version in [("db", "db", "v1"), ("auth1", "auth", "v1"),
                                       ("auth2", "auth", "v2"), ("proc", "proc", "v1"),
                                       ("portal", "portal", "v1")]:
            status, _, body = request(self.port(name), "GET", "/healthz")
            self.assertEqual(status, 200, name)
            self.assertEqual(body, {"status": "ok", "service": service, "version": version})

    def test_missing_upstream_is_a_clear_startup_error(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAD_UPSTREAM_")}
        env.update(PORT=str(free_port()), TRIAD_UPSTREAM_AUTH="http://127.0.0.1:1")
        r = subprocess.run([sys.executable, os.path.join(HERE, "proc.py")], env=env,
                           capture_output=True, timeout=10)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"TRIAD_UPSTREAM_DB is not set", r.stderr)

    def test_x_version_is_left_to_the_mesh(self):
        # By default no service sets x-version on its responses ...
        status, headers, _ = request(self.port("portal"), "GET", "/tx")
        self.assertEqual(status, 200)
        self.assertIsNone(headers.get("x-version"))
        # ... unless run with --emit-x-version / EMIT_X_VERSION=1 (auth2 here).
        _, headers, _ = request(self.port("auth2"), "GET", "/healthz")
        self.assertEqual(headers.get("x-version"), "auth-v2")
        # And no service copies a pin it received onto the requests it makes.
        status, _, body = request(self.port("portal"), "POST", "/order", {},
                                  {"x-b3-traceid": "feedc0de", "x-version": "auth-v1"})
        self.assertEqual(status, 200)
        self.assertIsNone(body["dbXVersion"])

    # -- transactions ------------------------------------------------------------------------

    def test_transaction_end_to_end_with_auth_v1(self):
        trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        status, _, body = request(self.port("portal"), "POST", "/order",
                                  {"item": "tea", "qty": 3, "user": "alice"},
                                  {"x-b3-traceid": trace})
        self.assertEqual(status, 200, body)
        self.assertTrue(body["ok"])
        self.assertEqual(body["order"], {"item": "tea", "qty": 3, "unitPriceCents": 180,
                                         "totalCents": 540})
        self.assertEqual(body["user"], "alice")
        self.assertEqual(body["versions"], {"portal": "v1", "auth.issue": "v1", "proc": "v1",
                                            "auth.verify": "v1", "db": "v1"})
        # x-b3-traceid went portal -> proc -> db unchanged.
        self.assertEqual(body["traceId"], trace)
        self.assertEqual(body["dbTraceId"], trace)

    def test_get_tx_is_the_same_transaction(self):
        status, _, body = request(self.port("portal"), "GET", "/tx?item=cake&qty=2",
                                  headers={"x-b3-traceid": "abc"})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["order"]["totalCents"], 840)
        self.assertEqual(body["dbTraceId"], "abc")

    def test_missing_trace_id_is_tolerated_and_not_invented(self):
        status, _, body = request(self.port("portal"), "POST", "/order", {"item": "water"})
        self.assertEqual(status, 200, body)
        self.assertIsNone(body["traceId"])
        self.assertIsNone(body["dbTraceId"])

    def test_mixed_auth_versions_fail_visibly(self):
        trace = "00000000000000000000000000mixed1"
        status, _, body = request(self.port("portal_mixed"), "POST", "/order", {},
                                  {"x-b3-traceid": trace})
        self.assertEqual(status, 502, body)
        self.assertFalse(body["ok"])
        self.assertEqual(body["error"], "token_rejected")
        self.assertEqual(body["stage"], "proc -> auth.verify")
        self.assertEqual(body["issuedBy"], "auth-v1")
        self.assertIn("auth-v2 cannot verify a token issued by auth-v1", body["detail"])
        self.assertEqual(body["traceId"], trace)
        self.assertEqual(body["upstream"]["authStatus"], 409)

    def test_delay_knob_sleeps_between_issue_and_proc(self):
        start = time.monotonic()
        status, _, body = request(self.port("portal"), "GET", "/tx?delay_ms=150")
        elapsed = time.monotonic() - start
        self.assertEqual(status, 200, body)
        self.assertEqual(body["delayMs"], 150)
        self.assertGreaterEqual(elapsed, 0.15)
        status, _, body = request(self.port("portal"), "POST", "/order", {},
                                  {"x-delay-ms": "20"})
        self.assertEqual((status, body["delayMs"]), (200, 20))
        status, _, body = request(self.port("portal"), "GET", "/tx?delay_ms=soon")
        self.assertEqual((status, body["error"]), (400, "bad_request"))

    def test_client_mistakes_are_4xx(self):
        p = self.port("portal")
        self.assertEqual(request(p, "GET", "/tx?item=unobtainium")[0], 404)
        self.assertEqual(request(p, "GET", "/tx?qty=0")[0], 400)
        self.assertEqual(request(p, "POST", "/order", b"{not json")[0], 400)
        self.assertEqual(request(p, "GET", "/nowhere")[0], 404)

    # -- Auth's two token formats ------------------------------------------------------------

    def issue(self, name, user="bob"):
        status, _, body = request(self.port(name), "POST", "/token", {"user": user})
        self.assertEqual(status, 200, body)
        return body["token"]

    def verify(self, name, token):
        return request(self.port(name), "POST", "/verify", {"token": token})

    def test_each_auth_version_verifies_its_own_tokens(self):
        for name, prefix, version in [("auth1", "T1.", "v1"), ("auth2", "v2~", "v2")]:
            token = self.issue(name)
            self.assertTrue(token.startswith(prefix), token)
            status, _, body = self.verify(name, token)
            self.assertEqual((status, body), (200, {"valid": True, "subject": "bob",
                                                    "version": version}))

    def test_auth_versions_reject_each_others_tokens(self):
        v1, v2 = self.issue("auth1"), self.issue("auth2")
        status, _, body = self.verify("auth2", v1)
        self.assertEqual((status, body["error"], body["tokenVersion"]),
                         (409, "token_version_mismatch", "v1"))
        status, _, body = self.verify("auth1", v2)
        self.assertEqual((status, body["error"], body["tokenVersion"]),
                         (409, "token_version_mismatch", "v2"))

    def test_auth_rejects_forged_and_garbage_tokens(self):
        v1 = self.issue("auth1")
        forged = v1.rsplit(".", 1)[0] + "." + "0" * 40
        self.assertEqual(self.verify("auth1", forged)[2]["error"], "bad_signature")
        self.assertEqual(self.verify("auth1", "hello")[0], 401)
        self.assertEqual(self.verify("auth2", "v2~x~y")[0], 401)
        self.assertEqual(self.verify("auth1", "T1.é.1.2")[0], 401)
        self.assertEqual(request(self.port("auth1"), "POST", "/verify", {})[0], 401)

    # -- the load generator ------------------------------------------------------------------

    def test_loadgen_smoke(self):
        def run(portal, *extra):
            r = subprocess.run(
                [sys.executable, os.path.join(HERE, "loadgen.py"),
                 "http://127.0.0.1:%d" % self.port(portal), "--rate", "40", "--duration", "0.5",
                 "--slow-fraction", "0.25", "--slow-ms", "30", "--concurrency", "8", "--seed", "7"]
                + list(extra), capture_output=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            return json.loads(r.stdout)

        good = run("portal")
        self.assertEqual((good["sent"], good["ok"], good["failed"]), (20, 20, 0), good)
        self.assertGreater(good["slow_sent"], 0)
        for key in ("failures_by_status", "p50_ms", "p99_ms", "achieved_rps"):
            self.assertIn(key, good)
        mixed = run("portal_mixed", "--method", "GET", "--path", "/tx")
        self.assertEqual((mixed["ok"], mixed["failures_by_status"]), (0, {"502": 20}), mixed)


if __name__ == "__main__":
    unittest.main()
