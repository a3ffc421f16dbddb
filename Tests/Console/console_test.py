"""The web console, driven in a real headless Chromium against a real `triad server`.

Run by scripts/console_test.sh (which installs Chromium, its driver and Selenium); this script
starts the server itself (TRIAD_BIN, CONSOLE_PORT), so that it can also stop and restart it.
Every wait is a wait for something to happen (WebDriverWait), never a fixed sleep; the seconds
each change took to show are printed, not asserted. With CONSOLE_SCREENSHOTS=DIR the pages are
also saved there as PNG files.
"""
import json
import math
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

PORT = int(os.environ.get("CONSOLE_PORT", "18299"))
BASE = f"http://127.0.0.1:{PORT}"
ADMIN = "console-admin-" + secrets.token_hex(16)
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")
WAIT = 20  # seconds: a slow CI machine's bound, not a latency claim
HOSTILE_IMG = '<img src=x onerror="window.__xss=1">'
HOSTILE_SCRIPT = '"><script>window.__xss=2</script>'


def api(method, path, body=None, token=ADMIN, content_type="application/json"):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode() or "null")


def must(status_body, *ok):
    status, body = status_body
    assert status in ok, f"HTTP {status}: {body}"
    return body


class Upstream(BaseHTTPRequestHandler):
    """The operation's upstream: answers every POST with what it was sent."""

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        sent = self.rfile.read(length).decode() if length else ""
        body = json.dumps({"brewed": True, "sent": sent}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def device(name, upstream_port, **spec):
    doc = {
        "apiVersion": "triad.io/v1alpha1", "kind": "Resource",
        "metadata": {"name": name, "labels": {"triad.io/space": "pantry-3f"}},
        "spec": {"kind": "Device", "accessMode": "Exclusive", "aliasName": "Coffee machine, 3rd floor",
                 "description": {"en": "Brews coffee for whoever holds it."},
                 "operations": [{"name": "brew", "price": 2.5, "description": "one cup",
                                 "httpAction": {"action": "POST", "url": f"http://127.0.0.1:{upstream_port}/brew"}}]},
    }
    doc["spec"].update(spec)
    return doc


class Server:
    """`triad server` on SQLite in a fresh directory; stop() and start() keep its data."""

    def __init__(self):
        self.work = tempfile.mkdtemp(prefix="triad-console.")
        self.log_path = os.path.join(self.work, "server.log")
        self.process = None

    def start(self):
        env = dict(os.environ, TRIAD_ADMIN_TOKEN=ADMIN)
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [os.environ["TRIAD_BIN"], "server", "--listen", f"127.0.0.1:{PORT}", "--data-dir", os.path.join(self.work, "data")],
                cwd=self.work, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the server exited: {self.tail()}"
            try:
                with urllib.request.urlopen(BASE + "/healthz", timeout=2):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"the server did not answer within 60 s: {self.tail()}")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)

    def tail(self):
        with open(self.log_path) as f:
            return "".join(f.readlines()[-30:])


def shot(driver, name):
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        driver.save_screenshot(os.path.join(SHOTS, f"{name}.png"))


def main(server):
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = upstream.server_address[1]

    # The page and its headers, before any browser: CSP strict, no token needed for assets.
    with urllib.request.urlopen(BASE + "/console/", timeout=30) as r:
        csp = r.headers.get("Content-Security-Policy", "")
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp, csp
    with urllib.request.urlopen(BASE + "/", timeout=30) as r:
        assert r.url.endswith("/console/"), r.url

    app = must(api("POST", "/api/v1/tokens", {"name": "console-app", "role": "app"}), 201)["token"]
    must(api("POST", "/api/v1/resources", {"apiVersion": "triad.io/v1alpha1", "kind": "Resource",
                                           "metadata": {"name": "pantry-3f"}, "spec": {"kind": "Space"}}), 201)

    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=options)
    wait = WebDriverWait(driver, WAIT)

    def css(selector):
        return driver.find_elements(By.CSS_SELECTOR, selector)

    def text_of(selector):
        # Read in one script call: a live page re-renders between a find and a read.
        return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : ''", selector)

    def until(what, condition):
        start = time.monotonic()
        try:
            wait.until(lambda d: condition())
        except TimeoutException:
            logs = [e["message"] for e in driver.get_log("browser")]
            raise AssertionError(f"not seen within {WAIT} s: {what}; browser console: {logs}; page: {text_of('#main')[:600]}")
        took = time.monotonic() - start
        print(f"console_test: {what}: {took:.2f} s")
        return took

    try:
        driver.get(BASE + "/console/")
        until("the sign-in form", lambda: css("#signin"))
        css("#token")[0].send_keys(app)
        css("#signin button")[0].click()
        until("the resources table after sign-in", lambda: css("#resources"))
        assert "console-app (app)" in text_of("#who")
        assert "Resources" in text_of("nav") and "Ledger" in text_of("nav"), text_of("nav")

        # Created elsewhere: the row appears without a reload.
        must(api("POST", "/api/v1/resources", device("console-coffee", port)), 201)
        until("a created resource appears in the table", lambda: css('tr[data-name="console-coffee"]'))
        must(api("PATCH", "/api/v1/resources/console-coffee/status", {"status": {"phase": "Running"}},
                 content_type="application/merge-patch+json"), 200)
        until("its status change reaches the row", lambda: "Running" in text_of('tr[data-name="console-coffee"] .phase'))
        until("the space lists the device", lambda: "console-coffee" in text_of('[data-space="pantry-3f"]'))
        # People are in a space by their location, and leave it when they move.
        must(api("POST", "/api/v1/resources", {"apiVersion": "triad.io/v1alpha1", "kind": "Resource",
                                               "metadata": {"name": "console-alice"}, "spec": {"kind": "Person"}}), 201)
        must(api("PATCH", "/api/v1/resources/console-alice/status", {"status": {"location": {"space": "pantry-3f"}}},
                 content_type="application/merge-patch+json"), 200)
        until("the space lists the person who is in it", lambda: "console-alice" in text_of('[data-space="pantry-3f"]'))
        must(api("PATCH", "/api/v1/resources/console-alice/status", {"status": {"location": {"space": "lobby-1f"}}},
                 content_type="application/merge-patch+json"), 200)
        until("the person leaves the space when she moves", lambda: "console-alice" not in text_of('[data-space="pantry-3f"]'))

        # Hostile data stays data.
        hostile = device("console-hostile", port, aliasName=HOSTILE_IMG, description={"en": HOSTILE_SCRIPT})
        hostile["metadata"]["annotations"] = {"note": HOSTILE_SCRIPT}
        must(api("POST", "/api/v1/resources", hostile), 201)
        must(api("PATCH", "/api/v1/resources/console-hostile/status",
                 {"status": {"phase": "Failed", "conditions": [{"type": "AgentReady", "status": "False", "reason": "Broken",
                                                                 "message": HOSTILE_IMG}]}},
                 content_type="application/merge-patch+json"), 200)
        until("the hostile resource's row", lambda: HOSTILE_IMG in text_of('tr[data-name="console-hostile"]'))
        shot(driver, "resources")
        driver.get(BASE + "/console/#/r/console-hostile")
        until("the hostile resource's page", lambda: HOSTILE_SCRIPT in text_of(".description"))
        until("its condition message as text", lambda: HOSTILE_IMG in text_of("#conditions"))
        assert css("#conditions tr.failed"), "a False condition stands out"
        assert not css("#main img") and not css("#main script"), "hostile markup became elements"
        assert driver.execute_script("return window.__xss") is None, "hostile script ran"

        # Bind, invoke, and the ledger's record with its price.
        driver.get(BASE + "/console/#/r/console-coffee")
        until("the binding section", lambda: css("#bind"))
        css("#bind")[0].click()
        until("bound by the app", lambda: "Bound by console-app" in text_of("#binding-state"))
        css("#invoke-body")[0].send_keys('{"cups": 1}')
        css('button.op[data-op="brew"]')[0].click()
        until("the invocation's ledger record", lambda: "Succeeded" in text_of("#invoke-record") and "2.5" in text_of("#invoke-record"))
        assert "Upstream answered 200" in text_of("#invoke-result")

        # Telemetry moves the chart.
        points = lambda: int(driver.execute_script("const e = document.querySelector('svg.chart'); return e ? e.getAttribute('data-points') : '-1'"))
        until("the chart", lambda: points() >= 0)
        before = points()
        # Samples over the last 40 minutes (with their own `ts`), the newest now.
        now = time.time()
        for i in range(9):
            ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - (8 - i) * 300))
            sample = {"ts": ts, "values": {"temperature": round(20 + 2 * math.sin(i / 1.5), 2), "cups": i}}
            must(api("POST", "/api/v1/resources/console-coffee/telemetry", sample), 202)
        until("telemetry reaches the chart", lambda: points() >= before + 18)
        shot(driver, "resource")

        driver.get(BASE + "/console/#/ledger")
        until("the ledger lists the invocation", lambda: "console-coffee" in text_of("#ledger") and "2.5" in text_of("#ledger-total"))
        shot(driver, "ledger")

        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, f"the browser console has errors: {severe}"

        # The server goes away: a banner; it comes back: the banner goes and the table is live again.
        driver.get(BASE + "/console/#/resources")
        until("the table again", lambda: css('tr[data-name="console-coffee"]'))
        server.stop()
        until("the banner while the server is away", lambda: "reconnecting" in text_of("#banner") and css("#banner")[0].is_displayed())
        server.start()
        until("the banner gone once the server is back", lambda: not css("#banner")[0].is_displayed())
        must(api("POST", "/api/v1/resources", device("console-after-restart", port)), 201)
        until("a resource created after the restart appears", lambda: css('tr[data-name="console-after-restart"]'))

        # A revoked token lands on sign-in with the reason.
        must(api("DELETE", "/api/v1/tokens/console-app"), 200)
        until("sign-in after the token was revoked", lambda: css("#signin") and "revoked" in text_of("#signin-message"))

        # A device sees its own resource, and no table of everyone's, no ledger and no invoke buttons.
        device_token = must(api("POST", "/api/v1/tokens", {"name": "console-device", "role": "device", "resource": "console-coffee"}), 201)["token"]
        css("#token")[0].send_keys(device_token)
        css("#signin button")[0].click()
        until("a device lands on its own resource", lambda: "console-coffee" in text_of("#main h1") and "console-device (device)" in text_of("#who"))
        nav = text_of("nav")
        assert "Resources" not in nav and "Ledger" not in nav, f"a device is offered {nav}"
        assert not css("button.op"), "a device is offered invoke buttons"
        print("console_test: all checks passed")
    finally:
        driver.quit()
        upstream.shutdown()


if __name__ == "__main__":
    server = Server()
    try:
        server.start()
        main(server)
    except AssertionError as e:
        print(f"console_test: FAILED: {e}", file=sys.stderr)
        print(f"console_test: the server's log ({server.log_path}):\n{server.tail()}", file=sys.stderr)
        sys.exit(1)
    finally:
        alive = server.process is not None and server.process.poll() is None
        server.stop()
    if not alive:
        print(f"console_test: FAILED: the server died: {server.tail()}", file=sys.stderr)
        sys.exit(1)
