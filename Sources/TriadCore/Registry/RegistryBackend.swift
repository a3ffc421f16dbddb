import Foundation

/// A resource as the registry stores it: the canonical JSON document plus the columns
/// that lists filter on, so reads can return stored bytes without decoding them.
public struct StoredResource: Sendable, Equatable {
    public var name: String
    public var kind: ResourceKind
    public var labels: [String: String]
    /// The revision of the write that produced this document (`metadata.resourceVersion`).
    public var revision: Int64
    /// Canonical JSON of the whole document, `metadata.resourceVersion` included.
    public var document: Data {
        didSet { written = nil }
    }
    /// The resource the document was written from, when this value comes from that write: the
    /// registry's readers (the controller, invocations, status writes) then decode nothing. Held
    /// in the in-memory indexes beside the document; not part of equality.
    var decoded: Resource? { written?.resource }
    /// Boxed: records are copied into every list page, and one reference costs one retain where
    /// a whole `Resource` costs one per string and collection in it.
    private var written: WrittenResource?

    public init(name: String, kind: ResourceKind, labels: [String: String], revision: Int64, document: Data) {
        self.name = name
        self.kind = kind
        self.labels = labels
        self.revision = revision
        self.document = document
    }

    public static func == (a: StoredResource, b: StoredResource) -> Bool {
        a.name == b.name && a.kind == b.kind && a.labels == b.labels && a.revision == b.revision && a.document == b.document
    }

    /// This record with the decoded resource of `other` when both hold the same document.
    public func keepingDecoded(of other: StoredResource) -> StoredResource {
        guard other.written != nil, other.document == document else { return self }
        var copy = self
        copy.written = other.written
        return copy
    }

    /// Records `resource` as the one the document was written from.
    mutating func remember(_ resource: Resource) {
        written = WrittenResource(resource)
    }
}

private final class WrittenResource: Sendable {
    let resource: Resource
    init(_ resource: Resource) { self.resource = resource }
}

/// A project as the registry stores it: its canonical JSON document (`metadata.resourceVersion`
/// included) and the revision of the write that produced it.
public struct StoredProject: Sendable, Equatable {
    public var name: String
    public var revision: Int64
    public var document: Data

    public init(name: String, revision: Int64, document: Data) {
        self.name = name
        self.revision = revision
        self.document = document
    }
}

public enum RegistryEventType: String, Sendable, CaseIterable, Codable {
    case created, updated, deleted, status
    /// A binding (exclusive lease) taken or given back (or expired); docs/events.md.
    case acquired, released
    /// An operation called and its outcome: the event's document is the ledger record, not the
    /// resource (the resource does not change).
    case invoked, completed
    /// A project written, deleted, or its status (what its repositories' check found) written.
    case projectCreated = "project.created"
    case projectUpdated = "project.updated"
    case projectDeleted = "project.deleted"
    case projectStatus = "project.status"

    /// What the event's document is.
    public enum Subject: Sendable { case resource, invocation, project }

    public var subject: Subject {
        switch self {
        case .invoked, .completed: .invocation
        case .projectCreated, .projectUpdated, .projectDeleted, .projectStatus: .project
        default: .resource
        }
    }

    /// The event's own name, without its subject: the last part of its routing key and CloudEvent type.
    public var routingName: String { subject == .project ? String(rawValue.dropFirst("project.".count)) : rawValue }

    public var cloudEventType: String {
        switch self {
        case .acquired, .released: "io.triad.binding.\(rawValue)"
        case .invoked, .completed: "io.triad.operation.\(rawValue)"
        case .projectCreated, .projectUpdated, .projectDeleted, .projectStatus: "io.triad.project.\(routingName)"
        default: "io.triad.resource.\(rawValue)"
        }
    }

    /// Whether the event's document is a resource (else an invocation record or a project).
    public var carriesResource: Bool { subject == .resource }
}

/// What an event is about: a resource of one of the kinds, or a project.
public enum EventKind: String, Sendable, CaseIterable, Codable {
    case device = "Device"
    case person = "Person"
    case space = "Space"
    case project = "Project"

    public init(_ kind: ResourceKind) {
        switch kind {
        case .device: self = .device
        case .person: self = .person
        case .space: self = .space
        }
    }

    /// The lower-case form used in routing keys and CloudEvent extensions.
    public var routingName: String { rawValue.lowercased() }
}

/// One row of the outbox (docs/events.md): written in the same transaction as the change it reports.
/// Its id is the revision of that change, so ids are strictly increasing and never reused.
public struct RegistryEvent: Sendable, Equatable {
    public var id: Int64
    public var type: RegistryEventType
    public var name: String
    public var kind: EventKind
    public var labels: [String: String]
    public var time: String
    /// The document after the change (before it, for a deletion): the resource, the ledger
    /// record (operation events) or the project.
    public var document: Data

    public init(id: Int64, type: RegistryEventType, name: String, kind: EventKind, labels: [String: String], time: String, document: Data) {
        self.id = id
        self.type = type
        self.name = name
        self.kind = kind
        self.labels = labels
        self.time = time
        self.document = document
    }
}

public struct EventBatch: Sendable {
    public var events: [RegistryEvent]
    /// The oldest id still retained (nil when the log is empty); resuming before it has gaps.
    public var oldestRetained: Int64?
    public init(events: [RegistryEvent], oldestRetained: Int64?) {
        self.events = events
        self.oldestRetained = oldestRetained
    }
}

public enum Role: String, Sendable, CaseIterable, Codable {
    case admin, `operator`, app, device, integrator
}

public struct TokenRecord: Sendable, Equatable {
    public var name: String
    public var role: Role
    /// For `device` tokens: the one resource they may write status and telemetry for.
    public var resource: String?
    /// Hex SHA-256 of the secret; the secret itself is never stored.
    public var secretHash: String
    public var createdAt: String
    public var revokedAt: String?

    public init(name: String, role: Role, resource: String?, secretHash: String, createdAt: String, revokedAt: String? = nil) {
        self.name = name
        self.role = role
        self.resource = resource
        self.secretHash = secretHash
        self.createdAt = createdAt
        self.revokedAt = revokedAt
    }
}

/// What a write transaction can do; backends implement it over their own connection. The
/// registry calls, in this order: `load` (the current version, locked against other writers of
/// it), `nextRevision` once the write is decided, one of `insert`/`update`/`delete`, then
/// `append` of the one event that reports the change. Backends may defer the change and write
/// it together with the event.
public protocol RegistryTransaction {
    func load(name: String) async throws -> StoredResource?
    /// The project `name` as this transaction sees it. A project event appended here is the
    /// project's change: backends write (or delete) the project from it.
    func loadProject(name: String) async throws -> StoredProject?
    /// Takes the next revision. Backends serialise writers here (PostgreSQL: the counter row
    /// lock, held to commit), so revisions commit in order and readers never see a gap fill later.
    func nextRevision() async throws -> Int64
    func insert(_ record: StoredResource) async throws
    func update(_ record: StoredResource) async throws
    func delete(name: String) async throws
    /// Records an invocation (new, or its next state) to be written with the event appended next.
    func put(_ invocation: Invocation) async throws
    func append(_ event: RegistryEvent) async throws
}

/// The storage contract, by concern: each consumer takes the port it uses. Three backends
/// implement all of them: SQLite (embedded default), PostgreSQL, and one in memory.
public protocol RegistryBackend: ResourceStore, ProjectStore, EventLog, RelayCursors, TelemetryHistory, LedgerStore, TokenStore, Leadership {
    /// Whether the backend can serve (used by `/readyz`).
    func ping() async throws
}

/// Resources, and the write transaction that changes one together with its event.
public protocol ResourceStore: Sendable {
    /// Runs `body` in one serialisable write transaction; commits if it returns, rolls back if it
    /// throws. PostgreSQL commits concurrent writes in groups, each with its own outcome, so
    /// `body` may run on another task than the caller's.
    func withWriteTransaction<T: Sendable>(_ body: @escaping @Sendable (any RegistryTransaction) async throws -> T) async throws -> T

    func get(name: String) async throws -> StoredResource?
    /// Resources ordered by name, after `after` (exclusive), optionally of one kind.
    func list(kind: ResourceKind?, after: String?, limit: Int) async throws -> [StoredResource]
    /// A revision that `get` and `list` reflect in full: every change up to it is in what they
    /// return (some later ones may be too). A list reports it, so a watch from it misses nothing.
    func readRevision() async throws -> Int64
}

/// Projects (docs/projects.md), written in the resource store's write transactions.
public protocol ProjectStore: Sendable {
    func project(name: String) async throws -> StoredProject?
    /// Every project, by name.
    func projects() async throws -> [StoredProject]
}

/// The event log every write appends to.
public protocol EventLog: Sendable {
    /// The newest revision (the newest event's id; 0 for an empty registry).
    func latestRevision() async throws -> Int64
    func events(after id: Int64, limit: Int) async throws -> EventBatch
    /// Deletes all but the newest `keep` events, and none after `notAfter` (events a relay has
    /// not delivered yet); returns how many were deleted.
    func compactEvents(keep: Int, notAfter: Int64?) async throws -> Int
    /// Calls `changed` whenever another process appends events to this registry, until cancelled.
    func watchOtherWriters(_ changed: @escaping @Sendable () -> Void) async throws
}

/// How far each relay has delivered the event log.
public protocol RelayCursors: Sendable {
    /// How far the relay `name` has delivered the event log (0 before its first delivery).
    func relayCursor(_ name: String) async throws -> Int64
    func setRelayCursor(_ name: String, to id: Int64) async throws
    /// One round of the relay `name`: the events after its cursor (at most `limit`) go to
    /// `deliver`, and the cursor moves past them only if it returns. Replicas on one database
    /// take turns: a round that finds another replica's round running returns `.busy`.
    func relayRound(_ name: String, limit: Int, deliver: @Sendable ([RegistryEvent]) async throws -> Void) async throws -> RelayRound
}

/// Telemetry history: appended in batches; `telemetry` returns the newest `limit` samples
/// with `from <= time < to`, oldest first (times are normalised RFC 3339 UTC, so they compare
/// as text).
public protocol TelemetryHistory: Sendable {
    func appendTelemetry(_ samples: [TelemetrySample]) async throws
    func telemetry(resource: String, from: String?, to: String?, limit: Int) async throws -> [TelemetrySample]
    /// Deletes samples received before `receivedBefore`; returns how many.
    func compactTelemetry(receivedBefore: String) async throws -> Int
}

/// The ledger. Invocations are created and finished in write transactions (with their events);
/// `saveInvocation` records a state change that has no event (Pending → Running).
public protocol LedgerStore: Sendable {
    func saveInvocation(_ invocation: Invocation) async throws
    func invocation(id: String) async throws -> Invocation?
    func invocations(_ query: InvocationQuery) async throws -> InvocationPage
    /// Invocations `node` started and did not finish (it was killed mid-call).
    func unfinishedInvocations(node: String) async throws -> [Invocation]
}

/// Bearer tokens, stored by the hash of their secret.
public protocol TokenStore: Sendable {
    func insertToken(_ token: TokenRecord) async throws
    func token(secretHash: String) async throws -> TokenRecord?
    func tokens() async throws -> [TokenRecord]
    func revokeToken(name: String, at: String) async throws -> TokenRecord?
    func activeAdminCount() async throws -> Int
}

/// One leader among the servers on one database.
public protocol Leadership: Sendable {
    /// Runs `body` while this server leads `name` among the servers on this database (the
    /// controller runs on one of them). Returns false at once when another server leads;
    /// otherwise returns when `body` does or when leadership is lost (then `body` is cancelled).
    func lead(_ name: String, _ body: @escaping @Sendable () async throws -> Void) async throws -> Bool
}

public enum RelayRound: Sendable, Equatable {
    /// Another replica is relaying.
    case busy
    case idle
    case delivered(count: Int, cursor: Int64)
}

extension EventLog {
    public func compactEvents(keep: Int) async throws -> Int {
        try await compactEvents(keep: keep, notAfter: nil)
    }

    /// Only one server opens the database (SQLite: the file lock): no other writers to watch.
    public func watchOtherWriters(_ changed: @escaping @Sendable () -> Void) async throws {
        while !Task.isCancelled { try await Task.sleep(for: .seconds(3600)) }
    }
}

extension Leadership {
    /// Only one server opens the database (SQLite: the file lock), so it always leads.
    public func lead(_ name: String, _ body: @escaping @Sendable () async throws -> Void) async throws -> Bool {
        try await body()
        return true
    }
}

extension RelayCursors where Self: EventLog {
    /// For a backend only one server opens (SQLite: the file lock), no lease is needed.
    public func relayRound(_ name: String, limit: Int, deliver: @Sendable ([RegistryEvent]) async throws -> Void) async throws -> RelayRound {
        let cursor = try await relayCursor(name)
        let batch = try await events(after: cursor, limit: limit).events
        guard let last = batch.last else { return .idle }
        try await deliver(batch)
        try await setRelayCursor(name, to: last.id)
        return .delivered(count: batch.count, cursor: last.id)
    }
}

public enum RegistryError: Error, Sendable, Equatable {
    case notFound(name: String)
    case alreadyExists(name: String)
    /// A stale `metadata.resourceVersion`.
    case conflict(current: String?, detail: String)
    /// A stale `If-Match`.
    case preconditionFailed(current: String?)
    case invalid([Violation])
    case tokenExists(name: String)
    /// The backend refused or failed; the message is safe to show.
    case unavailable(String)
    /// The resource is bound by another holder (until `until`), or not bound by the caller.
    case bindingConflict(String)
    /// The caller's role may not make this change (the message says which part).
    case forbidden(String)
}
