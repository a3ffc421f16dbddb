import Foundation
import TriadCore

/// Renders the configuration of every Envoy of the mesh (pure: no I/O). Each Envoy reads a
/// bootstrap naming LDS and CDS files in a watched directory; every listener takes its routes
/// from an RDS file there, so a route change is a file swap that Envoy applies in milliseconds,
/// keep-alive connections included (a switch in LDS would leave open keep-alive connections
/// on the old route until Envoy drains them).
public enum EnvoyConfig {
    /// One Envoy's files: the bootstrap, and the dynamic files by name (in `configDirectory`).
    public struct Files: Sendable {
        public var id: String
        public var bootstrap: JSONValue
        public var dynamic: [EnvoyFile: JSONValue]
    }

    static let logCluster = "triad_log"
    static let authzCluster = "triad_authz"
    /// The route name of the refusal of a pin to a version that does not exist (counted).
    public static let unknownPinRoute = "triad-unknown-pin"
    /// The route name of CV's refusal of an unpinned request at a blocked version (not a visit).
    public static let blockedRoute = "triad-blocked"
    /// The path of the marker request the update controller sends through a blocked version's
    /// inbound sidecar: its record travels in the same ordered log stream as the admissions.
    public static let markerPath = "/.triad/marker"
    /// The route that answers it (how its record is told apart).
    public static let markerRoute = "triad-marker"

    public static func envoyDirectory(_ plan: MeshPlan, id: String) -> String { "\(plan.runDirectory)/envoy/\(id)" }
    public static func configDirectory(_ plan: MeshPlan, id: String) -> String { envoyDirectory(plan, id: id) + "/cfg" }

    // MARK: Envoys

    public static func sidecar(_ instance: MeshPlan.Instance, plan: MeshPlan) -> Files {
        let cfg = configDirectory(plan, id: instance.sidecar.id)
        var listeners: [JSONValue] = [
            listener(
                "inbound", port: instance.sidecar.inboundPort,
                hcm: withoutRecording(inboundHCM(instance, cfg: cfg, logsEnds: instance.service == plan.gatewayService), plan))
        ]
        let blocked = plan.routes(of: instance.service)?.blocked.contains(instance.version) ?? false
        var dynamic: [EnvoyFile: JSONValue] = [.routes(.inbound): resources([inboundRoutes(instance, blocked: blocked)])]
        var clusters: [JSONValue] = [cluster("local", endpoints: [instance.app])]
        for (service, port) in instance.sidecar.outboundPorts.sorted(by: { $0.key < $1.key }) {
            listeners.append(listener("out-\(service)", port: port, hcm: withoutRecording(outboundHCM(instance, target: service, plan: plan, cfg: cfg), plan)))
            if let routes = plan.routes(of: service) {
                var table = targetRoutes(EnvoyFile.RouteTable.outbound(service: service).configName, routes)
                if plan.checksPins, !routes.pinsMatter { table = withVirtualHostField(table, "typed_per_filter_config", skipPinCheck) }
                dynamic[.routes(.outbound(service: service))] = resources([table])
                clusters += versionClusters(routes, plan: plan)
            }
        }
        dynamic[.listeners] = resources(listeners)
        dynamic[.clusters] = resources(clusters)
        return Files(
            id: instance.sidecar.id, bootstrap: bootstrap(id: instance.sidecar.id, adminPort: instance.sidecar.adminPort, plan: plan), dynamic: dynamic)
    }

    public static func gateway(plan: MeshPlan) -> Files {
        let id = "gateway"
        let cfg = configDirectory(plan, id: id)
        let target = plan.gatewayService
        var dynamic: [EnvoyFile: JSONValue] = [:]
        var clusters: [JSONValue] = []
        if let routes = plan.routes(of: target) {
            // The gateway's routes by path first (the longest prefix first), then its own service.
            var list: [JSONValue] = []
            for route in plan.gatewayRoutes.sorted(by: { $0.prefix.count > $1.prefix.count }) {
                guard let other = plan.routes(of: route.service) else { continue }
                list += gatewayRouteList(other, prefix: route.prefix, plan: plan)
            }
            list += gatewayRouteList(routes, prefix: "/", plan: plan)
            var table: JSONValue = [
                "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
                "name": .string(EnvoyFile.RouteTable.gateway.configName),
                "virtual_hosts": [["name": .string(target), "domains": ["*"], "routes": .array(list)]],
            ]
            // The client learns the trace id the gateway assigned (or kept).
            table = withVirtualHostField(table, "response_headers_to_add", [header("x-b3-traceid", "%REQ(X-B3-TRACEID)%")])
            dynamic[.routes(.gateway)] = resources([table])
            for service in plan.gatewayServices {
                if let r = plan.routes(of: service) { clusters += versionClusters(r, plan: plan, maxInFlight: plan.gatewayMaxInFlight) }
            }
        }
        var filters: [JSONValue] = plan.plainEnvoy ? [] : [luaTraceID]
        if plan.checksPins { filters.append(authzFilter(pathPrefix: "/check/gw/\(target)")) }
        filters.append(router)
        var hcm: [String: JSONValue] = [
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": .string(EnvoyFile.RouteTable.gateway.statPrefix),
            "rds": rds(.gateway, cfg: cfg),
            "http_filters": .array(filters),
            // The gateway's trace manager records the transactions that completed. Requests
            // are logged when they arrive too: a transaction may enter the gateway again (an
            // agent calling another through Triad), and it completes when its last request here ends.
            "access_log_options": ["flush_access_log_on_new_request": true],
            "access_log": [
                fluentd(
                    tag: "gw",
                    record: [
                        "t": "%REQ(X-B3-TRACEID)%", "k": "%ACCESS_LOG_TYPE%", "s": "%START_TIME(%s.%6f)%", "d": "%DURATION%",
                        "c": "%RESPONSE_CODE%", "r": "%ROUTE_NAME%", "x": "%RESPONSE_CODE_DETAILS%",
                    ])
            ],
        ]
        if plan.checksPins { hcm["local_reply_config"] = denyAs503 }
        let listeners: [JSONValue] = [
            listener("gateway", host: plan.gatewayListen.host, port: plan.gatewayListen.port, hcm: withoutRecording(.object(hcm), plan))
        ]
        dynamic[.listeners] = resources(listeners)
        dynamic[.clusters] = resources(clusters)
        return Files(id: id, bootstrap: bootstrap(id: id, adminPort: plan.gatewayAdminPort, plan: plan), dynamic: dynamic)
    }

    // MARK: Pieces

    static func bootstrap(id: String, adminPort: Int, plan: MeshPlan) -> JSONValue {
        let cfg = configDirectory(plan, id: id)
        var statics: [JSONValue] = plan.plainEnvoy ? [] : [pipeCluster(logCluster, path: plan.logSocket)]
        if plan.checksPins { statics.append(pipeCluster(authzCluster, path: plan.authzSocket)) }
        return [
            "node": ["id": .string(id), "cluster": .string(plan.meshName)],
            "admin": ["address": socketAddress("127.0.0.1", adminPort)],
            "static_resources": ["clusters": .array(statics)],
            "dynamic_resources": [
                "lds_config": [
                    "path_config_source": ["path": .string(cfg + "/" + EnvoyFile.listeners.name), "watched_directory": ["path": .string(cfg)]],
                    "resource_api_version": "V3",
                ],
                "cds_config": [
                    "path_config_source": ["path": .string(cfg + "/" + EnvoyFile.clusters.name), "watched_directory": ["path": .string(cfg)]],
                    "resource_api_version": "V3",
                ],
            ],
        ]
    }

    /// `logsEnds`: the entry service's sidecars log each request's end too (a transaction whose
    /// gateway record was lost completes when its root request ends, MeshRecorder.isComplete);
    /// every other sidecar logs admissions alone. Retirement needs no more: a version is free
    /// once every transaction that visited it completed at the gateway, and calls within a
    /// transaction end before it does (models/README.md).
    static func inboundHCM(_ instance: MeshPlan.Instance, cfg: String, logsEnds: Bool) -> JSONValue {
        [
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": .string(EnvoyFile.RouteTable.inbound.statPrefix),
            "rds": rds(.inbound, cfg: cfg),
            "http_filters": [router],
            // A visit is recorded when the request is admitted, not only when it ends
            // (models/README.md: a set fed by end records misses traces still in flight).
            "access_log_options": ["flush_access_log_on_new_request": true],
            // Only what the trace manager needs (records are the mesh's main per-request
            // cost); times are the receiver's clock, a millisecond later.
            "access_log": [
                fluentd(
                    tag: "in.\(instance.sidecar.id)",
                    record: [
                        "t": "%REQ(X-B3-TRACEID)%", "k": "%ACCESS_LOG_TYPE%", "r": "%ROUTE_NAME%",
                    ], filter: logsEnds ? nil : ["log_type_filter": ["types": ["DownstreamStart"]]])
            ],
        ]
    }

    static func outboundHCM(_ instance: MeshPlan.Instance, target: String, plan: MeshPlan, cfg: String) -> JSONValue {
        var filters: [JSONValue] = []
        if plan.checksPins { filters.append(authzFilter(pathPrefix: "/check/out/\(target)")) }
        filters.append(router)
        var hcm: [String: JSONValue] = [
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": .string(EnvoyFile.RouteTable.outbound(service: target).statPrefix),
            "rds": rds(.outbound(service: target), cfg: cfg),
            "http_filters": .array(filters),
            // Only refusals (503) are shipped from outbound listeners: they are counted, not visits.
            "access_log": [
                fluentd(
                    tag: "out.\(instance.sidecar.id)",
                    record: [
                        "t": "%REQ(X-B3-TRACEID)%", "c": "%RESPONSE_CODE%", "r": "%ROUTE_NAME%", "x": "%RESPONSE_CODE_DETAILS%",
                        "p": "%REQ(X-VERSION)%",
                    ], filter: ["status_code_filter": ["comparison": ["op": "EQ", "value": ["default_value": 503, "runtime_key": "triad.log_503"]]]])
            ],
        ]
        if plan.checksPins { hcm["local_reply_config"] = denyAs503 }
        return .object(hcm)
    }

    /// The gateway's routes to a service. While the service has one version, a request that
    /// pins nothing (no `x-version`) skips the pin check: there is no pin to refuse, learn or
    /// attach. The route has the default's name, so its records read the same.
    static func gatewayRouteList(_ routes: ServiceRoutes, prefix: String, plan: MeshPlan) -> [JSONValue] {
        let list = targetRouteList(routes, prefix: prefix)
        guard plan.checksPins, !routes.pinsMatter else { return list }
        let unpinned: JSONValue = [
            "name": .string("default:\(routes.service)-\(routes.defaultVersion)"),
            "match": ["prefix": .string(prefix), "headers": [["name": "x-version", "present_match": false]]],
            "route": routeAction("\(routes.service)-\(routes.defaultVersion)"),
            "typed_per_filter_config": skipPinCheck,
        ]
        return [unpinned] + list
    }

    /// Routes to a service's versions: one header route per version (x-version pin), a 503
    /// problem for a pin to a version that does not exist, then the default.
    public static func targetRoutes(_ name: String, _ routes: ServiceRoutes) -> JSONValue {
        [
            "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            "name": .string(name),
            "virtual_hosts": [["name": .string(routes.service), "domains": ["*"], "routes": .array(targetRouteList(routes, prefix: "/"))]],
        ]
    }

    /// The routes of `targetRoutes` for the requests whose path starts with `prefix`.
    static func targetRouteList(_ routes: ServiceRoutes, prefix: String) -> [JSONValue] {
        let s = routes.service
        var list: [JSONValue] = []
        let defaultRoute: JSONValue = [
            "name": .string("default:\(s)-\(routes.defaultVersion)"),
            "match": ["prefix": .string(prefix)],
            "route": routeAction("\(s)-\(routes.defaultVersion)"),
        ]
        guard routes.pinRoutes else { return [defaultRoute] }
        for v in routes.versions {
            list.append([
                "name": .string("pin:\(s)-\(v)"),
                "match": ["prefix": .string(prefix), "headers": [pinMatch(s, versionRegex: escape(v))]],
                "route": routeAction("\(s)-\(v)"),
            ])
        }
        let problem: JSONValue = [
            "type": "https://triad.io/problems/unknown-version",
            "title": "Pinned to a version that does not exist",
            "status": 503,
            "detail": .string("x-version pins \(s) to a version it does not have; \(s) has \(routes.versions.joined(separator: ", "))"),
            "service": .string(s),
            "versions": .array(routes.versions.map { .string($0) }),
        ]
        list.append([
            "name": .string(unknownPinRoute),
            "match": ["prefix": .string(prefix), "headers": [pinMatch(s, versionRegex: "[a-z0-9.]+")]],
            "direct_response": ["status": 503, "body": ["inline_string": .string(String(decoding: JSONCoding.encode(problem), as: UTF8.self) + "\n")]],
            "response_headers_to_add": [header("content-type", "application/problem+json")],
        ])
        list.append(defaultRoute)
        return list
    }

    /// A route to a version's cluster. A 307 from a blocked version is followed inside the
    /// caller's sidecar: a new stream that re-selects the route against the current table
    /// (`retry_policy` would stay on the same cluster: it never re-selects the route).
    static func routeAction(_ cluster: String) -> JSONValue {
        [
            "cluster": .string(cluster), "timeout": "0s",
            "internal_redirect_policy": ["redirect_response_codes": [307], "max_internal_redirects": 2],
        ]
    }

    public static func inboundRoutes(_ instance: MeshPlan.Instance, blocked: Bool = false) -> JSONValue {
        // The marker is answered by the sidecar itself: its record follows, in the same ordered
        // stream, every admission this sidecar logged before it (the lock of the trace set).
        var routes: [JSONValue] = [["name": .string(markerRoute), "match": ["path": .string(markerPath)], "direct_response": ["status": 204]]]
        if blocked {
            // Only requests pinned to this version get in.
            routes.append([
                "name": .string("local:\(instance.pin)"),
                "match": ["prefix": "/", "headers": [pinMatch(instance.service, versionRegex: escape(instance.version))]],
                "route": ["cluster": "local", "timeout": "0s"],
            ])
            routes.append([
                "name": .string(blockedRoute), "match": ["prefix": "/"],
                "redirect": ["response_code": "TEMPORARY_REDIRECT"],
            ])
        } else {
            routes.append(["name": .string("local:\(instance.pin)"), "match": ["prefix": "/"], "route": ["cluster": "local", "timeout": "0s"]])
        }
        return [
            "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            "name": .string(EnvoyFile.RouteTable.inbound.configName),
            "virtual_hosts": [
                [
                    "name": "local", "domains": ["*"],
                    "routes": .array(routes),
                    // The sidecar knows the version it serves: every response says it.
                    "response_headers_to_add": [header("x-version", instance.pin)],
                ]
            ],
        ]
    }

    /// `(.*,)?\s*auth-v1\s*(,.*)?`: a whole token of the comma-separated header, so auth-v10 is not auth-v1.
    static func pinMatch(_ service: String, versionRegex: String) -> JSONValue {
        ["name": "x-version", "string_match": ["safe_regex": ["regex": .string("(.*,)?\\s*\(service)-\(versionRegex)\\s*(,.*)?")]]]
    }

    static func escape(_ version: String) -> String { version.replacingOccurrences(of: ".", with: "\\.") }

    static func versionClusters(_ routes: ServiceRoutes, plan: MeshPlan, maxInFlight: Int? = nil) -> [JSONValue] {
        routes.versions.map { v in
            let endpoints = plan.instances(of: routes.service, version: v).map { HostPort(host: "127.0.0.1", port: $0.sidecar.inboundPort) }
            return cluster("\(routes.service)-\(v)", endpoints: endpoints, maxInFlight: maxInFlight)
        }
    }

    /// `maxInFlight`: Envoy's circuit breakers. Over HTTP/1.1 a request holds a connection, so
    /// at most that many connections (requests in progress) and as many requests waiting for
    /// one (a bounded queue: a request arriving while a connection is being made waits there);
    /// past them Envoy answers 503 at once with `x-envoy-overloaded: true`.
    static func cluster(_ name: String, endpoints: [HostPort], maxInFlight: Int? = nil) -> JSONValue {
        let literal = endpoints.allSatisfy { $0.host.allSatisfy { $0.isNumber || $0 == "." || $0 == ":" } }
        var cluster: [String: JSONValue] = [
            "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": .string(name),
            "type": literal ? "STATIC" : "STRICT_DNS",
            "connect_timeout": "1s",
            "load_assignment": [
                "cluster_name": .string(name),
                "endpoints": [["lb_endpoints": .array(endpoints.map { ["endpoint": ["address": socketAddress($0.host, $0.port)]] })]],
            ],
        ]
        if let maxInFlight {
            let n = JSONValue.int(maxInFlight)
            cluster["circuit_breakers"] = [
                "thresholds": [["priority": "DEFAULT", "max_connections": n, "max_pending_requests": n, "max_requests": n]]
            ]
        }
        return .object(cluster)
    }

    static func pipeCluster(_ name: String, path: String) -> JSONValue {
        [
            // A control process starved by a busy machine accepts late; a connect that gives up
            // early fails the request (an authz check is not retried: http_service.retry_policy
            // made Envoy 1.40 fail BF's long-held checks with 503s, seen in the upgrade test).
            "name": .string(name), "type": "STATIC", "connect_timeout": "2s",
            "load_assignment": [
                "cluster_name": .string(name), "endpoints": [["lb_endpoints": [["endpoint": ["address": ["pipe": ["path": .string(path)]]]]]]],
            ],
        ]
    }

    static func listener(_ name: String, host: String = "127.0.0.1", port: Int, hcm: JSONValue) -> JSONValue {
        [
            "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
            "name": .string(name),
            "address": socketAddress(host, port),
            "filter_chains": [["filters": [["name": "envoy.filters.network.http_connection_manager", "typed_config": hcm]]]],
            // Envoy binds with SO_REUSEPORT by default: a second mesh on the same port would
            // silently share the traffic. Without it the bind fails and mesh up says so.
            "enable_reuse_port": false,
        ]
    }

    /// The benchmark's baseline (MeshPlan.plainEnvoy): the same listeners and routes, nothing
    /// shipped to the trace managers.
    static func withoutRecording(_ hcm: JSONValue, _ plan: MeshPlan) -> JSONValue {
        guard plan.plainEnvoy, case .object(var h) = hcm else { return hcm }
        h["access_log"] = nil
        h["access_log_options"] = nil
        return .object(h)
    }

    static func rds(_ table: EnvoyFile.RouteTable, cfg: String) -> JSONValue {
        [
            "route_config_name": .string(table.configName),
            "config_source": [
                "path_config_source": ["path": .string("\(cfg)/\(EnvoyFile.routes(table).name)"), "watched_directory": ["path": .string(cfg)]],
                "resource_api_version": "V3",
            ],
        ]
    }

    static func socketAddress(_ host: String, _ port: Int) -> JSONValue {
        ["socket_address": ["address": .string(host), "port_value": .int(port)]]
    }

    static func header(_ key: String, _ value: String) -> JSONValue {
        ["header": ["key": .string(key), "value": .string(value)], "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"]
    }

    static func resources(_ items: [JSONValue]) -> JSONValue { ["resources": .array(items)] }

    static func withVirtualHostField(_ table: JSONValue, _ key: String, _ value: JSONValue) -> JSONValue {
        guard case .object(var t) = table, case .array(var hosts)? = t["virtual_hosts"], case .object(var host)? = hosts.first else { return table }
        host[key] = value
        hosts[0] = .object(host)
        t["virtual_hosts"] = .array(hosts)
        return .object(t)
    }

    /// The access loggers' flush timer (see `fluentd`).
    static let flushInterval = "1s"

    static func fluentd(tag: String, record: JSONValue, filter: JSONValue? = nil) -> JSONValue {
        var logger: [String: JSONValue] = [
            "name": "envoy.access_loggers.fluentd",
            "typed_config": [
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.fluentd.v3.FluentdAccessLogConfig",
                "cluster": .string(logCluster), "tag": .string(tag), "stat_prefix": "triad_log",
                // 1 byte = send each entry at once (0 loses every entry in Envoy 1.40: `entries_lost`).
                // The flush timer then has nothing to send, but it fires every interval whether
                // or not anything was logged: at 1 ms it cost each idle Envoy 2 % of a core.
                "buffer_size_bytes": 1, "buffer_flush_interval": .string(flushInterval),
                "record": record,
            ],
        ]
        if let filter { logger["filter"] = filter }
        return .object(logger)
    }

    /// How long BF may hold a request in the authz check (the hold gives up a little earlier).
    public static let authzTimeout = "30s"

    static func authzFilter(pathPrefix: String) -> JSONValue {
        [
            "name": "envoy.filters.http.ext_authz",
            "typed_config": [
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                "transport_api_version": "V3",
                "failure_mode_allow": false,
                "status_on_error": ["code": 503],
                // Without it the injected pin would not change the route (Envoy keeps the cached one).
                "clear_route_cache": true,
                "allowed_headers": ["patterns": [["exact": "x-b3-traceid"], ["exact": "x-version"]]],
                "http_service": [
                    // Long enough for BF to hold an unpinned request until the old version is free.
                    "server_uri": ["uri": "http://triad-authz", "cluster": .string(authzCluster), "timeout": .string(authzTimeout)],
                    "path_prefix": .string(pathPrefix),
                    "authorization_response": [
                        "allowed_upstream_headers": ["patterns": [["exact": "x-version"]]],
                        "allowed_client_headers": ["patterns": [["exact": "content-type"]]],
                    ],
                ],
            ],
        ]
    }

    /// Turns the pin check off for a route table (ServiceRoutes.pinsMatter).
    static let skipPinCheck: JSONValue = [
        "envoy.filters.http.ext_authz": ["@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute", "disabled": true]
    ]

    /// An authz deny is a 403 (a 5xx would lose the body); the client sees 503 with the problem.
    static let denyAs503: JSONValue = ["mappers": [["filter": ["response_flag_filter": ["flags": ["UAEX"]]], "status_code": 503]]]

    static let router: JSONValue = [
        "name": "envoy.filters.http.router",
        "typed_config": ["@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"],
    ]

    /// The gateway gives a request without a trace id one: the W3C traceparent's, else the
    /// x-request-id Envoy generated (a UUID, as 32 hex digits).
    static let luaTraceID: JSONValue = [
        "name": "envoy.filters.http.lua",
        "typed_config": [
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": [
                "inline_string": """
                function envoy_on_request(h)
                  local hs = h:headers()
                  local t = hs:get("x-b3-traceid")
                  if t ~= nil and t ~= "" then return end
                  local id = nil
                  local tp = hs:get("traceparent")
                  if tp ~= nil then id = string.match(tp, "^%x%x%-(%x+)%-%x+%-%x%x$") end
                  if id == nil or string.match(id, "^0+$") then
                    id = (string.gsub(hs:get("x-request-id") or "", "[^%x]", ""))
                  end
                  if id ~= "" then hs:replace("x-b3-traceid", string.lower(id)) end
                end
                """
            ],
        ],
    ]
}
