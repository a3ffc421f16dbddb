import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import TriadCore

/// The telemetry path (docs/mqtt.md), shared by MQTT and `POST …/telemetry`. It stays out of the
/// registry's write path: a sample is checked, forwarded as an `io.triad.telemetry` event at once,
/// and buffered; every 100 ms (`run`) the buffer goes to the history table in one batch, and once
/// a second each resource that reported gets one status write with its latest sample, so `status.telemetry`
/// changes at most once per second per resource however fast a device sends.
public final class TelemetryIngest: Service, Sendable {
    let registry: Registry
    let forwarder: (any TelemetryPublisher)?
    let retention: Duration
    let logger: Logger
    private let state: Mutex<State>
    /// Telemetry events carry ids of their own (they are not in the outbox): `<boot>-<sequence>`,
    /// unique and increasing within one server process.
    private let bootID = String(UInt64(Date().timeIntervalSince1970 * 1000), radix: 36)
    private let sequence = Atomic<Int>(0)

    struct State {
        var history: [TelemetrySample] = []
        var latest: [String: TelemetrySample] = [:]
        var probeStates: [String: Telemetry.ProbeState] = [:]
        var limiter: RateLimiter
        /// Resource kinds by name, looked up at most every few seconds per resource, so a flood
        /// of samples does not become a flood of registry reads.
        var kinds: [String: (kind: ResourceKind?, checked: ContinuousClock.Instant)] = [:]
        /// How many of `kinds` say "no such resource".
        var unknownNames = 0
    }

    public static let maxUnknownCached = 1000

    /// How many rate buckets and cached kinds are held (tests check they stay bounded).
    public var trackedNames: (buckets: Int, kinds: Int) { state.withLock { ($0.limiter.count, $0.kinds.count) } }

    /// `rate`/`burst`: samples per second each resource may send (a token bucket); beyond that
    /// they are rejected as `rate-limited`, so one flooding device cannot starve the others.
    public init(registry: Registry, forwarder: (any TelemetryPublisher)?, retention: Duration, rate: Double = 100, burst: Double = 200, logger: Logger) {
        self.registry = registry
        self.forwarder = forwarder
        self.retention = retention
        self.logger = logger
        state = Mutex(State(limiter: RateLimiter(rate: rate, burst: burst)))
    }

    /// An MQTT message on one of the subscribed topics. Never throws: a bad one is counted.
    public func receive(topic: String, payload: [UInt8]) async {
        guard let (name, channel) = Telemetry.parseTopic(topic) else { return reject(.malformedTopic, source: "mqtt") }
        do {
            switch channel {
            case .telemetry: _ = try await accept(resource: name, payload: payload, source: "mqtt")
            case .probe: try await probe(resource: name, payload: payload)
            }
        } catch {
            reject(error, source: "mqtt")
        }
    }

    // Counters made once: looking one up per sample costs more than the sample's own work.
    static let samplesBySource = ["mqtt", "http"].reduce(into: [String: Counter]()) {
        $0[$1] = Counter(label: "triad_telemetry_samples_total", dimensions: [("source", $1)])
    }
    static func samples(_ source: String) -> Counter {
        samplesBySource[source] ?? Counter(label: "triad_telemetry_samples_total", dimensions: [("source", source)])
    }
    static let rejected = TelemetryRejection.allCases.reduce(into: [TelemetryRejection: Counter]()) {
        $0[$1] = Counter(label: "triad_telemetry_rejected_total", dimensions: [("reason", $1.rawValue)])
    }

    /// Checks and takes one sample; throws why not (the caller counts nothing: this does).
    public func accept(resource name: String, payload: [UInt8], source: String) async throws(TelemetryRejection) -> TelemetrySample {
        do throws(TelemetryRejection) {
            let sample = try Telemetry.parseSample(payload, resource: name, receivedAt: Date())
            // Existence first: only resources that exist get a rate bucket, so a flood of made-up
            // names costs no memory.
            guard let kind = await kind(of: name) else { throw TelemetryRejection.unknownResource }
            let now = Double(DispatchTime.now().uptimeNanoseconds) / 1e9
            guard state.withLock({ $0.limiter.allow(name, now: now) }) else { throw TelemetryRejection.rateLimited }
            state.withLock {
                $0.history.append(sample)
                $0.latest[name] = sample
            }
            if let forwarder {
                let id = "\(bootID)-\(sequence.add(1, ordering: .relaxed).newValue)"
                forwarder.forward(
                    routingKey: Telemetry.routingKey(resource: name, kind: kind),
                    body: Telemetry.cloudEvent(sample, kind: kind, id: id), messageID: id)
            }
            Self.samples(source).increment()
            return sample
        } catch {
            reject(error, source: source)
            throw error
        }
    }

    /// `online`/`offline` on `…/probe` (probes set `offline` as their MQTT will).
    func probe(resource name: String, payload: [UInt8]) async throws(TelemetryRejection) {
        let probeState = try Telemetry.parseProbeState(payload)
        guard await kind(of: name) != nil else { throw .unknownResource }
        state.withLock { $0.probeStates[name] = probeState }
    }

    func reject(_ reason: TelemetryRejection, source: String) {
        Self.rejected[reason]?.increment()
        logger.debug("telemetry rejected", metadata: ["reason": "\(reason.rawValue)", "source": "\(source)"])
    }

    private func kind(of name: String) async -> ResourceKind? {
        let now = ContinuousClock.now
        if let cached = state.withLock({ $0.kinds[name] }), now - cached.checked < .seconds(5) { return cached.kind }
        let kind = (try? await registry.find(name))?.kind
        state.withLock {
            if kind == nil {
                // Unknown names are remembered only a few at a time (they may be random garbage).
                if $0.unknownNames >= Self.maxUnknownCached {
                    $0.kinds = $0.kinds.filter { $0.value.kind != nil }
                    $0.unknownNames = 0
                }
                $0.unknownNames += 1
            }
            if $0.kinds.count > 100_000 {
                $0.kinds.removeAll()
                $0.unknownNames = 0
            }
            $0.kinds[name] = (kind, now)
        }
        return kind
    }

    /// Once a second: history to the database, latest samples and probe states to the status.
    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            var lastCompaction = ContinuousClock.now
            var lastStatus = ContinuousClock.now
            while !Task.isCancelled {
                // History every 100 ms in small batches (a big one each second would stall the
                // samples behind it); statuses once a second.
                try await Task.sleep(for: .milliseconds(100))
                let statuses = ContinuousClock.now - lastStatus >= .seconds(1)
                if statuses { lastStatus = ContinuousClock.now }
                await self.flush(statuses: statuses)
                if ContinuousClock.now - lastCompaction > .seconds(60) {
                    lastCompaction = ContinuousClock.now
                    // Quiet senders' buckets and stale kinds go; they are made again when needed.
                    let now = Double(DispatchTime.now().uptimeNanoseconds) / 1e9
                    let instant = ContinuousClock.now
                    self.state.withLock { state in
                        state.limiter.evictIdle(now: now)
                        state.kinds = state.kinds.filter { instant - $0.value.checked < .seconds(5) }
                        state.unknownNames = state.kinds.values.filter { $0.kind == nil }.count
                    }
                    let cutoff = Timestamp.format(Date().addingTimeInterval(-Double(self.retention.components.seconds)))
                    if let removed = try? await self.registry.telemetryHistory.compactTelemetry(receivedBefore: cutoff), removed > 0 {
                        Counter(label: "triad_telemetry_compacted_total").increment(by: removed)
                    }
                }
            }
        }
        await flush(statuses: true)  // what arrived before shutdown
    }

    /// Writes the buffered history, and with `statuses` the latest sample and probe state of
    /// each resource that reported since the last status round.
    func flush(statuses: Bool) async {
        let (history, latest, probes) = state.withLock { s in
            defer {
                s.history.removeAll(keepingCapacity: true)
                if statuses {
                    s.latest.removeAll()
                    s.probeStates.removeAll()
                }
            }
            return (s.history, statuses ? s.latest : [:], statuses ? s.probeStates : [:])
        }
        if !history.isEmpty {
            do { try await registry.telemetryHistory.appendTelemetry(history) } catch {
                Counter(label: "triad_telemetry_dropped_total", dimensions: [("stage", "history")]).increment(by: history.count)
                logger.warning("could not write telemetry history", metadata: ["samples": "\(history.count)", "error": "\(error)"])
            }
        }
        for name in Set(latest.keys).union(probes.keys) {
            await writeStatus(name, latest: latest[name], probe: probes[name])
        }
    }

    /// Records what was observed: the latest sample (`lastSeen` is when the server received it,
    /// so device clocks do not matter) and the probe's own announcement as condition
    /// `ProbeConnected`. The controller judges `probePhase` from these.
    private func writeStatus(_ name: String, latest: TelemetrySample?, probe: Telemetry.ProbeState?) async {
        var patch: [String: JSONValue] = [:]
        if let latest, let values = try? JSONCoding.parse(latest.values) {
            patch["telemetry"] = .object(["lastSeen": .string(latest.receivedAt), "values": values])
        }
        if let probe {
            let current = try? await registry.find(name)?.decode()
            var conditions = current?.status?.conditions ?? []
            conditions.set(
                type: "ProbeConnected", status: probe == .online ? .true : .false,
                reason: probe == .online ? "ProbeOnline" : "ProbeOffline",
                message: probe == .online ? nil : "the probe announced offline (or its connection died)", at: Timestamp.format(Date()))
            patch["conditions"] = (try? conditions.patch(only: "ProbeConnected")) ?? .array([])
        }
        do {
            _ = try await registry.writeStatus(name, .merge(.object(patch)), precondition: nil)
        } catch RegistryError.notFound {
            // Deleted since the sample arrived: nothing to report on.
        } catch {
            logger.warning("could not update status.telemetry", metadata: ["resource": "\(name)", "error": "\(error)"])
        }
    }
}
