#!/usr/bin/env python3
"""Proc: processes an order with a token.

  POST /process  Authorization: Bearer <token>, {"item": "coffee", "qty": 2}
    -> calls Auth POST /verify with the token, then DB GET /items/<item>
    -> 200 {"ok": true, "item", "qty", "unitPriceCents", "totalCents", "subject",
            "dbTraceId", "dbXVersion", "versions": {"proc", "auth.verify", "db"}}
       400 bad_request | 401 missing_token
       403 token_rejected (Auth refused the token; Auth's answer is in "auth")
       404 unknown_item
       502 auth_failed | db_failed (upstream unreachable or answered an error), 504 on timeout
  GET /healthz

Upstreams: TRIAD_UPSTREAM_AUTH, TRIAD_UPSTREAM_DB.
Run: PORT=9003 TRIAD_UPSTREAM_AUTH=http://127.0.0.1:9001 TRIAD_UPSTREAM_DB=http://127.0.0.1:9004 \
     python3 proc.py
"""

import common

SERVICE = "proc"


def upstream_failure(stage, e):
    status = 504 if e.kind == "timeout" else 502
    return common.error_response(status, stage + "_failed", str(e), stage=stage)


def make_app(version, up):
    auth, db = up["auth"], up["db"]

    def app(req):
        if req.path == "/healthz" and req.method == "GET":
            return common.health(SERVICE, version)
        if req.path != "/process" or req.method != "POST":
            return common.not_found(req)
        item, qty = common.order_from(req.json())
        authz = req.header("Authorization") or ""
        if not authz.startswith("Bearer ") or len(authz) <= 7:
            return common.error_response(401, "missing_token", "Authorization: Bearer <token> required")
        token = authz[7:]
        trace = req.trace_headers()

        try:
            r = auth.call("POST", "/verify", {"token": token}, trace)
        except common.UpstreamError as e:
            return upstream_failure("auth", e)
        verified = r.json() or {}
        if r.status in (401, 403, 409):
            detail = verified.get("detail") if isinstance(verified.get("detail"), str) else None
            return common.error_response(
                403, "token_rejected", detail or "auth refused the token (HTTP %d)" % r.status,
                stage="auth.verify", authStatus=r.status, auth=r.summary())
        if r.status != 200 or verified.get("valid") is not True:
            return common.error_response(502, "auth_failed",
                                         "auth /verify answered HTTP %d" % r.status,
                                         stage="auth.verify", authStatus=r.status, auth=r.summary())

        try:
            d = db.call("GET", "/items/" + item, None, trace)
        except common.UpstreamError as e:
            return upstream_failure("db", e)
        row = d.json() or {}
        if d.status == 404:
            return common.error_response(404, "unknown_item", "no item %r" % item)
        if d.status != 200 or not isinstance(row.get("unitPriceCents"), int):
            return common.error_response(502, "db_failed", "db answered HTTP %d" % d.status,
                                         stage="db", dbStatus=d.status, db=d.summary())

        return common.Response(200, {
            "ok": True,
            "item": item,
            "qty": qty,
            "unitPriceCents": row["unitPriceCents"],
            "totalCents": row["unitPriceCents"] * qty,
            "subject": verified.get("subject"),
            "dbTraceId": row.get("traceId"),
            "dbXVersion": row.get("xVersion"),
            "versions": {"proc": version, "auth.verify": verified.get("version"),
                         "db": row.get("version")},
        })

    return app


def main():
    args = common.parse_args(SERVICE, "Proc: verifies the token with Auth, reads DB.")
    common.serve(SERVICE, args, make_app(args.version, common.upstreams(SERVICE, ["auth", "db"])))


if __name__ == "__main__":
    main()
