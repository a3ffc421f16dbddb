import Foundation
import Synchronization

/// The mesh's recording side: every instance's trace manager, the gateway's, the pins learned
/// for `pinPropagation: mesh`, and the refusal counters. Fed by the access-log stream; read by
/// the authz checks (on the request path, so one short lock) and by the control API.
public final class MeshRecorder: Sendable {
    struct State: Sendable {
        var managers: [String: TraceManager] = [:]  // by sidecar id
        var gateway = GatewayTraceManager()
        var pins = PinTable()
        var unknownPinRefusals = 0
        var records = 0
        var unknownSources = 0
        var blockedRefusals = 0
        /// Markers read and not yet asked about ("<instance> <marker>"); several may be in
        /// flight at once (the controller's lock and the pin checks' rounds).
        var markers = Set<String>()
        /// The service behind the gateway: its inbound request spans the whole transaction.
        var entryService: String?
        /// What `prune` forgot, kept for the audit: counts, every inconsistent trace (up to a
        /// bound) and the first failures.
        var archivedTransactions = 0
        var archivedInconsistentTraces = 0
        var archivedInconsistent: [AuditReport.Inconsistent] = []
        var archivedFailed = 0
        var archivedFailures: [AuditReport.Failure] = []
        var recordsSincePrune = 0
        /// BF: held requests waiting for their trace's pin to one service, by trace.
        var pinWaiters: [String: [PinWaiter]] = [:]
        /// The update controller waiting for a marker ("<instance> <marker>") to be read.
        var markerWaiters: [String: CheckedContinuation<Void, Never>] = [:]
        /// Tasks waiting for the next record (a drain watching its DiffSet), by waiter id.
        var recordWaiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0
    }
    struct PinWaiter: Sendable {
        let id: Int
        let service: String
        let continuation: CheckedContinuation<Void, Never>
    }
    /// A completed transaction's visits are freed this long after it ended (the audit keeps
    /// its count); a drain only asks about transactions that have not completed.
    public static let retentionSeconds: Double = 300
    static let pruneEveryRecords = 20_000
    static let archivedInconsistentKept = 10_000
    private let state = Mutex(State())

    /// `entryService`: the service behind the gateway; only its sidecars log request ends
    /// (EnvoyConfig.inboundHCM). Without one, every instance is taken to log them.
    public init(instances: [(id: String, service: String, version: String)], entryService: String? = nil) {
        state.withLock { s in
            s.entryService = entryService
            for i in instances { s.managers[i.id] = Self.manager(service: i.service, version: i.version, s) }
        }
    }

    /// Adds the trace manager of an instance started later (an upgrade's new version).
    public func addInstance(id: String, service: String, version: String) {
        state.withLock { s in
            if s.managers[id] == nil { s.managers[id] = Self.manager(service: service, version: version, s) }
        }
    }

    static func manager(service: String, version: String, _ s: State) -> TraceManager {
        TraceManager(service: service, version: version, logsEnds: s.entryService.map { $0 == service } ?? true)
    }

    public func ingest(_ record: LogRecord) {
        // Read outside the lock: the authz checks on the request path wait for it.
        let access = AccessRecord(record, now: Date().timeIntervalSince1970)
        let trace = access.trace
        let pinned = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            Self.ingest(access, into: &s)
            var woken: [CheckedContinuation<Void, Never>] = []
            if !s.recordWaiters.isEmpty {
                woken = Array(s.recordWaiters.values)
                s.recordWaiters.removeAll()
            }
            // A marker someone waits for is theirs (read once); they go on outside the lock.
            if !s.markerWaiters.isEmpty {
                let read = s.markerWaiters.keys.filter { s.markers.contains($0) }
                if !read.isEmpty {
                    return woken
                        + read.compactMap { key in
                            s.markers.remove(key)
                            return s.markerWaiters.removeValue(forKey: key)
                        }
                }
            }
            // Held requests of this trace whose pin is now known go on.
            guard !s.pinWaiters.isEmpty, let trace, let waiting = s.pinWaiters[trace] else { return woken }
            var ready: [CheckedContinuation<Void, Never>] = []
            var later: [PinWaiter] = []
            for w in waiting {
                if s.pins.pin(trace, w.service) != nil { ready.append(w.continuation) } else { later.append(w) }
            }
            s.pinWaiters[trace] = later.isEmpty ? nil : later
            return woken + ready
        }
        for c in pinned { c.resume() }
    }

    private func newWaiterID() -> Int {
        state.withLock { s in
            defer { s.nextWaiter += 1 }
            return s.nextWaiter
        }
    }

    /// How many records have been read: the watermark `waitForRecords(after:)` waits beyond.
    public var recordCount: Int { state.withLock { $0.records } }

    /// Returns once a record beyond the `count`-th has been read (at once if one has), or when
    /// the caller is cancelled.
    public func waitForRecords(after count: Int) async {
        let id = newWaiterID()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.records > count || Task.isCancelled { return true }
                    s.recordWaiters[id] = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            state.withLock { $0.recordWaiters.removeValue(forKey: id) }?.resume()
        }
    }

    /// Returns once `trace` has a pin to `service` (at once if it has), or when the caller is cancelled.
    public func waitForPin(trace rawTrace: String, service: String) async {
        let trace = rawTrace.lowercased()
        let id = newWaiterID()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.pins.pin(trace, service) != nil || Task.isCancelled { return true }
                    s.pinWaiters[trace, default: []].append(PinWaiter(id: id, service: service, continuation: c))
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            let cancelled = state.withLock { s -> CheckedContinuation<Void, Never>? in
                guard var waiting = s.pinWaiters[trace], let i = waiting.firstIndex(where: { $0.id == id }) else { return nil }
                let w = waiting.remove(at: i)
                s.pinWaiters[trace] = waiting.isEmpty ? nil : waiting
                return w.continuation
            }
            cancelled?.resume()
        }
    }

    private static func ingest(_ r: AccessRecord, into s: inout State) {
        s.records += 1
        s.recordsSincePrune += 1
        if s.recordsSincePrune >= Self.pruneEveryRecords {
            s.recordsSincePrune = 0
            Self.prune(&s, endedBefore: r.receivedAt - Self.retentionSeconds)
        }
        switch r.source {
        case .inbound(let id):
            // Mutated in place through the dictionary: a copy taken out and put back would
            // copy the whole TraceidSet on every record (copy-on-write; seen in perf).
            guard let service = s.managers[id]?.service, let version = s.managers[id]?.version else {
                s.unknownSources += 1
                return
            }
            guard let trace = r.trace else { return }
            switch r.route {
            case .marker:
                // The update controller's marker: everything this sidecar logged before it has
                // now been read (one ordered stream per Envoy worker). Not a visit.
                s.markers.insert(id + " " + trace)
            case .blocked:
                // Refused by a blocked version (CV) and re-routed by the caller: never reached
                // the version, not a visit (docs/mesh.md).
                if r.isStart { s.blockedRefusals += 1 }
            case .unknownPin, .other:
                if r.isStart {
                    if s.managers[id]!.admitted(trace, at: r.start) { s.pins.learn(trace, service, version) }
                } else {
                    s.managers[id]!.ended(trace, at: r.start + r.durationMs / 1000)
                    // An end record without a start (lost) still teaches the pin.
                    s.pins.learn(trace, service, version)
                }
            }
        case .gateway:
            guard let trace = r.trace else {
                if !r.isStart, r.route == .unknownPin { s.unknownPinRefusals += 1 }
                return
            }
            if r.isStart {
                s.gateway.started(trace)
                return
            }
            if r.route == .unknownPin { s.unknownPinRefusals += 1 }
            // A request the gateway itself refused never reached a version: not a transaction.
            let refused = r.deniedByAuthz || r.route == .unknownPin
            s.gateway.ended(trace, start: r.gatewayStart, durationMs: r.durationMs, status: r.status, detail: r.detail, refused: refused)
        case .outbound:
            if r.route == .unknownPin { s.unknownPinRefusals += 1 }
        case .unknown:
            s.unknownSources += 1
        }
    }

    /// Trace ids compare in lower case; "-" is Envoy's "absent".
    static func normalize(_ trace: String?) -> String? {
        guard var t = trace else { return nil }
        // Ids nearly always arrive trimmed and in lower case: Foundation's trimming, run on every
        // record, was an eighth of the control process's time.
        if t.utf8.contains(where: { $0 <= 0x20 || $0 >= 0x80 }) { t = t.trimmingCharacters(in: .whitespaces) }
        guard !t.isEmpty, t != "-" else { return nil }
        return t.utf8.contains(where: { $0 >= 0x41 && $0 <= 0x5A }) ? t.lowercased() : t
    }

    public func pin(trace: String, service: String) -> String? {
        state.withLock { $0.pins.pin(trace.lowercased(), service) }
    }

    public func learnExplicit(trace: String, service: String, version: String) {
        state.withLock { $0.pins.learn(trace.lowercased(), service, version) }
    }

    public func countUnknownPinRefusal() { state.withLock { $0.unknownPinRefusals += 1 } }

    /// Returns once the marker `id` sent through `instance`'s inbound sidecar has been read
    /// (and takes it, as `markerRead` does), or when the caller is cancelled.
    public func waitForMarker(instance: String, id: String) async {
        let key = instance + " " + id.lowercased()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.markers.remove(key) != nil || Task.isCancelled { return true }
                    s.markerWaiters[key] = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            state.withLock { $0.markerWaiters.removeValue(forKey: key) }?.resume()
        }
    }

    /// Whether the marker `id` sent through `instance`'s inbound sidecar has been read (a
    /// marker answers true once).
    public func markerRead(instance: String, id: String) -> Bool {
        state.withLock { $0.markers.remove(instance + " " + id.lowercased()) != nil }
    }

    /// What still runs on some instances (docs/mesh.md): the traces they served (their
    /// TraceidSets) that the gateway has not seen complete (the DiffSet), and their requests
    /// in flight.
    public struct Drain: Sendable, Equatable {
        public var served: Int
        public var diffSet: [String]
        public var inFlight: Int
    }

    /// A transaction completed when the gateway logged its end, or when every request of it
    /// to the service behind the gateway (the root sub-transaction) has ended. The second
    /// covers a gateway record that Envoy lost (its fluentd logger drops an entry logged
    /// while its connection is still being set up: `entries_lost`, seen on the first
    /// transaction after `mesh up`).
    static func isComplete(_ trace: String, _ s: State) -> Bool {
        if s.gateway.completed[trace] != nil { return true }
        guard let entry = s.entryService else { return false }
        var seen = false
        for m in s.managers.values where m.service == entry {
            guard let v = m.visits[trace] else { continue }
            if m.inFlight[trace] != nil || v.end == nil { return false }
            seen = true
        }
        return seen
    }

    public func drain(instances: [String]) -> Drain {
        state.withLock { s in
            var served = Set<String>()
            var inFlight = 0
            for id in instances {
                guard let m = s.managers[id] else { continue }
                served.formUnion(m.visits.keys)
                inFlight += m.inFlight.values.reduce(0, +)
            }
            let diff = served.filter { !Self.isComplete($0, s) }
            return Drain(served: served.count, diffSet: diff.sorted(), inFlight: inFlight)
        }
    }

    public struct Counters: Sendable, Codable, Equatable {
        public var records: Int
        public var unknownPinRefusals: Int
        public var completedTransactions: Int
        public var unknownSources: Int
        public var blockedRefusals: Int
    }

    public var counters: Counters {
        state.withLock {
            Counters(
                records: $0.records, unknownPinRefusals: $0.unknownPinRefusals, completedTransactions: $0.gateway.completed.count,
                unknownSources: $0.unknownSources,
                blockedRefusals: $0.blockedRefusals)
        }
    }

    public func visits(instance: String) -> [Visit] {
        state.withLock { Array(($0.managers[instance]?.visits ?? [:]).values) }
    }

    /// Forgets the transactions the gateway saw complete before `cutoff` (epoch seconds) and
    /// that run nowhere any more; returns how many. Keeps memory bounded on a mesh that runs
    /// for weeks; the audit's totals are unchanged.
    @discardableResult
    public func prune(endedBefore cutoff: Double) -> Int {
        state.withLock { Self.prune(&$0, endedBefore: cutoff) }
    }

    @discardableResult
    static func prune(_ s: inout State, endedBefore cutoff: Double) -> Int {
        var done = Set(s.gateway.completed.compactMap { $0.value.end < cutoff ? $0.key : nil })
        guard !done.isEmpty else { return 0 }
        let ids = Array(s.managers.keys)
        for id in ids { done.subtract(s.managers[id]!.inFlight.keys) }
        var versions: [String: [String: Set<String>]] = [:]
        for id in ids {
            let (service, version) = (s.managers[id]!.service, s.managers[id]!.version)
            for trace in done where s.managers[id]!.visits[trace] != nil {
                versions[trace, default: [:]][service, default: []].insert(version)
                s.managers[id]!.forget(trace)
            }
        }
        for trace in done.sorted() {
            let bad = (versions[trace] ?? [:]).filter { $0.value.count > 1 }
            if !bad.isEmpty {
                s.archivedInconsistentTraces += 1
                for (service, vs) in bad.sorted(by: { $0.key < $1.key }) where s.archivedInconsistent.count < archivedInconsistentKept {
                    s.archivedInconsistent.append(.init(traceId: trace, service: service, versions: vs.sorted()))
                }
            }
            if let c = s.gateway.completed[trace], let detail = c.detail {
                s.archivedFailed += 1
                if s.archivedFailures.count < AuditReport.failuresListed {
                    s.archivedFailures.append(.init(traceId: trace, status: c.status, detail: detail))
                }
            }
            s.gateway.forget(trace)
        }
        s.archivedTransactions += done.count
        return done.count
    }

    /// Every transaction seen (at the gateway or at any instance), and those that ran
    /// sub-transactions on two versions of one service.
    public func audit() -> AuditReport {
        state.withLock { s in
            var versions: [String: [String: Set<String>]] = [:]  // trace → service → versions
            for m in s.managers.values {
                for trace in m.visits.keys { versions[trace, default: [:]][m.service, default: []].insert(m.version) }
            }
            var all = Set(versions.keys)
            all.formUnion(s.gateway.completed.keys)
            var bad: [AuditReport.Inconsistent] = []
            for (trace, services) in versions {
                for (service, vs) in services where vs.count > 1 {
                    bad.append(.init(traceId: trace, service: service, versions: vs.sorted()))
                }
            }
            bad.sort { ($0.traceId, $0.service) < ($1.traceId, $1.service) }
            let failures = s.gateway.completed.filter { $0.value.detail != nil }.sorted { ($0.value.start, $0.key) < ($1.value.start, $1.key) }
                .map { AuditReport.Failure(traceId: $0.key, status: $0.value.status, detail: $0.value.detail ?? "-") }
            return AuditReport(
                transactions: all.count + s.archivedTransactions,
                inconsistent: Set(bad.map(\.traceId)).count + s.archivedInconsistentTraces,
                traces: s.archivedInconsistent + bad,
                failed: failures.count + s.archivedFailed,
                failures: Array((s.archivedFailures + failures).prefix(AuditReport.failuresListed)))
        }
    }
}

/// One access-log record as the recorder reads it, parsed before its lock is taken.
struct AccessRecord: Sendable, Equatable {
    enum Source: Sendable, Equatable {
        /// An instance's inbound sidecar (tag `in.<sidecar id>`): admissions and visits.
        case inbound(sidecar: String)
        /// The gateway (tag `gw`): completed transactions.
        case gateway
        /// A caller's outbound sidecar (tag `out.<…>`): only its refusals count.
        case outbound
        case unknown
    }
    /// The routes Triad's Envoy configuration names, by what they mean to the recorder.
    enum Route: Sendable, Equatable { case marker, blocked, unknownPin, other }

    var source: Source
    var trace: String?
    var route: Route
    /// The record of a request's admission (`DownstreamStart`), not of its end.
    var isStart: Bool
    var startField: Double?
    var durationMs: Double
    var status: Int
    var detail: String?
    var receivedAt: Double

    init(_ record: LogRecord, now: Double) {
        let f = record.fields
        if record.tag.hasPrefix("in.") {
            source = .inbound(sidecar: String(record.tag.dropFirst(3)))
        } else if record.tag == "gw" {
            source = .gateway
        } else if record.tag.hasPrefix("out.") {
            source = .outbound
        } else {
            source = .unknown
        }
        trace = MeshRecorder.normalize(f["t"])
        switch f["r"] {
        case EnvoyConfig.markerRoute?: route = .marker
        case EnvoyConfig.blockedRoute?: route = .blocked
        case EnvoyConfig.unknownPinRoute?: route = .unknownPin
        default: route = .other
        }
        isStart = f["k"] == "DownstreamStart"
        startField = Double(f["s"] ?? "")
        durationMs = Double(f["d"] ?? "") ?? 0
        status = Int(f["c"] ?? "") ?? 0
        detail = f["x"]
        receivedAt = now
    }

    /// When a visit started. Sidecars send no times (EnvoyConfig.inboundHCM): the receiver's
    /// clock is close enough.
    var start: Double { startField ?? receivedAt }
    /// When a transaction started, as the gateway logged it.
    var gatewayStart: Double { startField ?? 0 }
    var deniedByAuthz: Bool { detail == "ext_authz_denied" }
}
