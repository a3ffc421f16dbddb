import Foundation

/// Which versions of a service exist and which one takes unpinned requests. The update
/// controller changes these; the Envoy route tables are rendered from them.
public struct ServiceRoutes: Sendable, Equatable, Codable {
    public var service: String
    public var versions: [String]
    public var defaultVersion: String
    /// Versions whose inbound sidecars refuse requests not pinned to them (CV's block step):
    /// the refusal is a 307 to the same URL, which the caller's sidecar follows internally
    /// and so re-selects the route, landing on the new default (a retry would stay on the same cluster).
    public var blocked: [String]
    /// false while a `rolling` upgrade replaces the service: one default route, pins ignored
    /// (the baseline without any guarantee).
    public var pinRoutes: Bool

    /// Whether a pin can change where a call to this service goes: only while it has more than
    /// one version (an upgrade). Otherwise the sidecars skip the pin check: the records that
    /// teach pins flow all the same, and an upgrade turns the check on (and waits until every
    /// caller applied it) before any second version takes requests.
    public var pinsMatter: Bool { versions.count > 1 || !blocked.isEmpty }

    public init(service: String, versions: [String], defaultVersion: String, blocked: [String] = [], pinRoutes: Bool = true) {
        self.service = service
        self.versions = versions
        self.defaultVersion = defaultVersion
        self.blocked = blocked
        self.pinRoutes = pinRoutes
    }
}

/// Everything `mesh up` starts, with its ports: one sidecar Envoy per instance (an inbound
/// listener in front of the instance, an outbound listener per other service) and the gateway.
public struct MeshPlan: Sendable {
    public struct Sidecar: Sendable, Equatable {
        public var id: String
        public var adminPort: Int
        public var inboundPort: Int
        /// Outbound listener per other service: the instance's TRIAD_UPSTREAM_<S> points here.
        public var outboundPorts: [String: Int]
    }

    public struct Instance: Sendable, Equatable {
        /// `<service>-<version>-<replica>`, e.g. auth-v1-0.
        public var id: String
        public var service: String
        public var version: String
        public var app: HostPort
        /// nil for an `upstream` version: Triad starts no process, only its sidecar.
        public var command: [String]?
        public var health: String
        public var sidecar: Sidecar
        public var pin: String { "\(service)-\(version)" }
    }

    public var meshName: String
    public var pinPropagation: MeshConfig.PinPropagation
    /// Routing only: no access-log stream to the trace managers, no pin checks (MeshConfig.plainEnvoy).
    public var plainEnvoy: Bool
    /// Whether Envoy asks the control process for pins on every request.
    public var checksPins: Bool { pinPropagation == .mesh && !plainEnvoy }
    public var instances: [Instance]
    public var gatewayListen: HostPort
    public var gatewayService: String
    /// Paths the gateway sends to other services than its own (MeshConfig.Gateway.routes).
    public var gatewayRoutes: [MeshConfig.Gateway.Route] = []
    /// MeshConfig.Gateway.maxInFlight: the gateway's limit per version cluster.
    public var gatewayMaxInFlight: Int?
    public var gatewayAdminPort: Int
    public var routes: [ServiceRoutes]
    public var baseDirectory: String
    /// Envoy configuration and logs (one directory per Envoy).
    public var runDirectory: String
    /// Unix sockets (short path: sun_path holds 107 bytes): the access-log stream and authz.
    public var socketDirectory: String

    public var logSocket: String { socketDirectory + "/log.sock" }
    public var authzSocket: String { socketDirectory + "/authz.sock" }
    public var serviceNames: [String] { routes.map(\.service) }
    /// Every service the gateway routes to: its own, then its routes' (each once).
    public var gatewayServices: [String] {
        var all = [gatewayService]
        for r in gatewayRoutes where !all.contains(r.service) { all.append(r.service) }
        return all
    }

    public func routes(of service: String) -> ServiceRoutes? { routes.first { $0.service == service } }
    public func instances(of service: String, version: String) -> [Instance] {
        instances.filter { $0.service == service && $0.version == version }
    }

    /// `TRIAD_UPSTREAM_<S>` (upper case, `-` → `_`), docs/mesh.md.
    public static func upstreamVariable(_ service: String) -> String {
        "TRIAD_UPSTREAM_" + service.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    /// The environment of an instance: where to listen and how to reach every other service.
    public func environment(of instance: Instance) -> [String: String] {
        var env = ["PORT": String(instance.app.port)]
        for (service, port) in instance.sidecar.outboundPorts {
            env[Self.upstreamVariable(service)] = "http://127.0.0.1:\(port)"
        }
        return env
    }

    /// Builds the plan; `freePort` hands out a loopback port that is free now.
    public static func make(
        _ config: MeshConfig, runDirectory: String, socketDirectory: String, freePort: () throws -> Int
    ) throws -> MeshPlan {
        var instances: [Instance] = []
        for service in config.services {
            let others = config.services.map(\.name).filter { $0 != service.name }
            for version in service.versions {
                for replica in 0..<version.replicas {
                    let id = "\(service.name)-\(version.version)-\(replica)"
                    var outbound: [String: Int] = [:]
                    for other in others { outbound[other] = try freePort() }
                    let sidecar = Sidecar(id: id, adminPort: try freePort(), inboundPort: try freePort(), outboundPorts: outbound)
                    switch version.source {
                    case .command(let argv):
                        instances.append(
                            Instance(
                                id: id, service: service.name, version: version.version,
                                app: HostPort(host: "127.0.0.1", port: try freePort()), command: argv,
                                health: version.health, sidecar: sidecar))
                    case .upstream(let hp):
                        instances.append(
                            Instance(
                                id: id, service: service.name, version: version.version, app: hp,
                                command: nil, health: version.health, sidecar: sidecar))
                    }
                }
            }
        }
        return MeshPlan(
            meshName: config.name, pinPropagation: config.pinPropagation, plainEnvoy: config.plainEnvoy, instances: instances,
            gatewayListen: config.gateway.listen, gatewayService: config.gateway.service, gatewayRoutes: config.gateway.routes,
            gatewayMaxInFlight: config.gateway.maxInFlight, gatewayAdminPort: try freePort(),
            routes: config.services.map { ServiceRoutes(service: $0.name, versions: $0.versions.map(\.version), defaultVersion: $0.defaultVersion) },
            baseDirectory: config.baseDirectory, runDirectory: runDirectory, socketDirectory: socketDirectory)
    }
}
