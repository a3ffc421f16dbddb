import Foundation
import Synchronization
import TriadCore

/// The routes in force: shared by the authz checks (request path) and the control API.
public final class RouteState: Sendable {
    private let routes: Mutex<[ServiceRoutes]>
    public init(_ routes: [ServiceRoutes]) { self.routes = Mutex(routes) }
    public var current: [ServiceRoutes] { routes.withLock { $0 } }
    public func update(_ body: (inout [ServiceRoutes]) throws -> Void) rethrows { try routes.withLock { try body(&$0) } }
    public func routes(of service: String) -> ServiceRoutes? { routes.withLock { r in r.first { $0.service == service } } }
}

/// Answers Envoy's ext_authz checks for `pinPropagation: mesh`: attaches to a request the pin
/// its trace earned for the service it is about to reach, and (at the gateway) refuses pins to
/// versions that do not exist. Never sees request bodies.
public struct PinAuthority: Sendable {
    public enum Decision: Sendable, Equatable {
        /// Let the request through; with a new `x-version` value when it changed.
        case allow(xVersion: String?)
        /// Refuse with a problem document (Envoy turns the 403 into 503, see EnvoyConfig.denyAs503).
        case deny(problem: JSONValue)
    }

    let recorder: MeshRecorder
    let routes: RouteState

    public init(recorder: MeshRecorder, routes: RouteState) {
        self.recorder = recorder
        self.routes = routes
    }

    /// `path` is `/check/gw/<service>/…` (the gateway) or `/check/out/<service>/…` (a sidecar
    /// calling `<service>`).
    public func decide(path: String, trace rawTrace: String?, xVersion: String?) -> Decision {
        let parts = path.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: true)
        guard parts.count >= 3, parts[0] == "check" else { return .allow(xVersion: nil) }
        let atGateway = parts[1] == "gw"
        let target = String(parts[2])
        let trace = MeshRecorder.normalize(rawTrace)
        var tokens = (xVersion ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var pinnedServices = Set<String>()
        let table = routes.current
        for token in tokens {
            guard let dash = token.lastIndex(of: "-") else { continue }
            let service = String(token[..<dash]), version = String(token[token.index(after: dash)...])
            guard let r = table.first(where: { $0.service == service }) else { continue }  // not ours: left alone
            pinnedServices.insert(service)
            if atGateway {
                guard r.versions.contains(version) else {
                    recorder.countUnknownPinRefusal()
                    return .deny(problem: Self.unknownVersion(service: service, version: version, versions: r.versions))
                }
                if let trace { recorder.learnExplicit(trace: trace, service: service, version: version) }
            }
        }
        guard !pinnedServices.contains(target), let trace, let version = recorder.pin(trace: trace, service: target) else {
            return .allow(xVersion: nil)
        }
        tokens.append("\(target)-\(version)")
        return .allow(xVersion: tokens.joined(separator: ","))
    }

    static func unknownVersion(service: String, version: String, versions: [String]) -> JSONValue {
        [
            "type": "https://triad.io/problems/unknown-version",
            "title": "Pinned to a version that does not exist",
            "status": 503,
            "detail": .string("x-version pins \(service) to \(version), which it does not have; \(service) has \(versions.joined(separator: ", "))"),
            "service": .string(service),
            "versions": .array(versions.map { .string($0) }),
        ]
    }
}
