#!/usr/bin/env python3
"""DB: a read-only catalogue.

  GET /items          -> 200 {"items": [...], "version": "v1"}
  GET /items/<item>   -> 200 {"item", "unitPriceCents", "stock", "version",
                              "traceId": <x-b3-traceid received, or null>,
                              "xVersion": <x-version received, or null>}
                         404 unknown_item
  GET /healthz

It echoes the trace id it received so that the end of the call chain shows whether every
service before it propagated `x-b3-traceid`, and the `x-version` it received so that a test
can see no application copied pins (in a mesh, the sidecar may add one).

Run: PORT=9004 python3 db.py
"""

import common

SERVICE = "db"
ITEMS = {
    "coffee": {"unitPriceCents": 250, "stock": 120},
    "tea": {"unitPriceCents": 180, "stock": 80},
    "cake": {"unitPriceCents": 420, "stock": 12},
    "water": {"unitPriceCents": 90, "stock": 500},
}


def make_app(version):
    def app(req):
        if req.method != "GET":
            return common.not_found(req)
        if req.path == "/healthz":
            return common.health(SERVICE, version)
        if req.path == "/items":
            return common.Response(200, {"items": sorted(ITEMS), "version": version})
        if req.path.startswith("/items/"):
            name = req.path[len("/items/"):]
            item = ITEMS.get(name)
            if item is None:
                return common.error_response(404, "unknown_item", "no item %r" % name[:64],
                                             version=version)
            body = {"item": name, "version": version, "traceId": req.trace_id(),
                    "xVersion": req.header("x-version")}
            body.update(item)
            return common.Response(200, body)
        return common.not_found(req)

    return app


def main():
    args = common.parse_args(SERVICE, "DB: a read-only catalogue.")
    common.serve(SERVICE, args, make_app(args.version))


if __name__ == "__main__":
    main()
