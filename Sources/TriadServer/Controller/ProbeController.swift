import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import TriadCore
import TriadMQTT

/// The resource controller (docs/mqtt.md): level-triggered over the registry; it runs probes,
/// judges agent heartbeats and expires binding leases. Registry events,
/// probe exits and timers enqueue resource names on a `WorkQueue`; `reconcile(name)` compares the
/// desired probe with the running one (`ProbeReconciler`), converges through the local runtime
/// and writes `probePhase` with a `ProbeReady` condition when they change. With replicas on one
/// PostgreSQL only the leader runs it; a standby takes over within seconds of the leader dying.
public final class ProbeController: Service, Sendable {
    let registry: Registry
    let runtime: LocalProbeRuntime
    let notifier: EventNotifier
    let logger: Logger
    let mqttBroker: MQTTEndpoint?
    let mqttClientPerToken: Bool
    let dataDir: String
    let policy: ProbeReconciler.Policy
    let probeAllow: ProbeAllowList
    /// Reconciles running at once (never two on one resource).
    let workers: Int
    /// The runner while this replica leads: probe exits (on reaper threads) are handed to it.
    private let leading = LeadingRunner()
    private let apiURL = Mutex<String?>(nil)
    private let listening = OneShot()

    init(
        registry: Registry, authority: TokenAuthority, notifier: EventNotifier, mqttBroker: MQTTEndpoint?, mqttClientPerToken: Bool = false, dataDir: String,
        policy: ProbeReconciler.Policy = ProbeReconciler.Policy(), probeAllow: ProbeAllowList = ProbeAllowList(), workers: Int = 4,
        logger: Logger
    ) {
        self.registry = registry
        self.workers = workers
        self.probeAllow = probeAllow
        self.notifier = notifier
        self.mqttBroker = mqttBroker
        self.mqttClientPerToken = mqttClientPerToken
        self.dataDir = dataDir
        self.policy = policy
        self.logger = logger
        let leading = self.leading
        runtime = LocalProbeRuntime(authority: authority, logger: logger) { name in
            leading.runner.withLock { $0 }?.add(name)
        }
    }

    /// The server's own URL for probes (`TRIAD_API_URL`), known once it listens.
    func serverListening(at url: String) {
        apiURL.withLock { $0 = url }
        listening.fire()
    }

    /// The resources whose probe process runs now.
    public func runningProbes() async -> Set<String> { Set(await runtime.runningNames) }

    public func run() async throws {
        let leaderGauge = Gauge(label: "triad_controller_leader")
        leaderGauge.record(0)
        do {
            try await cancelWhenGracefulShutdown {
                while !Task.isCancelled {
                    do {
                        let led = try await self.registry.leadership.lead("triad.controller") {
                            leaderGauge.record(1)
                            defer { leaderGauge.record(0) }
                            self.logger.info("controller leading")
                            try await self.lead()
                        }
                        if led { await self.runtime.stopAll() }
                    } catch let error where !(error is CancellationError) {
                        // Leadership lost with the database connection, or the database is down:
                        // stop our probes (the next leader starts them) and try again.
                        self.logger.warning("controller stopped leading; retrying", metadata: ["error": "\(error)"])
                        await self.runtime.stopAll()
                    }
                    try await Task.sleep(for: .seconds(1))
                }
            }
        } catch is CancellationError {}
        // Probes never outlive the controller that started them.
        await runtime.stopAll()
    }

    /// What the controller does while it leads: every registry event, probe exit and timer puts
    /// a resource name on the runner's queue, and the runner reconciles it.
    private func lead() async throws {
        // A new leader runs no probe yet: tokens of probes a crashed leader left are revoked.
        await runtime.revokeLeftoverTokens()
        // Probes are given the server's own URL: nothing starts before it listens.
        await listening.wait()
        try Task.checkCancellation()
        let runner = ControllerRunner(clock: ContinuousClock(), workers: workers, logger: logger) { name, logger in
            do {
                // The runner caps the delay at a day; capped here first so that the conversion cannot overflow.
                return try await self.reconcile(name, logger: logger).map { Duration.milliseconds(Int64((min($0, 86_400) * 1000).rounded(.up))) }
            } catch {
                Counter(label: "triad_controller_reconcile_errors_total").increment()
                throw error
            }
        }
        leading.runner.withLock { $0 = runner }
        defer { leading.runner.withLock { $0 = nil } }
        let cursor = try await registry.log.latestRevision()
        try await resync(runner)
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await runner.run() }
            group.addTask { try await self.followEvents(after: cursor, into: runner) }
            // Level-triggered safety net, on top of the events.
            group.addTask {
                while true {
                    try await Task.sleep(for: .seconds(30))
                    try await self.resync(runner)
                }
            }
        }
    }

    /// Each registry event after `cursor` that changed a resource names one to look at (a ledger
    /// record's event does not change its resource, and a project is no resource). The log is
    /// read when the notifier says something was written (here, by another replica, or the 1 s
    /// fallback tick).
    private func followEvents(after start: Int64, into runner: ControllerRunner<String, ContinuousClock>) async throws {
        var cursor = start
        for await _ in notifier.subscribe(ledger: false) {
            while true {
                let limit = 500
                let batch = try await registry.log.events(after: cursor, limit: limit).events
                for event in batch where event.type.subject == .resource { runner.add(event.name) }
                guard let last = batch.last else { break }
                cursor = last.id
                if batch.count < limit { break }  // a full batch: there may be more after it
            }
        }
    }

    /// Level-triggered safety net: every resource (and every running probe) is looked at.
    private func resync(_ runner: ControllerRunner<String, ContinuousClock>) async throws {
        var after: String?
        while true {
            let page = try await registry.scan(after: after, limit: 500)
            for r in page { runner.add(r.name) }
            guard let last = page.last else { break }
            after = last.name
        }
        for name in await runtime.runningNames { runner.add(name) }
    }

    static func now() -> Double { Date().timeIntervalSince1970 }

    /// Converges one resource; returns when to look again (seconds), if the decision depends on
    /// time. `logger` carries the reconcile's id.
    func reconcile(_ name: String, logger: Logger) async throws -> Double? {
        let stored = try await registry.find(name)
        let resource = try stored?.decode()
        let now = Self.now()
        let desired = resource.map { r in
            ProbeReconciler.Desired(
                image: r.spec.probeImage, args: r.spec.probeArgs ?? [], enabled: r.spec.probeEnabled ?? true,
                generation: r.metadata.generation ?? 1,
                lastSample: r.status?.telemetry?.lastSeen.flatMap(Timestamp.parse)?.timeIntervalSince1970,
                announcedOffline: r.status?.conditions?.condition("ProbeConnected")?.status == .false)
        }
        let actual = await runtime.actual(name, now: now, logger: logger)
        let decision = ProbeReconciler.decide(desired, actual, now: now, policy: policy)
        let environment = LocalProbeRuntime.Environment(
            apiURL: apiURL.withLock { $0 } ?? "", mqttBroker: mqttBroker,
            mqttClientPerToken: mqttClientPerToken,
            probeDirectory: dataDir + "/probes", allow: probeAllow)
        do {
            switch decision.action {
            case .none: break
            case .start(let probe): try await runtime.start(name, probe, environment: environment, now: now, logger: logger)
            case .stop: await runtime.stop(name, logger: logger)
            case .restart(let probe):
                await runtime.stop(name, logger: logger)
                try await runtime.start(name, probe, environment: environment, now: now, logger: logger)
            }
        } catch let failure as ProbeStartError {
            // Shown where users look (the resource's conditions), not only in the server's log;
            // the work queue retries with back-off.
            try await writeStartFailure(name, resource, failure)
            throw failure
        }
        guard let resource, let desired else {
            await runtime.forget(name)
            return nil
        }
        var requeue: Double?
        // Resources with no probe at all (none configured, none ever run, no sample, no
        // announcement) get no probe status: nothing is known about one.
        let probed =
            desired.managed || actual.startedAt != nil || desired.lastSample != nil
            || resource.status?.conditions?.condition("ProbeConnected") != nil
        if probed {
            try await writePhase(name, resource, decision)
            requeue = decision.requeueAfter
        }
        let agent = resource.status?.conditions?.condition(HeartbeatReconciler.conditionType)
        let heartbeat = HeartbeatReconciler.decide(
            lastHeartbeat: agent?.lastHeartbeatTime.flatMap(Timestamp.parse)?.timeIntervalSince1970,
            phase: resource.status?.phase, alreadyMissed: agent?.reason == HeartbeatReconciler.missedReason,
            now: now, timeout: policy.heartbeatTimeout)
        if heartbeat.markFailed { try await markAgentFailed(name, logger: logger) }
        if let after = heartbeat.requeueAfter { requeue = min(requeue ?? after, after) }
        // Binding leases: released once past their expiry, looked at again when they expire.
        if let expiry = resource.status?.binding.flatMap({ Timestamp.parse($0.expiresAt) })?.timeIntervalSince1970 {
            if expiry <= now {
                if try await registry.release(name, holder: nil, onlyIfExpired: true) != nil {
                    notifier.notify()
                    logger.info("binding expired", metadata: ["resource": "\(name)"])
                }
            } else {
                requeue = min(requeue ?? (expiry - now + 0.05), expiry - now + 0.05)
            }
        }
        return requeue
    }

    private func markAgentFailed(_ name: String, logger: Logger) async throws {
        let message = "no heartbeat from the agent for more than \(Int(policy.heartbeatTimeout)) s"
        let patch: JSONValue = .object([
            "phase": .string(ResourcePhase.failed.rawValue),
            // Merged by type: only AgentReady changes.
            "conditions": .array([
                .object([
                    "type": .string(HeartbeatReconciler.conditionType), "status": .string("False"),
                    "reason": .string(HeartbeatReconciler.missedReason), "message": .string(message),
                    "lastTransitionTime": .string(Timestamp.format(Date())),
                ])
            ]),
        ])
        do {
            _ = try await registry.writeStatus(name, .merge(patch), precondition: nil)
            notifier.notify()
            logger.warning("agent heartbeat missed", metadata: ["resource": "\(name)"])
        } catch RegistryError.notFound {}
    }

    /// `probePhase: Failed` with `ProbeReady` False, reason `ProbeStartFailed` and why.
    private func writeStartFailure(_ name: String, _ resource: Resource?, _ failure: ProbeStartError) async throws {
        guard let resource else { return }
        try await writePhase(name, resource, phase: .failed, reason: "ProbeStartFailed", message: failure.description)
    }

    private func writePhase(_ name: String, _ resource: Resource, _ decision: ProbeReconciler.Decision) async throws {
        try await writePhase(name, resource, phase: decision.phase, reason: decision.reason, message: decision.message)
    }

    /// Writes `probePhase` and the `ProbeReady` condition, only when they change (a status write
    /// is a registry event, which would enqueue the resource again).
    private func writePhase(_ name: String, _ resource: Resource, phase: ProbePhase, reason: String, message: String?) async throws {
        var conditions = resource.status?.conditions ?? []
        conditions.set(
            type: "ProbeReady", status: phase == .synchronous ? .true : .false,
            reason: reason, message: message, at: Timestamp.format(Date()))
        guard resource.status?.probePhase != phase || conditions != (resource.status?.conditions ?? []) else { return }
        let patch: JSONValue = .object([
            "probePhase": .string(phase.rawValue),
            "conditions": try conditions.patch(only: "ProbeReady"),
        ])
        do {
            _ = try await registry.writeStatus(name, .merge(patch), precondition: nil)
            notifier.notify()
        } catch RegistryError.notFound {
            // Deleted meanwhile: the delete's event brings it back here.
        }
    }
}

/// The controller's runner while this replica leads (shared with the probe runtime's exit callback).
private final class LeadingRunner: Sendable {
    let runner = Mutex<ControllerRunner<String, ContinuousClock>?>(nil)
}
