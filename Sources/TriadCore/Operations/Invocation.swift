import Foundation

/// Where an invocation is: `Pending → Running → Succeeded | Failed | TimedOut`.
public enum InvocationState: String, Codable, Sendable, CaseIterable {
    case pending = "Pending"
    case running = "Running"
    case succeeded = "Succeeded"
    case failed = "Failed"
    case timedOut = "TimedOut"

    public var isFinal: Bool { self == .succeeded || self == .failed || self == .timedOut }
}

/// One call of a resource's operation: the ledger's record of who used what, when, at what
/// price. `price` is the operation's price at the time of the call; `charged` is what the
/// caller owes for it (the price when the call succeeded, else 0), and what ledger totals sum.
public struct Invocation: Codable, Sendable, Equatable {
    public var id: String
    public var resource: String
    public var operation: String
    /// The token name of the caller.
    public var caller: String
    public var price: Double
    public var charged: Double
    public var state: InvocationState
    /// The upstream's HTTP status, when it answered.
    public var httpStatus: Int?
    /// Why a call did not succeed (`UpstreamError`, `UpstreamUnreachable`, `Timeout`,
    /// `HostNotAllowed`, `ServerRestarted`), with a message for people.
    public var reason: String?
    public var message: String?
    public var startedAt: String
    public var finishedAt: String?
    /// The trace Triad sent upstream (`x-b3-traceid`, and in `traceparent`), so a mesh audit
    /// joins to the ledger.
    public var traceId: String
    public var traceparent: String
    /// The server that performs the call (a restarted server fails what it left unfinished).
    public var node: String
    /// The caller's invocation this one was made for (a person's operation calling the device's),
    /// proven by the link its upstream got (`Triad-Invocation`). Its price is charged to the
    /// parent, so a ledger total counts the call once.
    public var parent: String?
    /// The ledger's order (newest first): the revision of the `invoked` event. Not part of the document.
    public var sequence: Int64 = 0

    enum CodingKeys: String, CodingKey {
        case id, resource, operation, caller, price, charged, state, httpStatus, reason, message, startedAt, finishedAt, traceId, traceparent, node, parent
    }

    public init(
        id: String, resource: String, operation: String, caller: String, price: Double, state: InvocationState,
        startedAt: String, traceId: String, traceparent: String, node: String
    ) {
        self.id = id
        self.resource = resource
        self.operation = operation
        self.caller = caller
        self.price = price
        self.charged = 0
        self.state = state
        self.startedAt = startedAt
        self.traceId = traceId
        self.traceparent = traceparent
        self.node = node
    }

    /// The record after the call ended; only a success is charged.
    public func finished(_ state: InvocationState, httpStatus: Int?, reason: String?, message: String?, at time: String) -> Invocation {
        var next = self
        next.state = state
        next.httpStatus = httpStatus
        next.reason = reason
        next.message = message
        next.finishedAt = time
        next.charged = state == .succeeded && parent == nil ? price : 0
        return next
    }

    /// Written by the tree writer: two ledger records per call, and JSONEncoder cost more than
    /// the rest of writing them. The text is the Codable conformance's (`InvocationDocumentTests`).
    public var document: Data { JSONCoding.encode(jsonTree) }

    var jsonTree: JSONValue {
        var members: [String: JSONValue] = [
            "id": .string(id), "resource": .string(resource), "operation": .string(operation), "caller": .string(caller),
            "price": .number(price), "charged": .number(charged), "state": .string(state.rawValue), "startedAt": .string(startedAt),
            "traceId": .string(traceId), "traceparent": .string(traceparent), "node": .string(node),
        ]
        members["httpStatus"] = httpStatus.map { .number(Double($0)) }
        members["reason"] = reason.map(JSONValue.string)
        members["message"] = message.map(JSONValue.string)
        members["finishedAt"] = finishedAt.map(JSONValue.string)
        members["parent"] = parent.map(JSONValue.string)
        return .object(members)
    }

    /// The trace a caller's request continues: the trace id of its W3C `traceparent`, else its
    /// `x-b3-traceid` (32 lower-case hex digits, not all zero); nil when it names none validly.
    public static func incomingTraceID(traceparent: String?, b3: String?) -> String? {
        func valid(_ id: Substring) -> Bool {
            id.count == 32 && id.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) } && id.contains { $0 != "0" }
        }
        if let traceparent {
            let parts = traceparent.trimmingCharacters(in: .whitespaces).split(separator: "-", omittingEmptySubsequences: false)
            if parts.count >= 4, parts[0].count == 2, parts[0] != "ff", valid(parts[1]) { return String(parts[1]) }
        }
        if let b3 = b3?.trimmingCharacters(in: .whitespaces).lowercased(), valid(Substring(b3)) { return b3 }
        return nil
    }

    /// A fresh W3C trace context: 16 random bytes of trace id (unless `continuing` one), 8 of parent span.
    public static func newTrace(continuing incoming: String? = nil) -> (traceId: String, traceparent: String) {
        let trace = incoming ?? Secrets.randomHex(bytes: 16)
        let span = Secrets.randomHex(bytes: 8)
        return (trace, "00-\(trace)-\(span)-01")
    }
}

/// `GET /api/v1/invocations`: newest first, filtered by resource, caller and start time.
public struct InvocationQuery: Sendable, Equatable {
    public var resource: String?
    public var caller: String?
    /// Only invocations started at or after this RFC 3339 time (normalised UTC).
    public var since: String?
    public var limit: Int
    /// Only invocations older than this ledger position (from a `continue` token).
    public var before: Int64?

    public static let defaultLimit = 100
    public static let maxLimit = 1000

    public init(resource: String? = nil, caller: String? = nil, since: String? = nil, limit: Int = InvocationQuery.defaultLimit, before: Int64? = nil) {
        self.resource = resource
        self.caller = caller
        self.since = since
        self.limit = limit
        self.before = before
    }
}

public struct InvocationPage: Sendable {
    public var items: [Invocation]
    /// Set when more items match: the position to continue from.
    public var next: Int64?
    /// Over everything the query matched, not only this page.
    public var matched: Int
    public var totalCharged: Double

    public init(items: [Invocation], next: Int64?, matched: Int, totalCharged: Double) {
        self.items = items
        self.next = next
        self.matched = matched
        self.totalCharged = totalCharged
    }
}

/// What invoking reads of a stored resource, decoded without the rest: a device's status may
/// carry large telemetry and many conditions, which an invocation never looks at.
public struct InvocationTarget: Sendable {
    public struct Spec: Sendable {
        public var operations: [ResourceOperationSpec]?
        public var accessMode: ResourceAccessMode?
    }

    public struct Status: Sendable {
        public var phase: ResourcePhase?
        public var binding: Binding?
        public var conditions: [Condition]?
    }

    public var spec: Spec
    public var status: Status?
}

extension StoredResource {
    public func invocationTarget() throws -> InvocationTarget {
        let resource = try decode()
        return InvocationTarget(
            spec: .init(operations: resource.spec.operations, accessMode: resource.spec.accessMode),
            status: resource.status.map { .init(phase: $0.phase, binding: $0.binding, conditions: $0.conditions) })
    }
}
