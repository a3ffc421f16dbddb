import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import TriadProcess

/// The processes a mesh started: its instances and their Envoys (sidecars and the gateway),
/// how each is started, waited for and stopped. MeshRuntime (an actor) owns one and changes it;
/// waits and stops take the processes they need, so nothing here is held across a suspension.
struct MeshProcesses {
    enum Kind: String, Sendable {
        case instance
        case envoy
    }

    private(set) var children: [ChildProcess] = []
    let envoyExecutable: String
    let envoyConcurrency: Int

    func child(_ id: String, _ kind: Kind) -> ChildProcess? {
        children.first { $0.id == id && $0.kind == kind.rawValue }
    }

    var entries: [MeshState.ProcessEntry] { children.map { .init(id: $0.id, kind: $0.kind, pid: Int($0.pid)) } }

    /// Starts an instance's command (none: it runs elsewhere, an `upstream`) with `PORT` and
    /// `TRIAD_UPSTREAM_<S>` from the plan, in the mesh file's directory.
    mutating func startInstance(_ instance: MeshPlan.Instance, plan: MeshPlan) throws {
        guard let argv = instance.command else { return }
        guard let program = ChildProcess.resolve(argv[0], directory: plan.baseDirectory) else {
            throw MeshRuntime.Failure("\(instance.id): cannot find the program \(argv[0]) (relative to \(plan.baseDirectory) or on PATH)")
        }
        var env = ProcessInfo.processInfo.environment
        // The contract is PORT and TRIAD_UPSTREAM_<S>; stale values from our own environment must not leak in.
        for key in env.keys where key.hasPrefix("TRIAD_UPSTREAM_") { env.removeValue(forKey: key) }
        for (k, v) in plan.environment(of: instance) { env[k] = v }
        children.append(
            try ChildProcess(
                id: instance.id, kind: Kind.instance.rawValue, executable: program, arguments: Array(argv.dropFirst()),
                environment: env, directory: plan.baseDirectory, logPath: "\(plan.runDirectory)/\(instance.id).log"))
    }

    /// Lays out an Envoy's files and starts it on them.
    mutating func startEnvoy(_ files: EnvoyConfig.Files, plan: MeshPlan) throws {
        let bootstrap = try EnvoyFiles.install(files, plan: plan)
        let dir = EnvoyConfig.envoyDirectory(plan, id: files.id)
        children.append(
            try ChildProcess(
                id: files.id, kind: Kind.envoy.rawValue, executable: envoyExecutable,
                arguments: [
                    "-c", bootstrap, "--disable-hot-restart", "--use-dynamic-base-id", "--concurrency", String(envoyConcurrency),
                    "-l", "warning", "--drain-time-s", "1", "--service-node", files.id, "--service-cluster", plan.meshName,
                ],
                environment: ProcessInfo.processInfo.environment, directory: dir, logPath: dir + "/envoy.log"))
    }

    /// Forgets the processes with these ids (all when nil) and returns them, to be stopped.
    mutating func remove(_ ids: [String]? = nil) -> [ChildProcess] {
        guard let ids else {
            defer { children.removeAll() }
            return children
        }
        let removed = children.filter { ids.contains($0.id) }
        children.removeAll { ids.contains($0.id) }
        return removed
    }

    /// Stops the Envoys first, all at once (no new requests reach the instances), then the
    /// instances; returns how long each part took.
    static func stop(_ victims: [ChildProcess]) async -> (envoys: Duration, instances: Duration) {
        let started = ContinuousClock.now
        await withTaskGroup(of: Void.self) { group in
            for child in victims where child.kind == Kind.envoy.rawValue { group.addTask { await child.stop() } }
        }
        let envoysStopped = ContinuousClock.now
        await withTaskGroup(of: Void.self) { group in
            for child in victims where child.kind == Kind.instance.rawValue { group.addTask { await child.stop() } }
        }
        return (envoysStopped - started, ContinuousClock.now - envoysStopped)
    }

    /// Returns once the instance answers its health path with 2xx; throws when its process
    /// exits first or the deadline passes (an HTTP answer has no event to wait for).
    static func waitHealthy(_ instance: MeshPlan.Instance, process: ChildProcess?, deadline: ContinuousClock.Instant) async throws {
        let url = "http://\(instance.app)\(instance.health)"
        while true {
            if let process, !process.isRunning {
                throw MeshRuntime.Failure(
                    "\(instance.id) exited with status \(process.exitStatus ?? -1) before it was healthy; its log (\(process.logPath)) ends:\n\(process.logTail())"
                )
            }
            if let response = try? await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(2)) {
                _ = try? await response.body.collect(upTo: 1 << 16)
                if (200..<300).contains(response.status.code) { return }
            }
            if ContinuousClock.now > deadline { throw MeshRuntime.Failure("\(instance.id) did not answer \(url) with 2xx in time") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Returns once the Envoy reports itself ready on its admin port; throws when it exits
    /// first or the deadline passes.
    static func waitLive(_ envoy: ChildProcess, adminPort: Int, deadline: ContinuousClock.Instant) async throws {
        while true {
            if !envoy.isRunning {
                throw MeshRuntime.Failure(
                    "Envoy \(envoy.id) exited with status \(envoy.exitStatus ?? -1); its log (\(envoy.logPath)) ends:\n\(envoy.logTail())")
            }
            if await EnvoyFiles.ready(adminPort: adminPort) { return }
            if ContinuousClock.now > deadline { throw MeshRuntime.Failure("Envoy \(envoy.id) was not live in time; its log ends:\n\(envoy.logTail())") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}

/// Hands out free loopback ports for a mesh's instances and Envoys, never one twice and never
/// one the mesh already uses (a port is only free until someone binds it).
struct PortAllocator {
    private var used: Set<Int>

    init(used: Set<Int>) { self.used = used }

    mutating func next() throws -> Int {
        for _ in 0..<50 {
            let port = try freeLoopbackPort()
            if used.insert(port).inserted { return port }
        }
        throw MeshRuntime.Failure("no free loopback port")
    }
}
