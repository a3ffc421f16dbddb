import Foundation
import Logging
import Synchronization

/// What `triad upgrade` asks the mesh (POST /v1/upgrades).
public struct UpgradeRequest: Sendable, Codable, Equatable {
    public var service: String
    public var to: String
    /// CV (default), BF, WF or rolling.
    public var strategy: String?
    /// Program and arguments of a version the mesh file did not declare (run without a shell).
    public var command: [String]?
    /// HOST:PORT of an already running instance of a version the mesh file did not declare.
    public var upstream: String?
    public var drainTimeoutSeconds: Double?
    /// At the drain deadline: retire the old version anyway (default: roll back).
    public var force: Bool?

    public init(
        service: String, to: String, strategy: String? = nil, command: [String]? = nil, upstream: String? = nil,
        drainTimeoutSeconds: Double? = nil, force: Bool? = nil
    ) {
        self.service = service
        self.to = to
        self.strategy = strategy
        self.command = command
        self.upstream = upstream
        self.drainTimeoutSeconds = drainTimeoutSeconds
        self.force = force
    }
}

/// One upgrade as `triad upgrade status` shows it.
public struct UpgradeStatus: Sendable, Codable, Equatable {
    public struct Step: Sendable, Codable, Equatable {
        public var name: String
        /// Seconds since the upgrade was requested.
        public var at: Double
        public var detail: String?
    }
    public enum Phase: String, Sendable, Codable, Equatable {
        case running
        /// The new version is the only one; the old one is retired.
        case completed
        /// Nothing changed in the end (health check failed, drain deadline, WF time-out).
        case rolledBack = "rolled-back"
        /// The drain deadline passed and --force retired the old version anyway.
        case forced
        case failed
    }
    public var service: String
    public var from: String
    public var to: String
    public var strategy: String
    public var phase: Phase
    public var steps: [Step]
    /// Traces that ran on the old version and have not completed (the DiffSet), while draining.
    public var diffSet: Int?
    /// Some of the DiffSet's trace ids (at most 10), to look up with `triad mesh audit`.
    public var diffSetSample: [String]?
    /// The DiffSet's size when the old version's trace sets were locked: the transactions it drained.
    public var drainedTransactions: Int?
    /// With --force: the transactions still running on the old version when it was retired.
    public var mayBreak: Int?
    public var message: String?
    public var requestedAt: Double
    /// Seconds from the request to the default switch; to the retirement of the old version
    /// (out of every route, its sidecars and instances told to stop); and to their exit.
    public var switchedAfter: Double?
    public var retiredAfter: Double?
    public var exitedAfter: Double?
}

/// The update controller (docs/mesh.md): one upgrade at a time per
/// service, run in the mesh's control process, every step recorded for `triad upgrade status`.
public actor UpgradeController {
    public enum Refusal: Error, CustomStringConvertible {
        case unknownService(String)
        case busy(String)
        case invalid(String)
        public var description: String {
            switch self {
            case .unknownService(let d), .busy(let d), .invalid(let d): d
            }
        }
    }

    public static let strategies = UpgradeMachine.Strategy.allCases.map(\.rawValue)

    let runtime: MeshRuntime
    let logger: Logger
    private var upgrades: [String: UpgradeStatus] = [:]

    let processesChanged: @Sendable () async -> Void
    /// Started upgrades, run as children of `run()`: they live no longer than the mesh does.
    private let pending: AsyncStream<(Run, String)>
    private let submit: AsyncStream<(Run, String)>.Continuation

    public init(runtime: MeshRuntime, logger: Logger, processesChanged: @escaping @Sendable () async -> Void = {}) {
        self.runtime = runtime
        self.logger = logger
        self.processesChanged = processesChanged
        (pending, submit) = AsyncStream.makeStream()
    }

    /// Runs each started upgrade until it ends, and every one still running is cancelled when
    /// this task is (the mesh is going down). Returns once `stopAccepting` was called and none runs.
    public nonisolated func run() async {
        await withDiscardingTaskGroup { group in
            for await (run, strategy) in pending {
                group.addTask { await run.execute(strategy) }
            }
        }
    }

    /// No upgrade starts after this (the mesh is stopping).
    public nonisolated func stopAccepting() { submit.finish() }

    public func all() -> [UpgradeStatus] { upgrades.values.sorted { $0.requestedAt < $1.requestedAt } }
    public func status(of service: String) -> UpgradeStatus? { upgrades[service] }

    /// The longest drain an upgrade may wait for (a day): anything longer is a mistake, not a plan.
    static let longestDrain: Double = 86_400

    /// Validates and starts an upgrade; it runs on after this returns.
    public func start(_ request: UpgradeRequest) async throws -> UpgradeStatus {
        let strategy = request.strategy ?? "CV"
        if await runtime.plan.plainEnvoy {
            throw Refusal.invalid("this mesh runs on plain Envoy (mesh up --plain-envoy, a benchmark baseline): no trace managers, so no upgrade here")
        }
        guard let canonical = Self.strategies.first(where: { $0.lowercased() == strategy.lowercased() }) else {
            throw Refusal.invalid("unknown strategy \(strategy) (use one of \(Self.strategies.joined(separator: ", ")))")
        }
        guard let routes = runtime.routes.routes(of: request.service) else {
            throw Refusal.unknownService("no service \(request.service) in this mesh (it has \(runtime.routes.current.map(\.service).joined(separator: ", ")))")
        }
        if let running = upgrades[request.service], running.phase == .running {
            throw Refusal.busy(
                "an upgrade of \(request.service) to \(running.to) (\(running.strategy)) is already running; wait for it or see triad upgrade status")
        }
        guard MeshConfigParser.versionName(request.to) else {
            throw Refusal.invalid("\(request.to) is not a version name (lower case letters, digits, '.'; no '-'; at most 63)")
        }
        if let seconds = request.drainTimeoutSeconds, !(seconds.isFinite && seconds > 0 && seconds <= Self.longestDrain) {
            throw Refusal.invalid("drainTimeoutSeconds must be more than 0 and at most \(Int(Self.longestDrain)) (a day), not \(seconds)")
        }
        let from = routes.defaultVersion
        guard request.to != from else { throw Refusal.invalid("\(request.service) already runs \(from)") }
        var source: MeshConfig.Version.Source?
        if let command = request.command, !command.isEmpty {
            source = .command(command)
        } else if let upstream = request.upstream {
            guard let hp = HostPort(upstream) else { throw Refusal.invalid("--upstream must be HOST:PORT, not \(upstream)") }
            source = .upstream(hp)
        }
        if routes.versions.contains(request.to) {
            if source != nil { throw Refusal.invalid("\(request.service) \(request.to) is already in the mesh; drop --command/--upstream") }
        } else if source == nil {
            throw Refusal.invalid(
                "\(request.service) has no version \(request.to) (it has \(routes.versions.joined(separator: ", "))); give its --command or --upstream")
        }
        if routes.versions.count > 2 || (routes.versions.count == 2 && !routes.versions.contains(request.to)) {
            throw Refusal.invalid("\(request.service) runs \(routes.versions.joined(separator: ", ")): an upgrade starts from one version (plus the target)")
        }
        if canonical != "rolling", runtime.envoyConcurrency > 1 {
            // The lock and the pin checks' rounds rely on one ordered log stream per sidecar:
            // Envoy opens one per worker, and a marker travels in only one of them.
            throw Refusal.invalid(
                "\(canonical) needs one Envoy worker per sidecar (the trace-set lock reads a marker from the sidecar's one log stream); unset TRIAD_ENVOY_CONCURRENCY or set it to 1"
            )
        }
        if canonical == "BF", await runtime.plan.pinPropagation != .mesh {
            throw Refusal.invalid("BF holds requests in the mesh's pin check, which needs pinPropagation: mesh")
        }
        let status = UpgradeStatus(
            service: request.service, from: from, to: request.to, strategy: canonical, phase: .running, steps: [],
            diffSet: nil, mayBreak: nil, message: nil, requestedAt: Date().timeIntervalSince1970)
        let drain = Duration.milliseconds(Int64((request.drainTimeoutSeconds ?? 60) * 1000))
        let run = Run(
            controller: self, service: request.service, from: from, to: request.to, source: source,
            drain: drain, force: request.force ?? false, started: ContinuousClock.now)
        upgrades[request.service] = status
        guard case .enqueued = submit.yield((run, canonical)) else {
            upgrades[request.service] = nil
            throw Refusal.busy("the mesh is stopping: no upgrade starts now")
        }
        return status
    }

    // MARK: Progress

    func step(_ service: String, _ name: String, _ detail: String? = nil) {
        guard var s = upgrades[service] else { return }
        s.steps.append(.init(name: name, at: (Date().timeIntervalSince1970 - s.requestedAt).rounded(toPlaces: 3), detail: detail))
        upgrades[service] = s
        logger.info("upgrade step", metadata: ["service": "\(service)", "step": "\(name)", "detail": "\(detail ?? "")"])
    }

    func update(_ service: String, _ body: (inout UpgradeStatus) -> Void) {
        guard var s = upgrades[service] else { return }
        body(&s)
        upgrades[service] = s
    }

    func elapsed(_ service: String) -> Double {
        (Date().timeIntervalSince1970 - (upgrades[service]?.requestedAt ?? 0)).rounded(toPlaces: 3)
    }

    /// Performs one upgrade: the actions its `UpgradeMachine` decides, on the mesh, each step
    /// recorded. Every wait is bounded; every exit leaves a consistent route table.
    struct Run: Sendable {
        let controller: UpgradeController
        let service: String
        let from: String
        let to: String
        let source: MeshConfig.Version.Source?
        let drain: Duration
        let force: Bool
        let started: ContinuousClock.Instant
        var runtime: MeshRuntime { controller.runtime }

        func step(_ name: String, _ detail: String? = nil) async { await controller.step(service, name, detail) }

        func execute(_ strategy: String) async {
            let kind = UpgradeMachine.Strategy(rawValue: strategy) ?? .cv
            if kind != .rolling {
                let runtime = self.runtime
                let service = self.service
                runtime.routes.setBarrier(service, RecordBarrier { await runtime.markerRound(service: service) })
            }
            defer { runtime.routes.setBarrier(service, nil) }
            var machine = UpgradeMachine(strategy: kind, service: service, from: from, to: to, startsNewVersion: source != nil, force: force)
            var outcome = UpgradeMachine.Outcome.done
            while let action = machine.next(outcome) {
                do { outcome = try await perform(action) } catch { outcome = .failed("\(error)") }
            }
        }

        func perform(_ action: UpgradeMachine.Action) async throws -> UpgradeMachine.Outcome {
            switch action {
            case .startVersion:
                if let source {
                    try await runtime.addVersion(service: service, version: to, source: source)
                    await controller.processesChanged()
                    await step("started", "\(service) \(to) is healthy; its pin route is at every caller, the default is still \(from)")
                } else {
                    try await runtime.checkHealthy(service: service, version: to)
                    await step("started", "\(service) \(to) (declared in the mesh file) is healthy")
                }
            case .pushPinRoutes:
                try await runtime.pushRoutes(for: service)
                await step("pin-routes", "pin routes to \(service) \(from) and \(to) at every caller, default \(from)")
            case .setPinRoutes(let on):
                try await runtime.setPinRoutes(service: service, on)
            case .switchDefault(let version):
                try await runtime.setDefault(service: service, version: version)
                if version == to {
                    let after = await controller.elapsed(service)
                    await controller.update(service) { $0.switchedAfter = after }
                    await step("default-switched", "every caller routes unpinned requests to \(service) \(to)")
                }
            case .block(let version, let on):
                try await runtime.setBlocked(service: service, version: version, on)
                if version == from && on {
                    await step("blocked", "\(service) \(from) refuses unpinned requests; callers' sidecars re-route them to \(to)")
                }
            case .lockTraceSet:
                try await runtime.confirmRecordsRead(service: service, version: from)
                let ids = await runtime.instanceIDs(service: service, version: from)
                let locked = runtime.recorder.drain(instances: ids)
                await controller.update(service) {
                    $0.diffSet = locked.diffSet.count
                    $0.drainedTransactions = locked.diffSet.count
                }
                await step(
                    "locked", "\(service) \(from)'s trace set (\(locked.served) traces) locked and shipped to the gateway; DiffSet \(locked.diffSet.count)")
            case .hold:
                runtime.routes.hold(service)
                await step("holding", "requests to \(service) of traces with no past visit wait")
            case .release(let version):
                runtime.routes.release(service, to: version)
                if let version { await step("released", "held requests go to \(service) \(version)") }
            case .note(let name, let detail):
                await step(name, detail)
            case .drain(let version, let fromStart):
                let left = try await drained(version, deadline: fromStart ? started + drain : ContinuousClock.now + drain)
                return .drained(left: left.count)
            case .retire, .retireAtOnce:
                let (controller, service, from) = (self.controller, self.service, self.from)
                let atOnce = action == .retireAtOnce
                try await runtime.removeVersion(service: service, version: from) {
                    let after = await controller.elapsed(service)
                    await controller.update(service) { $0.retiredAfter = after }
                    await controller.step(
                        service, "retired",
                        "\(service) \(from) is out of every route, its sidecars and instances told to stop"
                            + (atOnce ? " (at once: no guarantee)" : ""))
                }
                let exited = await controller.elapsed(service)
                await controller.update(service) { $0.exitedAfter = exited }
                if action == .retire {
                    await step("cleaned", "routes back to the initial shape: \(service) \(to) only; \(from)'s processes exited")
                }
            case .markMayBreak(let n):
                await controller.update(service) { $0.mayBreak = n }
                await step("forced", "--force: retiring \(service) \(from) with \(n) transactions still on it; they may break")
            case .removeNewVersion:
                try await runtime.removeVersion(service: service, version: to)
            case .finish(let phase, let message):
                await finish(phase, message)
            case .abort(let why):
                // Leave a consistent mesh: both versions serve, each trace by its pins.
                runtime.routes.release(service, to: nil)
                try? await runtime.setBlocked(service: service, version: from, false)
                try? await runtime.setPinRoutes(service: service, true)
                let d = runtime.routes.routes(of: service)?.defaultVersion ?? from
                await finish(.failed, "\(why); \(service) keeps both versions with pin routes (default \(d))")
            }
            return .done
        }

        func finish(_ phase: UpgradeStatus.Phase, _ message: String) async {
            await controller.processesChanged()
            await controller.update(service) { s in
                s.phase = phase
                s.message = message
            }
            await step(phase.rawValue, message)
        }

        /// Waits until every trace that ran on `version` has completed at the gateway and the
        /// trace manager has read every record logged before (a marker in the same stream).
        /// Returns the DiffSet left at the deadline (empty: drained).
        func drained(_ version: String, deadline: ContinuousClock.Instant) async throws -> [String] {
            let ids = await runtime.instanceIDs(service: service, version: version)
            let recorder = runtime.recorder
            var last = -1
            while true {
                let seen = recorder.recordCount
                var d = recorder.drain(instances: ids)
                if d.diffSet.isEmpty && d.inFlight == 0 {
                    try await runtime.confirmRecordsRead(service: service, version: version)
                    d = runtime.recorder.drain(instances: ids)
                    if d.diffSet.isEmpty && d.inFlight == 0 {
                        await controller.update(service) { $0.diffSet = 0 }
                        return []
                    }
                }
                if d.diffSet.count != last {
                    last = d.diffSet.count
                    let size = last
                    let sample = Array(d.diffSet.prefix(10))
                    await controller.update(service) {
                        $0.diffSet = size
                        $0.diffSetSample = sample
                    }
                }
                if ContinuousClock.now > deadline { return d.diffSet }
                // Only a new record (a visit ending, a transaction completing) can shrink the
                // DiffSet: wait for one, or for the deadline. Under load records come in
                // thousands a second, so look again at most every 20 ms.
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { await recorder.waitForRecords(after: seen) }
                    group.addTask { try? await Task.sleep(until: deadline) }
                    await group.next()
                    group.cancelAll()
                }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
    }
}

extension Double {
    func rounded(toPlaces places: Int) -> Double {
        let f = Foundation.pow(10.0, Double(places))
        return (self * f).rounded() / f
    }
}
