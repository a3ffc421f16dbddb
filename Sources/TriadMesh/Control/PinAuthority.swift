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

    /// BF: requests to a held service that carry no pin for it wait in the authz check until
    /// the hold is released, then go to the version the release names (nil: the default).
    private let holds = Mutex<[String: Hold]>([:])

    final class Hold: Sendable {
        let release = Mutex<String?>(nil)
        /// Fired once the hold is released (after `release` is set).
        let released = OneShot()
    }

    public func hold(_ service: String) { holds.withLock { h in if h[service] == nil { h[service] = Hold() } } }

    public func release(_ service: String, to version: String?) {
        guard let h = holds.withLock({ $0.removeValue(forKey: service) }) else { return }
        h.release.withLock { $0 = version }
        h.released.fire()
    }

    func heldGate(_ service: String) -> Hold? { holds.withLock { $0[service] } }

    /// Services being upgraded: unpinned calls to them wait for their records to be read.
    private let barriers = Mutex<[String: RecordBarrier]>([:])
    public func setBarrier(_ service: String, _ barrier: RecordBarrier?) { barriers.withLock { $0[service] = barrier } }
    func barrier(_ service: String) -> RecordBarrier? { barriers.withLock { $0[service] } }
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
        /// BF: wait for the hold on the target to be released, then decide again.
        case hold(service: String)
    }

    let recorder: MeshRecorder
    let routes: RouteState
    /// The gateway's routes by path (MeshConfig.Gateway.routes): at the gateway, the service a
    /// request enters is chosen by its path.
    let gateway: MeshConfig.Gateway?

    public init(recorder: MeshRecorder, routes: RouteState, gateway: MeshConfig.Gateway? = nil) {
        self.recorder = recorder
        self.routes = routes
        self.gateway = gateway
    }

    /// `path` is `/check/gw/<service>/<request path>` (the gateway; the request's own path
    /// follows, as Envoy's HTTP ext_authz appends it) or `/check/out/<service>/…` (a sidecar
    /// calling `<service>`).
    /// Decides, waiting out a BF hold (at most `maxHold`, then the default route is used).
    public func decideWaiting(path: String, trace: String?, xVersion: String?, maxHold: Duration = .seconds(28)) async -> Decision {
        if let target = target(path)?.service, let barrier = routes.barrier(target), !Self.pins(xVersion).contains(target),
            trace.map({ recorder.pin(trace: MeshRecorder.normalize($0) ?? $0, service: target) == nil }) ?? false
        {
            await barrier.wait()
        }
        let first = decide(path: path, trace: trace, xVersion: xVersion)
        guard case .hold(let service) = first, let hold = routes.heldGate(service) else { return first }
        // Until the hold is released, or `maxHold` passes, or this trace's visit to the service
        // is learned while it waits (then it is no longer new and goes on to its version at
        // once: else it would wait for its own completion).
        let key = trace.flatMap { MeshRecorder.normalize($0) }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await hold.released.wait() }
            group.addTask { try? await Task.sleep(for: maxHold) }
            if let key { group.addTask { [recorder] in await recorder.waitForPin(trace: key, service: service) } }
            await group.next()
            group.cancelAll()
        }
        var to: [String: String] = [:]
        if let v = hold.release.withLock({ $0 }) { to[service] = v }
        let again = decide(path: path, trace: trace, xVersion: xVersion, releasedTo: to)
        if case .hold = again { return .allow(xVersion: nil) }
        return again
    }

    /// The service a checked request is about to reach, and whether the gateway asks.
    func target(_ path: String) -> (service: String, atGateway: Bool)? {
        let parts = path.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: true)
        guard parts.count >= 3, parts[0] == "check" else { return nil }
        guard parts[1] == "gw", let gateway, !gateway.routes.isEmpty else { return (String(parts[2]), parts[1] == "gw") }
        // The request's path as the gateway's routes saw it (what follows /check/gw/<service>).
        let prefixLength = "/check/gw/".count + parts[2].count
        return (gateway.service(forPath: String(path.dropFirst(prefixLength))), true)
    }

    /// The services an x-version value pins.
    static func pins(_ xVersion: String?) -> Set<String> {
        Set(
            (xVersion ?? "").split(separator: ",").compactMap { token -> String? in
                let t = token.trimmingCharacters(in: .whitespaces)
                guard let dash = t.lastIndex(of: "-") else { return nil }
                return String(t[..<dash])
            })
    }

    public func decide(path: String, trace rawTrace: String?, xVersion: String?, releasedTo: [String: String] = [:]) -> Decision {
        guard let (target, atGateway) = target(path) else { return .allow(xVersion: nil) }
        let trace = MeshRecorder.normalize(rawTrace)
        var tokens = (xVersion ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var pinnedServices = Set<String>()
        let table = routes.current
        for token in tokens {
            guard let dash = token.lastIndex(of: "-") else { continue }
            let service = String(token[..<dash])
            let version = String(token[token.index(after: dash)...])
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
        if !pinnedServices.contains(target), let released = releasedTo[target] {
            // Released from a BF hold: the pin names the new version, so the route is chosen
            // again (a header change clears the route cache) whatever table the stream saw.
            tokens.append("\(target)-\(released)")
            return .allow(xVersion: tokens.joined(separator: ","))
        }
        let learned = trace.flatMap { recorder.pin(trace: $0, service: target) }
        if !pinnedServices.contains(target), learned == nil, routes.heldGate(target) != nil {
            return .hold(service: target)
        }
        guard !pinnedServices.contains(target), let version = learned else {
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
