import Foundation
import TriadCore

/// The mesh file (`triad mesh up -f mesh.yaml`; docs/mesh.md, schemas/mesh.schema.json), validated.
public struct MeshConfig: Sendable, Equatable {
    public enum PinPropagation: String, Sendable, Equatable, Codable {
        /// The sidecars carry pins from earlier visits of a trace to its later requests.
        case mesh
        /// The applications copy `x-version` themselves; the mesh only routes by it.
        case application
    }

    public struct Gateway: Sendable, Equatable {
        /// Requests whose path starts with `prefix` go to `service` instead of the gateway's own
        /// (e.g. each agent of a project under `/agents/<name>/`).
        public struct Route: Sendable, Equatable, Codable {
            public var prefix: String
            public var service: String
            public init(prefix: String, service: String) {
                self.prefix = prefix
                self.service = service
            }
        }
        public var listen: HostPort
        public var service: String
        public var routes: [Route] = []
        /// At most this many requests in progress at each version the gateway routes to, and as
        /// many waiting for one of them; beyond that the gateway answers 503 at once
        /// (`x-envoy-overloaded: true`) rather than queue requests into a time-out. nil: Envoy's
        /// own limits (1024).
        public var maxInFlight: Int?

        public init(listen: HostPort, service: String, routes: [Route] = [], maxInFlight: Int? = nil) {
            self.listen = listen
            self.service = service
            self.routes = routes
            self.maxInFlight = maxInFlight
        }

        public static let maxInFlightLimit = ProjectManifest.Mesh.maxInFlightLimit

        /// The service a request for `path` enters: the longest matching route's, else the gateway's own.
        public func service(forPath path: String) -> String {
            routes.filter { path.hasPrefix($0.prefix) }.max { $0.prefix.count < $1.prefix.count }?.service ?? service
        }
    }

    public struct Service: Sendable, Equatable {
        public var name: String
        public var defaultVersion: String
        public var versions: [Version]

        public func version(_ name: String) -> Version? { versions.first { $0.version == name } }
    }

    public struct Version: Sendable, Equatable {
        public enum Source: Sendable, Equatable {
            /// Program and arguments, run without a shell in the mesh file's directory.
            case command([String])
            /// An instance that is already running.
            case upstream(HostPort)
        }
        public var version: String
        public var source: Source
        public var health: String
        public var replicas: Int

        public init(version: String, source: Source, health: String = "/healthz", replicas: Int = 1) {
            self.version = version
            self.source = source
            self.health = health
            self.replicas = replicas
        }
    }

    public var name: String
    public var gateway: Gateway
    public var pinPropagation: PinPropagation
    public var services: [Service]
    /// Where `command`s run: the directory of the mesh file.
    public var baseDirectory: String
    /// Not in the mesh file: `mesh up --plain-envoy` runs the same topology on Envoy's routing
    /// alone (no trace managers, pin checks or audit; upgrades refused), the baseline the
    /// benchmark measures the mesh against.
    public var plainEnvoy = false

    public func service(_ name: String) -> Service? { services.first { $0.name == name } }
}

public struct HostPort: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
    /// Parses `HOST:PORT` (`[v6]:PORT` for IPv6); nil when it is not one.
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, !host.contains(" ") else { return nil }
        self.host = host
        self.port = port
    }
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Why a mesh file was refused: every problem, each at a path such as `spec.services[1].default`.
public struct MeshConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public var path: String
        public var message: String
        public var description: String { path.isEmpty ? message : "\(path): \(message)" }
    }
    public var file: String
    public var problems: [Problem]
    public var description: String {
        let head = "invalid mesh file \(file)"
        if problems.count == 1 { return "\(head): \(problems[0])" }
        return ([head + ":"] + problems.map { "  - \($0)" }).joined(separator: "\n")
    }
}
