import Foundation
import Synchronization

/// A visit of one trace to one instance: admitted at `start`, ended at `end` (nil while in flight).
public struct Visit: Sendable, Equatable, Codable {
    public var traceId: String
    public var service: String
    public var version: String
    public var start: Double
    public var end: Double?
    /// Requests of this trace the instance served (a trace may call a service more than once).
    public var requests: Int
}

/// The trace manager of one instance (docs/mesh.md): the traces it served (its TraceidSet),
/// each recorded when a request is admitted, completed when its last request ends.
public struct TraceManager: Sendable {
    public let service: String
    public let version: String
    public private(set) var visits: [String: Visit] = [:]
    public private(set) var inFlight: [String: Int] = [:]
    /// Whether this instance's sidecar logs request ends (the entry service's do,
    /// EnvoyConfig.inboundHCM); without them nothing here is counted in flight.
    public let logsEnds: Bool

    public init(service: String, version: String, logsEnds: Bool = true) {
        self.service = service
        self.version = version
        self.logsEnds = logsEnds
    }

    /// Returns true when this is the trace's first visit here.
    @discardableResult
    public mutating func admitted(_ trace: String, at time: Double) -> Bool {
        if logsEnds { inFlight[trace, default: 0] += 1 }
        if var v = visits[trace] {
            v.requests += 1
            visits[trace] = v
            return false
        }
        visits[trace] = Visit(traceId: trace, service: service, version: version, start: time, end: nil, requests: 1)
        return true
    }

    /// Frees a trace that completed long ago (MeshRecorder.prune).
    mutating func forget(_ trace: String) {
        visits[trace] = nil
        inFlight[trace] = nil
    }

    public mutating func ended(_ trace: String, at time: Double) {
        if let n = inFlight[trace] { inFlight[trace] = n > 1 ? n - 1 : nil }
        if var v = visits[trace] {
            v.end = max(v.end ?? time, time)
            visits[trace] = v
        } else {
            // The start record was lost (e.g. the control plane restarted): keep what we know.
            visits[trace] = Visit(traceId: trace, service: service, version: version, start: time, end: time, requests: 1)
        }
    }
}

/// The gateway's trace manager: the transactions that completed (docs/mesh.md).
public struct GatewayTraceManager: Sendable {
    public struct Completion: Sendable, Equatable {
        public var start: Double
        public var end: Double
        public var status: Int
        /// Envoy's response code details (`%RESPONSE_CODE_DETAILS%`), kept for failures only.
        public var detail: String?
    }
    public private(set) var completed: [String: Completion] = [:]
    /// Requests of a trace at the gateway that have arrived and not ended: a transaction that
    /// enters again (an agent calling another through Triad) completes when the count is back
    /// to zero. A trace whose arrival record was lost completes at its first end, as before
    /// arrivals were logged.
    public private(set) var open: [String: Int] = [:]

    public mutating func started(_ trace: String) { open[trace, default: 0] += 1 }

    /// A request of `trace` ended at the gateway; `refused`: the gateway answered it itself (no
    /// version saw it), so it completes nothing on its own.
    public mutating func ended(_ trace: String, start: Double, durationMs: Double, status: Int, detail: String? = nil, refused: Bool = false) {
        if let n = open[trace] {
            if n > 1 {
                open[trace] = n - 1
                return
            }
            open[trace] = nil
        }
        if refused { return }
        completed(trace, start: start, durationMs: durationMs, status: status, detail: detail)
    }

    public mutating func completed(_ trace: String, start: Double, durationMs: Double, status: Int, detail: String? = nil) {
        let failed = !(100..<500).contains(status)
        completed[trace] = Completion(start: start, end: start + durationMs / 1000, status: status, detail: failed ? (detail ?? "-") : nil)
    }

    mutating func forget(_ trace: String) {
        completed[trace] = nil
        open[trace] = nil
    }
}

/// `triad mesh audit --json` (docs/mesh.md).
public struct AuditReport: Sendable, Codable, Equatable {
    public struct Inconsistent: Sendable, Codable, Equatable {
        public var traceId: String
        public var service: String
        public var versions: [String]
        /// The ledger's invocations of this transaction (`triad mesh audit --invocations`).
        public var invocations: [String]?
        public init(traceId: String, service: String, versions: [String]) {
            self.traceId = traceId
            self.service = service
            self.versions = versions
        }
    }
    /// A transaction the gateway answered with a 5xx (or no status), and why in Envoy's words
    /// (`via_upstream`: the application's own answer; anything else: the mesh's).
    public struct Failure: Sendable, Codable, Equatable {
        public var traceId: String
        public var status: Int
        public var detail: String
        /// The ledger's invocations of this transaction (`triad mesh audit --invocations`).
        public var invocations: [String]?
        public init(traceId: String, status: Int, detail: String) {
            self.traceId = traceId
            self.status = status
            self.detail = detail
        }
    }
    public var transactions: Int
    public var inconsistent: Int
    public var traces: [Inconsistent]
    /// Transactions that failed at the gateway; `failures` lists the first `failuresListed`.
    public var failed: Int
    public var failures: [Failure]
    public static let failuresListed = 100

    public init(transactions: Int, inconsistent: Int, traces: [Inconsistent], failed: Int = 0, failures: [Failure] = []) {
        self.transactions = transactions
        self.inconsistent = inconsistent
        self.traces = traces
        self.failed = failed
        self.failures = failures
    }
}

/// The pins a trace has earned: the version of each service it was admitted to (or was pinned
/// to explicitly at the gateway). First one wins: a trace never moves to another version.
/// Two generations bound the memory: a trace unseen for two rotations is forgotten.
struct PinTable: Sendable {
    private var current: [String: [String: String]] = [:]
    private var previous: [String: [String: String]] = [:]
    let rotateAt: Int

    init(rotateAt: Int = 200_000) { self.rotateAt = rotateAt }

    func pin(_ trace: String, _ service: String) -> String? {
        current[trace]?[service] ?? previous[trace]?[service]
    }

    mutating func learn(_ trace: String, _ service: String, _ version: String) {
        if current[trace] == nil, let old = previous[trace] { current[trace] = old }
        if current[trace]?[service] == nil { current[trace, default: [:]][service] = version }
        if current.count >= rotateAt {
            previous = current
            current = [:]
        }
    }
}
