#!/usr/bin/env python3
"""Portal: the entry of a transaction.

  POST /order  {"item": "coffee", "qty": 2, "user": "alice"}   (all optional)
  GET  /tx?item=coffee&qty=2&user=alice                          (the same, for curl and wrk)
    1. Auth  POST /token {"user"}            -> a token
    2. sleep delay_ms (query ?delay_ms=N or header x-delay-ms: N; default 0, at most 60000)
    3. Proc  POST /process, Authorization: Bearer <token>, {"item", "qty"}
       (Proc verifies the token with Auth and reads DB)
    -> 200 {"ok": true, "traceId", "dbTraceId", "dbXVersion", "order": {...}, "user", "delayMs",
            "versions": {"portal", "auth.issue", "proc", "auth.verify", "db"}}
       400 bad_request, 404 unknown_item (the client's mistakes)
       502 {"ok": false, "error": "token_issue_failed" | "token_rejected" | "proc_failed" |
            ..., "stage", "detail", "traceId", ...} when a step fails; 504 on an upstream timeout
  GET /healthz

"traceId" is the x-b3-traceid Portal received (null when none: it never invents one);
"dbTraceId" is the one DB received at the end of the chain, "dbXVersion" the x-version DB
received (null without a mesh: no application copies pins).

Upstreams: TRIAD_UPSTREAM_AUTH, TRIAD_UPSTREAM_PROC.
"""

import time

import common

SERVICE = "portal"
MAX_DELAY_MS = 60000


def delay_from(req):
    raw = req.query.get("delay_ms", req.header("x-delay-ms"))
    if raw is None or raw == "":
        return 0
    try:
        ms = int(raw)
    except ValueError:
        raise common.BadRequest("delay_ms must be an integer")
    if not 0 <= ms <= MAX_DELAY_MS:
        raise common.BadRequest("delay_ms must be from 0 to %d" % MAX_DELAY_MS)
    return ms


def make_app(version, up):
    auth, proc = up["auth"], up["proc"]

    def transaction(req):
        values = req.json() if req.method == "POST" else dict(req.query)
        item, qty = common.order_from(values)
        user = values.get("user", req.header("x-user") or "guest")
        if not isinstance(user, str) or not common.USER_RE.match(user):
            raise common.BadRequest("user must match [A-Za-z0-9._@-]{1,64}")
        delay_ms = delay_from(req)
        trace_id = req.trace_id()
        trace = req.trace_headers()

        def failed(status, error, stage, detail, **extra):
            return common.error_response(status, error, detail, stage=stage, traceId=trace_id,
                                         **extra)

        # 1. a token from Auth
        try:
            r = auth.call("POST", "/token", {"user": user}, trace)
        except common.UpstreamError as e:
            return failed(504 if e.kind == "timeout" else 502, "token_issue_failed",
                          "auth.issue", str(e))
        issued = r.json() or {}
        token = issued.get("token")
        if r.status != 200 or not isinstance(token, str):
            return failed(502, "token_issue_failed", "auth.issue",
                          "auth /token answered HTTP %d" % r.status, upstreamStatus=r.status,
                          upstream=r.summary())

        # 2. the window in which an unguarded upgrade of Auth breaks the transaction
        if delay_ms:
            time.sleep(delay_ms / 1000.0)

        # 3. Proc, with the token
        headers = dict(trace)
        headers["Authorization"] = "Bearer " + token
        try:
            p = proc.call("POST", "/process", {"item": item, "qty": qty}, headers)
        except common.UpstreamError as e:
            return failed(504 if e.kind == "timeout" else 502, "proc_failed", "proc", str(e))
        body = p.json() or {}
        if p.status == 200 and body.get("ok") is True:
            versions = {"portal": version, "auth.issue": issued.get("version")}
            versions.update(body.get("versions") or {})
            return common.Response(200, {
                "ok": True,
                "traceId": trace_id,
                "dbTraceId": body.get("dbTraceId"),
                "dbXVersion": body.get("dbXVersion"),
                "user": user,
                "delayMs": delay_ms,
                "order": {k: body.get(k) for k in ("item", "qty", "unitPriceCents", "totalCents")},
                "versions": versions,
            })
        if p.status in (400, 404) and isinstance(body.get("error"), str):
            return common.error_response(p.status, body["error"], body.get("detail"),
                                         traceId=trace_id)
        if body.get("error") == "token_rejected":
            return failed(502, "token_rejected", "proc -> auth.verify",
                          "the token auth issued was rejected when proc verified it: %s"
                          % body.get("detail"),
                          issuedBy="auth-%s" % issued.get("version"),
                          upstreamStatus=p.status, upstream=p.summary())
        status = 504 if p.status == 504 else 502
        error = body.get("error") if isinstance(body.get("error"), str) else "proc_failed"
        return failed(status, error, body.get("stage") or "proc",
                      body.get("detail") or "proc answered HTTP %d" % p.status,
                      upstreamStatus=p.status, upstream=p.summary())

    def app(req):
        if req.path == "/healthz" and req.method == "GET":
            return common.health(SERVICE, version)
        if (req.method, req.path) in (("POST", "/order"), ("GET", "/tx")):
            return transaction(req)
        return common.not_found(req)

    return app


def main():
    args = common.parse_args(SERVICE, "Portal: the entry of a transaction.")
    common.serve(SERVICE, args,
                 make_app(args.version, common.upstreams(SERVICE, ["auth", "proc"])))


if __name__ == "__main__":
    main()
