import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import TriadCore
import TriadProcess

/// The running mesh: starts the instances, their sidecars and the gateway, changes routes by
/// swapping RDS files, and stops everything it started. Triad never proxies application
/// requests: Envoy carries them, Triad only writes Envoy's files and answers its checks.
public actor MeshRuntime {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    public private(set) var plan: MeshPlan
    public let recorder: MeshRecorder
    public let routes: RouteState
    let envoy: String
    let logger: Logger
    public let envoyConcurrency: Int
    public private(set) var children: [ChildProcess] = []

    public init(config: MeshConfig, envoy: String, runDirectory: String, socketDirectory: String, logger: Logger) throws {
        self.envoy = envoy
        self.logger = logger
        var used = Set<Int>([config.gateway.listen.port])
        // Ports handed out here are free now; remembering them avoids handing one out twice.
        self.plan = try MeshPlan.make(config, runDirectory: runDirectory, socketDirectory: socketDirectory) {
            for _ in 0..<50 {
                let p = try freeLoopbackPort()
                if used.insert(p).inserted { return p }
            }
            throw Failure("no free loopback port")
        }
        self.recorder = MeshRecorder(instances: plan.instances.map { ($0.sidecar.id, $0.service, $0.version) })
        recorder.setEntryService(plan.gatewayService)
        self.routes = RouteState(plan.routes)
        self.envoyConcurrency = Int(ProcessInfo.processInfo.environment["TRIAD_ENVOY_CONCURRENCY"] ?? "") ?? 1
    }

    // MARK: Start and stop

    /// Starts everything and returns once every instance is healthy and every Envoy is live.
    public func start(timeout: Duration = .seconds(60)) async throws {
        do {
            try FileManager.default.createDirectory(atPath: plan.runDirectory, withIntermediateDirectories: true)
            for instance in plan.instances { try startInstance(instance) }
            for instance in plan.instances {
                try startEnvoy(EnvoyConfig.sidecar(instance, plan: plan), adminPort: instance.sidecar.adminPort)
            }
            try startEnvoy(EnvoyConfig.gateway(plan: plan), adminPort: plan.gatewayAdminPort)
            let deadline = ContinuousClock.now + timeout
            for instance in plan.instances { try await waitHealthy(instance, deadline: deadline) }
            for child in children where child.kind == "envoy" {
                let port = child.id == "gateway" ? plan.gatewayAdminPort : plan.instances.first { $0.sidecar.id == child.id }!.sidecar.adminPort
                try await waitLive(child, adminPort: port, deadline: deadline)
                // A listener Envoy could not create (a port in use) is only a rejected update to Envoy.
                if let rejected = await EnvoyFiles.stat(adminPort: port, name: "listener_manager.lds.update_rejected"), rejected > 0 {
                    let why = child.logTail().split(separator: "\n").last { $0.contains("rejected") }.map(String.init) ?? child.logTail()
                    throw Failure("Envoy \(child.id) rejected its listeners: \(why)")
                }
            }
            logger.info("mesh up", metadata: ["mesh": "\(plan.meshName)", "instances": "\(plan.instances.count)", "gateway": "\(plan.gatewayListen)"])
        } catch {
            await stop()
            throw error
        }
    }

    /// Stops every process the mesh started: the gateway first (no new transactions), then
    /// the sidecars, then the instances.
    public func stop() async {
        let order =
            children.filter { $0.id == "gateway" } + children.filter { $0.kind == "envoy" && $0.id != "gateway" }
            + children.filter { $0.kind == "instance" }
        let started = ContinuousClock.now
        await withTaskGroup(of: Void.self) { group in
            for child in order where child.kind == "envoy" { group.addTask { await child.stop() } }
        }
        let envoysStopped = ContinuousClock.now
        await withTaskGroup(of: Void.self) { group in
            for child in order where child.kind == "instance" { group.addTask { await child.stop() } }
        }
        logger.info("mesh stopped", metadata: ["envoys": "\(envoysStopped - started)", "instances": "\(ContinuousClock.now - envoysStopped)"])
        children.removeAll()
    }

    func startInstance(_ instance: MeshPlan.Instance) throws {
        guard let argv = instance.command else { return }
        guard let program = ChildProcess.resolve(argv[0], directory: plan.baseDirectory) else {
            throw Failure("\(instance.id): cannot find the program \(argv[0]) (relative to \(plan.baseDirectory) or on PATH)")
        }
        var env = ProcessInfo.processInfo.environment
        // The contract is PORT and TRIAD_UPSTREAM_<S>; stale values from our own environment must not leak in.
        for key in env.keys where key.hasPrefix("TRIAD_UPSTREAM_") { env.removeValue(forKey: key) }
        for (k, v) in plan.environment(of: instance) { env[k] = v }
        let child = try ChildProcess(
            id: instance.id, kind: "instance", executable: program, arguments: Array(argv.dropFirst()),
            environment: env, directory: plan.baseDirectory, logPath: "\(plan.runDirectory)/\(instance.id).log")
        children.append(child)
    }

    func startEnvoy(_ files: EnvoyConfig.Files, adminPort: Int) throws {
        let bootstrap = try EnvoyFiles.install(files, plan: plan)
        let dir = EnvoyConfig.envoyDirectory(plan, id: files.id)
        let child = try ChildProcess(
            id: files.id, kind: "envoy", executable: envoy,
            arguments: [
                "-c", bootstrap, "--disable-hot-restart", "--use-dynamic-base-id", "--concurrency", String(envoyConcurrency),
                "-l", "warning", "--drain-time-s", "1", "--service-node", files.id, "--service-cluster", plan.meshName,
            ],
            environment: ProcessInfo.processInfo.environment, directory: dir, logPath: dir + "/envoy.log")
        children.append(child)
    }

    func waitHealthy(_ instance: MeshPlan.Instance, deadline: ContinuousClock.Instant) async throws {
        let url = "http://\(instance.app)\(instance.health)"
        let child = children.first { $0.id == instance.id }
        while true {
            if let child, !child.isRunning {
                throw Failure(
                    "\(instance.id) exited with status \(child.exitStatus ?? -1) before it was healthy; its log (\(child.logPath)) ends:\n\(child.logTail())")
            }
            if let response = try? await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(2)) {
                _ = try? await response.body.collect(upTo: 1 << 16)
                if (200..<300).contains(response.status.code) { return }
            }
            if ContinuousClock.now > deadline { throw Failure("\(instance.id) did not answer \(url) with 2xx in time") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    func waitLive(_ child: ChildProcess, adminPort: Int, deadline: ContinuousClock.Instant) async throws {
        while true {
            if !child.isRunning {
                throw Failure("Envoy \(child.id) exited with status \(child.exitStatus ?? -1); its log (\(child.logPath)) ends:\n\(child.logTail())")
            }
            if await EnvoyFiles.ready(adminPort: adminPort) { return }
            if ContinuousClock.now > deadline { throw Failure("Envoy \(child.id) was not live in time; its log ends:\n\(child.logTail())") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    // MARK: Routes

    /// Makes `version` the default of `service` at every caller (sidecars and the gateway) and
    /// returns once each caller's Envoy reports the new route table applied.
    public func setDefault(service: String, version: String) async throws {
        guard let current = routes.routes(of: service) else { throw Failure("no service \(service)") }
        guard current.versions.contains(version) else {
            throw Failure("\(service) has no version \(version) (it has \(current.versions.joined(separator: ", ")))")
        }
        updateRoutes(of: service) { $0.defaultVersion = version }
        try await pushRoutes(for: service)
    }

    /// Changes the route table of `service` (shared with the pin checks) and the plan's copy.
    private func updateRoutes(of service: String, _ change: (inout ServiceRoutes) -> Void) {
        routes.update { list in
            if let i = list.firstIndex(where: { $0.service == service }) { change(&list[i]) }
        }
        plan.routes = routes.current
    }

    /// A file for one Envoy, and the counter that grows once Envoy has applied it.
    struct EnvoyUpdate {
        var id: String
        var adminPort: Int
        var file: String
        var stat: String
        var value: JSONValue
    }

    /// Writes every file, then returns once each Envoy reports it applied (`what` names it in
    /// the error).
    func apply(_ updates: [EnvoyUpdate], what: String, timeout: Duration = .seconds(5)) async throws {
        var before: [Int] = []
        for u in updates { before.append(await EnvoyFiles.stat(adminPort: u.adminPort, name: u.stat) ?? 0) }
        for u in updates { try EnvoyFiles.writeAtomically(u.value, to: EnvoyConfig.configDirectory(plan, id: u.id) + "/" + u.file) }
        let deadline = ContinuousClock.now + timeout
        for (i, u) in updates.enumerated() {
            while (await EnvoyFiles.stat(adminPort: u.adminPort, name: u.stat) ?? 0) <= before[i] {
                if ContinuousClock.now > deadline { throw Failure("Envoy \(u.id) did not apply \(what) in time") }
                try await Task.sleep(for: .milliseconds(5))
            }
        }
    }

    /// Rewrites the route file of every Envoy that routes to `service`, then waits until each
    /// reports the update (`http.<prefix>.rds.<name>.update_success` grew).
    func pushRoutes(for service: String) async throws {
        var targets: [EnvoyUpdate] = []
        if plan.gatewayService == service, let table = EnvoyConfig.gateway(plan: plan).dynamic["rds-gateway.json"] {
            targets.append(
                .init(
                    id: "gateway", adminPort: plan.gatewayAdminPort, file: "rds-gateway.json",
                    stat: "http.gateway.rds.gateway.update_success", value: table))
        }
        for instance in plan.instances where instance.sidecar.outboundPorts[service] != nil {
            let file = "rds-out-\(service).json"
            if let table = EnvoyConfig.sidecar(instance, plan: plan).dynamic[file] {
                targets.append(
                    .init(
                        id: instance.sidecar.id, adminPort: instance.sidecar.adminPort, file: file,
                        stat: "http.out_\(service).rds.out-\(service).update_success", value: table))
            }
        }
        try await apply(targets, what: "the new routes to \(service)")
        logger.info("routes applied", metadata: ["service": "\(service)", "envoys": "\(targets.count)"])
    }

    // MARK: Upgrades (the update controller's operations)

    /// Starts a version that the mesh file did not declare: its instance and sidecar, waits
    /// for its health, then adds its cluster and pin route at every caller (default unchanged).
    /// A version that fails its health check is stopped again and nothing else changed.
    public func addVersion(
        service: String, version: String, source: MeshConfig.Version.Source, health: String = "/healthz",
        timeout: Duration = .seconds(60)
    ) async throws {
        guard routes.routes(of: service) != nil else { throw Failure("no service \(service)") }
        var used = Set(plan.instances.flatMap { [$0.app.port, $0.sidecar.adminPort, $0.sidecar.inboundPort] + Array($0.sidecar.outboundPorts.values) })
        used.insert(plan.gatewayListen.port)
        used.insert(plan.gatewayAdminPort)
        func port() throws -> Int {
            for _ in 0..<50 {
                let p = try freeLoopbackPort()
                if used.insert(p).inserted { return p }
            }
            throw Failure("no free loopback port")
        }
        let id = "\(service)-\(version)-0"
        var outbound: [String: Int] = [:]
        for other in plan.serviceNames where other != service { outbound[other] = try port() }
        let sidecar = MeshPlan.Sidecar(id: id, adminPort: try port(), inboundPort: try port(), outboundPorts: outbound)
        let instance: MeshPlan.Instance
        switch source {
        case .command(let argv):
            instance = .init(
                id: id, service: service, version: version, app: HostPort(host: "127.0.0.1", port: try port()), command: argv, health: health, sidecar: sidecar)
        case .upstream(let hp):
            instance = .init(id: id, service: service, version: version, app: hp, command: nil, health: health, sidecar: sidecar)
        }
        plan.instances.append(instance)
        recorder.addInstance(id: id, service: service, version: version)
        do {
            try startInstance(instance)
            try startEnvoy(EnvoyConfig.sidecar(instance, plan: plan), adminPort: sidecar.adminPort)
            let deadline = ContinuousClock.now + timeout
            try await waitHealthy(instance, deadline: deadline)
            if let child = children.first(where: { $0.id == id && $0.kind == "envoy" }) {
                try await waitLive(child, adminPort: sidecar.adminPort, deadline: deadline)
            }
        } catch {
            await stopInstances([id])
            plan.instances.removeAll { $0.id == id }
            throw error
        }
        updateRoutes(of: service) { if !$0.versions.contains(version) { $0.versions.append(version) } }
        try await pushClusters(for: service)
        try await pushRoutes(for: service)
    }

    /// Retires a version: no caller routes to it any more (its pin route and cluster go), then
    /// its instances and sidecars stop. The route table is back to its initial shape.
    public func removeVersion(service: String, version: String) async throws {
        updateRoutes(of: service) { r in
            r.versions.removeAll { $0 == version }
            r.blocked.removeAll { $0 == version }
        }
        try await pushRoutes(for: service)
        try await pushClusters(for: service)
        let ids = plan.instances(of: service, version: version).map(\.id)
        await stopInstances(ids)
        plan.instances.removeAll { ids.contains($0.id) }
    }

    /// Whether callers route by pins for `service` (false: one default route, the `rolling` baseline).
    public func setPinRoutes(service: String, _ on: Bool) async throws {
        updateRoutes(of: service) { $0.pinRoutes = on }
        try await pushRoutes(for: service)
    }

    /// Blocks (or unblocks) unpinned requests at every instance of `service`/`version`, and
    /// returns once each of their inbound sidecars applied it.
    public func setBlocked(service: String, version: String, _ on: Bool) async throws {
        updateRoutes(of: service) { r in
            r.blocked.removeAll { $0 == version }
            if on { r.blocked.append(version) }
        }
        try await apply(
            plan.instances(of: service, version: version).map { instance in
                EnvoyUpdate(
                    id: instance.sidecar.id, adminPort: instance.sidecar.adminPort, file: "rds-inbound.json",
                    stat: "http.inbound.rds.inbound.update_success",
                    value: EnvoyConfig.sidecar(instance, plan: plan).dynamic["rds-inbound.json"]!)
            }, what: "its inbound routes")
        logger.info("inbound block", metadata: ["service": "\(service)", "version": "\(version)", "on": "\(on)"])
    }

    /// Sends a marker through each inbound sidecar of `service`/`version` and returns once the
    /// recorder has read it: every record those sidecars logged before is then consumed.
    public func confirmRecordsRead(service: String, version: String, timeout: Duration = .seconds(5)) async throws {
        for instance in plan.instances(of: service, version: version) {
            let marker = "triad-marker-" + MeshState.newToken().prefix(16)
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(instance.sidecar.inboundPort)\(EnvoyConfig.markerPath)")
            request.headers.add(name: "x-b3-traceid", value: marker)
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(2))
            _ = try? await response.body.collect(upTo: 4096)
            let recorder = self.recorder
            let read = await withTaskGroup(of: Bool.self) { group in
                group.addTask {
                    await recorder.waitForMarker(instance: instance.id, id: marker)
                    return !Task.isCancelled
                }
                group.addTask {
                    try? await Task.sleep(for: timeout)
                    return false
                }
                let first = await group.next() ?? false
                group.cancelAll()
                return first
            }
            guard read else { throw Failure("the trace manager of \(instance.id) did not read its marker in time") }
        }
    }

    /// One marker round through every instance of `service` (RecordBarrier); never throws:
    /// a sidecar that does not answer in time only delays the checks waiting on the round.
    public func markerRound(service: String) async {
        for version in routes.routes(of: service)?.versions ?? [] {
            do { try await confirmRecordsRead(service: service, version: version, timeout: .seconds(1)) } catch {
                logger.warning("marker round incomplete", metadata: ["service": "\(service)", "version": "\(version)"])
            }
        }
    }

    public func instanceIDs(service: String, version: String) -> [String] { plan.instances(of: service, version: version).map(\.id) }

    /// Checks that the instances of a declared version are up and healthy.
    public func checkHealthy(service: String, version: String, timeout: Duration = .seconds(10)) async throws {
        let deadline = ContinuousClock.now + timeout
        let list = plan.instances(of: service, version: version)
        guard !list.isEmpty else { throw Failure("\(service) \(version) has no instances") }
        for instance in list { try await waitHealthy(instance, deadline: deadline) }
    }

    func stopInstances(_ ids: [String]) async {
        let victims = children.filter { ids.contains($0.id) }
        await withTaskGroup(of: Void.self) { group in
            for child in victims where child.kind == "envoy" { group.addTask { await child.stop() } }
        }
        await withTaskGroup(of: Void.self) { group in
            for child in victims where child.kind == "instance" { group.addTask { await child.stop() } }
        }
        children.removeAll { ids.contains($0.id) }
    }

    /// Rewrites the cluster file of every Envoy that routes to `service` and waits until each applied it.
    func pushClusters(for service: String) async throws {
        let stat = "cluster_manager.cds.update_success"
        var targets: [EnvoyUpdate] = []
        if plan.gatewayService == service, let cds = EnvoyConfig.gateway(plan: plan).dynamic["cds.json"] {
            targets.append(.init(id: "gateway", adminPort: plan.gatewayAdminPort, file: "cds.json", stat: stat, value: cds))
        }
        for instance in plan.instances where instance.sidecar.outboundPorts[service] != nil {
            if let cds = EnvoyConfig.sidecar(instance, plan: plan).dynamic["cds.json"] {
                targets.append(.init(id: instance.sidecar.id, adminPort: instance.sidecar.adminPort, file: "cds.json", stat: stat, value: cds))
            }
        }
        try await apply(targets, what: "the new clusters of \(service)")
    }

    // MARK: Status

    public func status() -> MeshStatus {
        let table = routes.current
        return MeshStatus(
            name: plan.meshName, pinPropagation: plan.plainEnvoy ? "plain-envoy" : plan.pinPropagation.rawValue,
            gateway: "http://\(plan.gatewayListen)", gatewayService: plan.gatewayService,
            services: table.map { r in
                MeshStatus.Service(
                    name: r.service, defaultVersion: r.defaultVersion,
                    versions: r.versions.map { v in
                        MeshStatus.Version(
                            version: v,
                            instances: plan.instances(of: r.service, version: v).map { i in
                                let child = children.first { $0.id == i.id }
                                return MeshStatus.Instance(
                                    id: i.id, app: i.app.description, sidecar: "127.0.0.1:\(i.sidecar.inboundPort)",
                                    pid: child.map { Int($0.pid) }, running: child?.isRunning ?? true)
                            })
                    })
            },
            counters: recorder.counters)
    }

    public func processes() -> [MeshState.ProcessEntry] {
        children.map { .init(id: $0.id, kind: $0.kind, pid: Int($0.pid)) }
    }
}

public struct MeshStatus: Sendable, Codable, Equatable {
    public struct Instance: Sendable, Codable, Equatable {
        public var id: String
        public var app: String
        public var sidecar: String
        public var pid: Int?
        public var running: Bool
    }
    public struct Version: Sendable, Codable, Equatable {
        public var version: String
        public var instances: [Instance]
    }
    public struct Service: Sendable, Codable, Equatable {
        public var name: String
        public var defaultVersion: String
        public var versions: [Version]
    }
    public var name: String
    public var pinPropagation: String
    public var gateway: String
    public var gatewayService: String
    public var services: [Service]
    public var counters: MeshRecorder.Counters
}
