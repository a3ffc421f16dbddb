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
    let logger: Logger
    public let envoyConcurrency: Int
    private var processes: MeshProcesses
    private var ports: PortAllocator

    public init(config: MeshConfig, envoy: String, runDirectory: String, socketDirectory: String, logger: Logger) throws {
        self.logger = logger
        var ports = PortAllocator(used: [config.gateway.listen.port])
        self.plan = try MeshPlan.make(config, runDirectory: runDirectory, socketDirectory: socketDirectory) { try ports.next() }
        self.ports = ports
        self.recorder = MeshRecorder(instances: plan.instances.map { ($0.sidecar.id, $0.service, $0.version) }, entryService: plan.gatewayService)
        self.routes = RouteState(plan.routes)
        self.envoyConcurrency = Int(ProcessInfo.processInfo.environment["TRIAD_ENVOY_CONCURRENCY"] ?? "") ?? 1
        self.processes = MeshProcesses(envoyExecutable: envoy, envoyConcurrency: envoyConcurrency)
    }

    // MARK: Start and stop

    /// Starts everything and returns once every instance is healthy and every Envoy is live.
    public func start(timeout: Duration = .seconds(60)) async throws {
        do {
            try FileManager.default.createDirectory(atPath: plan.runDirectory, withIntermediateDirectories: true)
            for instance in plan.instances { try processes.startInstance(instance, plan: plan) }
            var envoys: [(id: String, adminPort: Int)] = []
            for instance in plan.instances {
                try processes.startEnvoy(EnvoyConfig.sidecar(instance, plan: plan), plan: plan)
                envoys.append((instance.sidecar.id, instance.sidecar.adminPort))
            }
            try processes.startEnvoy(EnvoyConfig.gateway(plan: plan), plan: plan)
            envoys.append(("gateway", plan.gatewayAdminPort))
            let deadline = ContinuousClock.now + timeout
            for instance in plan.instances {
                try await MeshProcesses.waitHealthy(instance, process: processes.child(instance.id, .instance), deadline: deadline)
            }
            for (id, port) in envoys {
                guard let envoy = processes.child(id, .envoy) else { continue }
                try await MeshProcesses.waitLive(envoy, adminPort: port, deadline: deadline)
                // A listener Envoy could not create (a port in use) is only a rejected update to Envoy.
                if let rejected = await EnvoyFiles.stat(adminPort: port, name: "listener_manager.lds.update_rejected"), rejected > 0 {
                    let why = envoy.logTail().split(separator: "\n").last { $0.contains("rejected") }.map(String.init) ?? envoy.logTail()
                    throw Failure("Envoy \(envoy.id) rejected its listeners: \(why)")
                }
            }
            logger.info("mesh up", metadata: ["mesh": "\(plan.meshName)", "instances": "\(plan.instances.count)", "gateway": "\(plan.gatewayListen)"])
        } catch {
            await stop()
            throw error
        }
    }

    /// Stops every process the mesh started: the Envoys first (no new transactions), then the
    /// instances.
    public func stop() async {
        let took = await MeshProcesses.stop(processes.children)
        logger.info("mesh stopped", metadata: ["envoys": "\(took.envoys)", "instances": "\(took.instances)"])
        _ = processes.remove()
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

    /// Rewrites the route file of every Envoy that routes to `service`, then waits until each
    /// reports the update (`http.<prefix>.rds.<name>.update_success` grew).
    func pushRoutes(for service: String) async throws {
        var targets: [EnvoyFiles.Update] = []
        if plan.gatewayServices.contains(service), let table = EnvoyConfig.gateway(plan: plan).dynamic[.routes(.gateway)] {
            targets.append(.init(envoy: "gateway", adminPort: plan.gatewayAdminPort, file: .routes(.gateway), value: table))
        }
        let file = EnvoyFile.routes(.outbound(service: service))
        for instance in plan.instances where instance.sidecar.outboundPorts[service] != nil {
            if let table = EnvoyConfig.sidecar(instance, plan: plan).dynamic[file] {
                targets.append(.init(envoy: instance.sidecar.id, adminPort: instance.sidecar.adminPort, file: file, value: table))
            }
        }
        try await EnvoyFiles.push(targets, plan: plan, what: "the new routes to \(service)")
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
        func port() throws -> Int { try ports.next() }
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
            try processes.startInstance(instance, plan: plan)
            try processes.startEnvoy(EnvoyConfig.sidecar(instance, plan: plan), plan: plan)
            let deadline = ContinuousClock.now + timeout
            try await MeshProcesses.waitHealthy(instance, process: processes.child(id, .instance), deadline: deadline)
            if let envoy = processes.child(id, .envoy) {
                try await MeshProcesses.waitLive(envoy, adminPort: sidecar.adminPort, deadline: deadline)
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
    /// its sidecars and instances are told to stop (SIGTERM) and `unroutable` runs; this returns
    /// once they have exited (their own shutdown, SIGKILL after a grace). The route table is
    /// back to its initial shape.
    public func removeVersion(service: String, version: String, unroutable: @Sendable () async -> Void = {}) async throws {
        let started = ContinuousClock.now
        updateRoutes(of: service) { r in
            r.versions.removeAll { $0 == version }
            r.blocked.removeAll { $0 == version }
        }
        try await pushRoutes(for: service)
        let routed = ContinuousClock.now
        try await pushClusters(for: service)
        let clustered = ContinuousClock.now
        let ids = plan.instances(of: service, version: version).map(\.id)
        let victims = processes.children.filter { ids.contains($0.id) }
        // Nothing reaches them any more: both are signalled at once, and waited for after.
        for child in victims { child.terminate() }
        await unroutable()
        let took = await MeshProcesses.stop(victims)
        _ = processes.remove(ids)
        plan.instances.removeAll { ids.contains($0.id) }
        // What a retirement costs, part by part.
        logger.info(
            "version removed",
            metadata: [
                "service": "\(service)", "version": "\(version)", "routes": "\(routed - started)", "clusters": "\(clustered - routed)",
                "sidecarsExited": "\(took.envoys)", "instancesExited": "\(took.instances)",
            ])
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
        try await EnvoyFiles.push(
            plan.instances(of: service, version: version).map { instance in
                EnvoyFiles.Update(
                    envoy: instance.sidecar.id, adminPort: instance.sidecar.adminPort, file: .routes(.inbound),
                    value: EnvoyConfig.sidecar(instance, plan: plan).dynamic[.routes(.inbound)]!)
            }, plan: plan, what: "its inbound routes")
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
            let read = await first(within: timeout, otherwise: false) {
                await recorder.waitForMarker(instance: instance.id, id: marker)
                return !Task.isCancelled
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
        for instance in list { try await MeshProcesses.waitHealthy(instance, process: processes.child(instance.id, .instance), deadline: deadline) }
    }

    func stopInstances(_ ids: [String]) async {
        _ = await MeshProcesses.stop(processes.children.filter { ids.contains($0.id) })
        _ = processes.remove(ids)
    }

    /// Rewrites the cluster file of every Envoy that routes to `service` and waits until each applied it.
    func pushClusters(for service: String) async throws {
        var targets: [EnvoyFiles.Update] = []
        if plan.gatewayServices.contains(service), let cds = EnvoyConfig.gateway(plan: plan).dynamic[.clusters] {
            targets.append(.init(envoy: "gateway", adminPort: plan.gatewayAdminPort, file: .clusters, value: cds))
        }
        for instance in plan.instances where instance.sidecar.outboundPorts[service] != nil {
            if let cds = EnvoyConfig.sidecar(instance, plan: plan).dynamic[.clusters] {
                targets.append(.init(envoy: instance.sidecar.id, adminPort: instance.sidecar.adminPort, file: .clusters, value: cds))
            }
        }
        try await EnvoyFiles.push(targets, plan: plan, what: "the new clusters of \(service)")
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
                                let child = processes.child(i.id, .instance)
                                return MeshStatus.Instance(
                                    id: i.id, app: i.app.description, sidecar: "127.0.0.1:\(i.sidecar.inboundPort)",
                                    pid: child.map { Int($0.pid) }, running: child?.isRunning ?? true)
                            })
                    })
            },
            counters: recorder.counters)
    }

    public func processEntries() -> [MeshState.ProcessEntry] { processes.entries }

    /// The Envoy process with this id (a sidecar's id is its instance's; the gateway's is "gateway").
    public func envoyProcess(_ id: String) -> ChildProcess? { processes.child(id, .envoy) }
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
