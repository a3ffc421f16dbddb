import Foundation
import TriadCore
import Yams

/// The CV upgrade as Istio documents, step by step (docs/mesh.md), for running the same
/// procedure in a cluster (deploy/istio/README.md).
/// Pure: no I/O. The documents assume the applications propagate `x-version` next to
/// `x-b3-traceid` (as with `pinPropagation: application`).
public enum IstioRender {
    public struct Options: Sendable, Equatable {
        public var service: String
        public var from: String
        public var to: String
        public var namespace: String
        /// The service port the VirtualService's host listens on (the vhost name of the callers' routes).
        public var port: Int
        /// Where the trace managers receive the access-log stream (fluentd Forward over TCP).
        public var traceManager: String
        public init(
            service: String, from: String, to: String, namespace: String = "default", port: Int = 8080,
            traceManager: String = "triad-trace-manager.triad-system.svc.cluster.local:24224"
        ) {
            self.service = service
            self.from = from
            self.to = to
            self.namespace = namespace
            self.port = port
            self.traceManager = traceManager
        }
    }

    public struct Step: Sendable, Equatable {
        public var name: String
        public var comment: [String]
        public var documents: [Node]
        /// Documents to delete at this step (kind/name).
        public var delete: [String]
    }

    /// A YAML node whose maps keep their order (Kubernetes readers expect apiVersion, kind, metadata, spec).
    public indirect enum Node: Sendable, Equatable {
        case map([(String, Node)])
        case list([Node])
        case string(String)
        case int(Int)
        case bool(Bool)

        public static func == (a: Node, b: Node) -> Bool { a.yaml == b.yaml }
    }

    public static func steps(_ o: Options) -> [Step] {
        let s = o.service
        return [
            Step(
                name: "initial",
                comment: [
                    "The shape before the upgrade (figures 10 and 11): every request to \(s) goes to \(o.from), and",
                    "each response says so in x-version. The trace managers' access logs are in place.",
                ],
                documents: [
                    virtualService(o, versions: [o.from], defaultVersion: o.from), destinationRule(o, versions: [o.from]),
                    traceRecording(o), gatewayRecording(o),
                ], delete: []),
            Step(
                name: "started",
                comment: [
                    "Deploy \(s) \(o.to) (pods labelled version: \(o.to)) and wait until it is ready. Then add its subset",
                    "(figure 15), the pin routes with the default still \(o.from) (figure 14), and let callers' sidecars",
                    "follow a blocked version's 307 internally. Wait until every caller's sidecar has the routes",
                    "(istioctl proxy-status: SYNCED) before the next step.",
                ],
                documents: [
                    destinationRule(o, versions: [o.from, o.to]), virtualService(o, versions: [o.from, o.to], defaultVersion: o.from),
                    internalRedirect(o),
                ], delete: []),
            Step(
                name: "default-switched",
                comment: [
                    "Switch the default to \(o.to) (figure 17). Pinned requests keep their version. Wait for SYNCED."
                ], documents: [virtualService(o, versions: [o.from, o.to], defaultVersion: o.to)], delete: []),
            Step(
                name: "blocked",
                comment: [
                    "Block unpinned requests at \(s) \(o.from): its inbound sidecar answers 307 to the same URL, which the",
                    "caller's sidecar follows with a fresh route choice, landing on \(o.to). The application never sees it.",
                    "Wait until every \(o.from) sidecar has it (SYNCED) before the lock.",
                ], documents: [block(o)], delete: []),
            Step(
                name: "locked",
                comment: [
                    "Lock \(o.from)'s trace sets after the trace manager read a marker sent through each \(o.from) sidecar",
                    "(GET \(EnvoyConfig.markerPath) with x-b3-traceid: triad-marker-<n>), ship them to the gateway's trace",
                    "manager; DiffSet = served - completed. No documents: this is the trace managers' API.",
                ], documents: [], delete: []),
            Step(
                name: "retired",
                comment: [
                    "When DiffSet is empty, delete \(s) \(o.from)'s Deployment and the block."
                ], documents: [], delete: ["Deployment/\(s)-\(o.from)", "EnvoyFilter/\(s)-\(o.from)-block"]),
            Step(
                name: "cleaned",
                comment: [
                    "Back to the initial shape with \(o.to) only (figures 22 and 23)."
                ], documents: [virtualService(o, versions: [o.to], defaultVersion: o.to), destinationRule(o, versions: [o.to])],
                delete: ["EnvoyFilter/\(s)-internal-redirect"]),
        ]
    }

    /// Every step as one YAML stream: `# step` comments, then its documents.
    public static func render(_ o: Options) -> String {
        var out = "# triad upgrade \(o.service) --to \(o.to) --strategy CV --render istio (from \(o.from), namespace \(o.namespace))\n"
        for (i, step) in steps(o).enumerated() {
            out += "---\n# step \(i): \(step.name)\n"
            for line in step.comment { out += "#   \(line)\n" }
            for d in step.delete { out += "#   kubectl delete -n \(o.namespace) \(d.lowercased())\n" }
            for (j, doc) in step.documents.enumerated() {
                if j > 0 { out += "---\n" }
                out += doc.yaml
            }
        }
        return out
    }

    // MARK: Documents

    static func metadata(_ name: String, _ o: Options) -> Node {
        .map([("name", .string(name)), ("namespace", .string(o.namespace)), ("labels", .map([("app.kubernetes.io/managed-by", .string("triad"))]))])
    }

    static func host(_ o: Options) -> String { "\(o.service).\(o.namespace).svc.cluster.local" }

    static func pinRegex(_ service: String, _ version: String) -> String {
        "(.*,)?\\s*\(service)-\(version.replacingOccurrences(of: ".", with: "\\."))\\s*(,.*)?"
    }

    static func route(_ o: Options, _ version: String) -> Node {
        .map([
            ("destination", .map([("host", .string(host(o))), ("subset", .string(version))]))
        ])
    }

    static func responseHeader(_ o: Options, _ version: String) -> Node {
        .map([("response", .map([("add", .map([("x-version", .string("\(o.service)-\(version)"))]))]))])
    }

    /// Figures 10, 14, 17, 22: one pin route per version, then the default.
    static func virtualService(_ o: Options, versions: [String], defaultVersion: String) -> Node {
        var http: [Node] = []
        if versions.count > 1 {
            for v in versions {
                http.append(
                    .map([
                        ("name", .string("pin-\(v)")),
                        ("match", .list([.map([("headers", .map([("x-version", .map([("regex", .string(pinRegex(o.service, v)))]))]))])])),
                        ("route", .list([route(o, v)])),
                        ("headers", responseHeader(o, v)),
                    ]))
            }
        }
        http.append(
            .map([
                ("name", .string("default")),
                ("route", .list([route(o, defaultVersion)])),
                ("headers", responseHeader(o, defaultVersion)),
            ]))
        return .map([
            ("apiVersion", .string("networking.istio.io/v1")),
            ("kind", .string("VirtualService")),
            ("metadata", metadata(o.service, o)),
            ("spec", .map([("hosts", .list([.string(o.service)])), ("http", .list(http))])),
        ])
    }

    /// Figures 11, 15, 23: a subset per version, by pod label.
    static func destinationRule(_ o: Options, versions: [String]) -> Node {
        .map([
            ("apiVersion", .string("networking.istio.io/v1")),
            ("kind", .string("DestinationRule")),
            ("metadata", metadata(o.service, o)),
            (
                "spec",
                .map([
                    ("host", .string(host(o))),
                    ("subsets", .list(versions.map { v in .map([("name", .string(v)), ("labels", .map([("version", .string(v))]))]) })),
                ])
            ),
        ])
    }

    /// The trace managers: every sidecar of the service logs each request when it is admitted
    /// (not only when it ends) to the trace manager, over fluentd.
    static func traceRecording(_ o: Options) -> Node {
        .map([
            ("apiVersion", .string("networking.istio.io/v1alpha3")),
            ("kind", .string("EnvoyFilter")),
            ("metadata", metadata("\(o.service)-trace-recording", o)),
            (
                "spec",
                .map([
                    ("workloadSelector", .map([("labels", .map([("app", .string(o.service))]))])),
                    (
                        "configPatches",
                        .list([
                            .map([
                                ("applyTo", .string("NETWORK_FILTER")),
                                (
                                    "match",
                                    .map([
                                        ("context", .string("SIDECAR_INBOUND")),
                                        (
                                            "listener",
                                            .map([
                                                ("filterChain", .map([("filter", .map([("name", .string("envoy.filters.network.http_connection_manager"))]))]))
                                            ])
                                        ),
                                    ])
                                ),
                                (
                                    "patch",
                                    .map([
                                        ("operation", .string("MERGE")),
                                        (
                                            "value",
                                            .map([
                                                (
                                                    "typed_config",
                                                    .map([
                                                        (
                                                            "@type",
                                                            .string(
                                                                "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
                                                            )
                                                        ),
                                                        ("access_log_options", .map([("flush_access_log_on_new_request", .bool(true))])),
                                                        (
                                                            "access_log",
                                                            .list([
                                                                fluentd(
                                                                    o, tag: "in",
                                                                    record: [
                                                                        ("t", "%REQ(X-B3-TRACEID)%"), ("k", "%ACCESS_LOG_TYPE%"), ("s", "%START_TIME(%s.%6f)%"),
                                                                        ("d", "%DURATION%"), ("c", "%RESPONSE_CODE%"), ("r", "%ROUTE_NAME%"),
                                                                        ("p", "%REQ(:PATH)%"),
                                                                    ])
                                                            ])
                                                        ),
                                                    ])
                                                )
                                            ])
                                        ),
                                    ])
                                ),
                            ]),
                            .map([
                                // The marker the trace manager waits for before it locks a trace set.
                                ("applyTo", .string("HTTP_ROUTE")),
                                (
                                    "match",
                                    .map([
                                        ("context", .string("SIDECAR_INBOUND")),
                                        ("routeConfiguration", .map([("vhost", .map([("name", .string("inbound|http|\(o.port)"))]))])),
                                    ])
                                ),
                                (
                                    "patch",
                                    .map([
                                        ("operation", .string("INSERT_FIRST")),
                                        (
                                            "value",
                                            .map([
                                                ("name", .string("triad-marker")),
                                                ("match", .map([("path", .string(EnvoyConfig.markerPath))])),
                                                ("direct_response", .map([("status", .int(204))])),
                                            ])
                                        ),
                                    ])
                                ),
                            ]),
                        ])
                    ),
                ])
            ),
        ])
    }

    /// The gateway's trace manager: the transactions that completed.
    static func gatewayRecording(_ o: Options) -> Node {
        .map([
            ("apiVersion", .string("networking.istio.io/v1alpha3")),
            ("kind", .string("EnvoyFilter")),
            (
                "metadata",
                .map([
                    ("name", .string("triad-gateway-recording")), ("namespace", .string("istio-system")),
                    ("labels", .map([("app.kubernetes.io/managed-by", .string("triad"))])),
                ])
            ),
            (
                "spec",
                .map([
                    ("workloadSelector", .map([("labels", .map([("istio", .string("ingressgateway"))]))])),
                    (
                        "configPatches",
                        .list([
                            .map([
                                ("applyTo", .string("NETWORK_FILTER")),
                                (
                                    "match",
                                    .map([
                                        ("context", .string("GATEWAY")),
                                        (
                                            "listener",
                                            .map([
                                                ("filterChain", .map([("filter", .map([("name", .string("envoy.filters.network.http_connection_manager"))]))]))
                                            ])
                                        ),
                                    ])
                                ),
                                (
                                    "patch",
                                    .map([
                                        ("operation", .string("MERGE")),
                                        (
                                            "value",
                                            .map([
                                                (
                                                    "typed_config",
                                                    .map([
                                                        (
                                                            "@type",
                                                            .string(
                                                                "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
                                                            )
                                                        ),
                                                        (
                                                            "access_log",
                                                            .list([
                                                                fluentd(
                                                                    o, tag: "gw",
                                                                    record: [
                                                                        ("t", "%REQ(X-B3-TRACEID)%"), ("s", "%START_TIME(%s.%6f)%"), ("d", "%DURATION%"),
                                                                        ("c", "%RESPONSE_CODE%"),
                                                                    ])
                                                            ])
                                                        ),
                                                    ])
                                                )
                                            ])
                                        ),
                                    ])
                                ),
                            ])
                        ])
                    ),
                ])
            ),
        ])
    }

    static func fluentd(_ o: Options, tag: String, record: [(String, String)]) -> Node {
        .map([
            ("name", .string("envoy.access_loggers.fluentd")),
            (
                "typed_config",
                .map([
                    ("@type", .string("type.googleapis.com/envoy.extensions.access_loggers.fluentd.v3.FluentdAccessLogConfig")),
                    (
                        "cluster",
                        .string("outbound|\(o.traceManager.split(separator: ":").last ?? "24224")||\(o.traceManager.split(separator: ":").first ?? "")")
                    ),
                    ("tag", .string(tag)),
                    ("stat_prefix", .string("triad_log")),
                    ("buffer_size_bytes", .int(1)),
                    ("buffer_flush_interval", .string(EnvoyConfig.flushInterval)),
                    ("record", .map(record.map { ($0.0, .string($0.1)) })),
                ])
            ),
        ])
    }

    /// Callers' sidecars follow a 307 from a blocked version inside Envoy: a new stream that
    /// chooses the route again (retry_policy would stay on the old subset: it never re-selects the route).
    static func internalRedirect(_ o: Options) -> Node {
        .map([
            ("apiVersion", .string("networking.istio.io/v1alpha3")),
            ("kind", .string("EnvoyFilter")),
            ("metadata", metadata("\(o.service)-internal-redirect", o)),
            (
                "spec",
                .map([
                    (
                        "configPatches",
                        .list([
                            .map([
                                ("applyTo", .string("HTTP_ROUTE")),
                                (
                                    "match",
                                    .map([
                                        ("context", .string("SIDECAR_OUTBOUND")),
                                        ("routeConfiguration", .map([("vhost", .map([("name", .string("\(host(o)):\(o.port)"))]))])),
                                    ])
                                ),
                                (
                                    "patch",
                                    .map([
                                        ("operation", .string("MERGE")),
                                        (
                                            "value",
                                            .map([
                                                (
                                                    "route",
                                                    .map([
                                                        (
                                                            "internal_redirect_policy",
                                                            .map([("redirect_response_codes", .list([.int(307)])), ("max_internal_redirects", .int(2))])
                                                        )
                                                    ])
                                                )
                                            ])
                                        ),
                                    ])
                                ),
                            ])
                        ])
                    )
                ])
            ),
        ])
    }

    /// The block at the old version's inbound sidecars: a route before the others sends a
    /// request that does not carry the old version's pin a 307 to its own URL. Its route name
    /// tells the trace manager the request was refused, not admitted (the start record names it).
    static func block(_ o: Options) -> Node {
        .map([
            ("apiVersion", .string("networking.istio.io/v1alpha3")),
            ("kind", .string("EnvoyFilter")),
            ("metadata", metadata("\(o.service)-\(o.from)-block", o)),
            (
                "spec",
                .map([
                    ("workloadSelector", .map([("labels", .map([("app", .string(o.service)), ("version", .string(o.from))]))])),
                    (
                        "configPatches",
                        .list([
                            .map([
                                ("applyTo", .string("HTTP_ROUTE")),
                                (
                                    "match",
                                    .map([
                                        ("context", .string("SIDECAR_INBOUND")),
                                        ("routeConfiguration", .map([("vhost", .map([("name", .string("inbound|http|\(o.port)"))]))])),
                                    ])
                                ),
                                (
                                    "patch",
                                    .map([
                                        ("operation", .string("INSERT_FIRST")),
                                        (
                                            "value",
                                            .map([
                                                ("name", .string(EnvoyConfig.blockedRoute)),
                                                (
                                                    "match",
                                                    .map([
                                                        ("prefix", .string("/")),
                                                        (
                                                            "headers",
                                                            .list([
                                                                .map([
                                                                    ("name", .string("x-version")),
                                                                    (
                                                                        "string_match",
                                                                        .map([("safe_regex", .map([("regex", .string(pinRegex(o.service, o.from)))]))])
                                                                    ),
                                                                    ("invert_match", .bool(true)),
                                                                    ("treat_missing_header_as_empty", .bool(true)),
                                                                ])
                                                            ])
                                                        ),
                                                    ])
                                                ),
                                                ("redirect", .map([("response_code", .string("TEMPORARY_REDIRECT"))])),
                                            ])
                                        ),
                                    ])
                                ),
                            ])
                        ])
                    ),
                ])
            ),
        ])
    }
}

extension IstioRender.Node {
    /// Block-style YAML written by Yams, maps in their order (Kubernetes readers expect apiVersion,
    /// kind, metadata, spec), multi-line strings (Lua) as literal blocks.
    public var yaml: String {
        do {
            return try Yams.serialize(node: yamlNode, indent: 2, width: -1, allowUnicode: true)
        } catch {
            // Never seen: these nodes are strings, numbers and booleans; but never silently empty.
            return "# the YAML emitter refused this document: \(error)\n"
        }
    }

    var yamlNode: Yams.Node {
        switch self {
        case .map(let pairs): Yams.Node(pairs.map { (DocumentWriter.string($0.0), $0.1.yamlNode) })
        case .list(let items): Yams.Node(items.map(\.yamlNode))
        case .string(let s) where s.contains("\n"): Yams.Node(s, Tag(.str), .literal)
        case .string(let s): DocumentWriter.string(s)
        case .int(let i): Yams.Node(String(i), Tag(.int))
        case .bool(let b): Yams.Node(b ? "true" : "false", Tag(.bool))
        }
    }
}
