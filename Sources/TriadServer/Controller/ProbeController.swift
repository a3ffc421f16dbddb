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
    private let queue = Mutex(WorkQueue<String>())
    /// Probe exits reported from reaper threads, picked up by the loop.
    private let exits = ExitInbox()
    private let apiURL = Mutex<String?>(nil)

    init(registry: Registry, authority: TokenAuthority, notifier: EventNotifier, mqttBroker: MQTTEndpoint?, mqttClientPerToken: Bool = false, dataDir: String,
         policy: ProbeReconciler.Policy = ProbeReconciler.Policy(), probeAllow: ProbeAllowList = ProbeAllowList(), logger: Logger) {
        self.registry = registry
        self.probeAllow = probeAllow
        self.notifier = notifier
        self.mqttBroker = mqttBroker
        self.mqttClientPerToken = mqttClientPerToken
        self.dataDir = dataDir
        self.policy = policy
        self.logger = logger
        let exits = self.exits
        runtime = LocalProbeRuntime(authority: authority, logger: logger) { name in
            exits.names.withLock { _ = $0.insert(name) }
        }
    }

    /// The server's own URL for probes (`TRIAD_API_URL`), known once it listens.
    func serverListening(at url: String) {
        apiURL.withLock { $0 = url }
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
                        let led = try await self.registry.backend.lead("triad.controller") {
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

    /// The controller's loop while it leads. Every 200 ms it looks at the registry's event log
    /// (when something was written), the runtime's exited probes, and the queue's due keys.
    private func lead() async throws {
        // A new leader runs no probe yet: tokens of probes a crashed leader left are revoked.
        await runtime.revokeLeftoverTokens()
        var cursor = try await registry.backend.latestRevision()
        // The event log is read only after the notifier says something was written (here, by
        // another replica, or the 1 s fallback tick), not on every 200 ms turn.
        let written = WriteFlag()
        let watching = Task { [notifier] in
            for await _ in notifier.subscribe() { written.raised.store(true, ordering: .releasing) }
        }
        defer { watching.cancel() }
        try await resync()
        var lastResync = ContinuousClock.now
        while true {
            try Task.checkCancellation()
            // Every registry event after the cursor names a resource to look at.
            while written.raised.exchange(false, ordering: .acquiringAndReleasing) {
                let limit = 500
                let batch = try await registry.backend.events(after: cursor, limit: limit).events
                for event in batch { queue.withLock { $0.add(event.name) } }
                guard let last = batch.last else { break }
                cursor = last.id
                // A full batch: there may be more after it.
                if batch.count == limit { written.raised.store(true, ordering: .releasing) }
            }
            for name in exits.names.withLock({ s in defer { s.removeAll() }; return s }) {
                queue.withLock { $0.add(name) }
            }
            if ContinuousClock.now - lastResync > .seconds(30) {
                try await resync()
                lastResync = ContinuousClock.now
            }
            if apiURL.withLock({ $0 }) != nil {
                while let name = queue.withLock({ $0.next(now: Self.now()) }) {
                    do {
                        let requeue = try await reconcile(name)
                        queue.withLock { q in
                            q.forget(name)
                            q.done(name)
                            if let requeue { q.add(name, after: requeue, now: Self.now()) }
                        }
                    } catch {
                        Counter(label: "triad_controller_reconcile_errors_total").increment()
                        logger.warning("reconcile failed; retrying with back-off", metadata: ["resource": "\(name)", "error": "\(error)"])
                        queue.withLock { q in q.done(name); q.addRateLimited(name, now: Self.now()) }
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// Level-triggered safety net: every resource (and every running probe) is looked at.
    private func resync() async throws {
        var after: String?
        while true {
            let page = try await registry.backend.list(kind: nil, after: after, limit: 500)
            queue.withLock { q in for r in page { q.add(r.name) } }
            guard let last = page.last else { break }
            after = last.name
        }
        for name in await runtime.runningNames { queue.withLock { $0.add(name) } }
    }

    static func now() -> Double { Date().timeIntervalSince1970 }

    /// Converges one resource; returns when to look again, if the decision depends on time.
    func reconcile(_ name: String) async throws -> Double? {
        let stored = try await registry.backend.get(name: name)
        let resource = try stored?.decode()
        let now = Self.now()
        let desired = resource.map { r in
            ProbeReconciler.Desired(
                image: r.spec.probeImage, args: r.spec.probeArgs ?? [], enabled: r.spec.probeEnabled ?? true,
                generation: r.metadata.generation ?? 1,
                lastSample: r.status?.telemetry?.lastSeen.flatMap(Timestamp.parse)?.timeIntervalSince1970,
                announcedOffline: r.status?.conditions?.condition("ProbeConnected")?.status == .false)
        }
        let actual = await runtime.actual(name, now: now)
        let decision = ProbeReconciler.decide(desired, actual, now: now, policy: policy)
        let environment = LocalProbeRuntime.Environment(apiURL: apiURL.withLock { $0 } ?? "", mqttBroker: mqttBroker,
                                                        mqttClientPerToken: mqttClientPerToken,
                                                        probeDirectory: dataDir + "/probes", allow: probeAllow)
        do {
            switch decision.action {
            case .none: break
            case .start: try await runtime.start(name, desired!, environment: environment, now: now)
            case .stop: await runtime.stop(name)
            case .restart:
                await runtime.stop(name)
                try await runtime.start(name, desired!, environment: environment, now: now)
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
        let probed = desired.managed || actual.startedAt != nil || desired.lastSample != nil
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
        if heartbeat.markFailed { try await markAgentFailed(name) }
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

    private func markAgentFailed(_ name: String) async throws {
        let message = "no heartbeat from the agent for more than \(Int(policy.heartbeatTimeout)) s"
        let patch: JSONValue = .object([
            "phase": .string(ResourcePhase.failed.rawValue),
            // Merged by type: only AgentReady changes.
            "conditions": .array([.object([
                "type": .string(HeartbeatReconciler.conditionType), "status": .string("False"),
                "reason": .string(HeartbeatReconciler.missedReason), "message": .string(message),
                "lastTransitionTime": .string(Timestamp.format(Date())),
            ])]),
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
        conditions.set(type: "ProbeReady", status: phase == .synchronous ? .true : .false,
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

private final class WriteFlag: Sendable {
    let raised = Atomic<Bool>(true)  // read the log once at the start
}

private final class ExitInbox: Sendable {
    let names = Mutex<Set<String>>([])
}
