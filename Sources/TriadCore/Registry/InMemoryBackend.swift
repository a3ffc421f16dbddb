import Foundation
import Synchronization

/// The registry with nothing on disk: the same contract as SQLite and PostgreSQL (it passes their
/// conformance suite), for tests of routes and controllers that need no database, and for trying
/// Triad out. One process, one registry; everything is gone when it stops.
public final class InMemoryBackend: RegistryBackend {
    struct State {
        var index = ResourceIndex()
        var events: [RegistryEvent] = []
        var cursors: [String: Int64] = [:]
        var telemetry: [TelemetrySample] = []
        var tokens: [String: TokenRecord] = [:]
        var invocations: [String: Invocation] = [:]
        var projects: [String: StoredProject] = [:]
    }

    private let state = Mutex(State())
    /// Writers one at a time, across the suspension points of a transaction's body.
    private let writeLock = AsyncMutex()

    public init() {}

    public func withWriteTransaction<T: Sendable>(_ body: @escaping @Sendable (any RegistryTransaction) async throws -> T) async throws -> T {
        try await writeLock.withLock {
            let tx = InMemoryTransaction(
                revision: state.withLock { $0.index.revision },
                committed: { name in self.state.withLock { $0.index.byName[name] } },
                committedProject: { name in self.state.withLock { $0.projects[name] } })
            let result = try await body(tx)
            state.withLock { tx.commit(into: &$0) }
            return result
        }
    }

    public func get(name: String) async throws -> StoredResource? { state.withLock { $0.index.byName[name] } }

    public func list(kind: ResourceKind?, after: String?, limit: Int) async throws -> [StoredResource] {
        state.withLock { $0.index.page(kind: kind, after: after, limit: limit) }
    }

    public func project(name: String) async throws -> StoredProject? { state.withLock { $0.projects[name] } }

    public func projects() async throws -> [StoredProject] { state.withLock { $0.projects.values.sorted { $0.name < $1.name } } }

    public func latestRevision() async throws -> Int64 { state.withLock { $0.index.revision } }
    public func readRevision() async throws -> Int64 { try await latestRevision() }

    public func events(after id: Int64, limit: Int) async throws -> EventBatch {
        state.withLock { s in
            // Events are in id order: a binary search finds the first one after `id`.
            var low = 0
            var high = s.events.count
            while low < high {
                let mid = (low + high) / 2
                if s.events[mid].id <= id { low = mid + 1 } else { high = mid }
            }
            return EventBatch(events: Array(s.events[low..<min(s.events.count, low + max(0, limit))]), oldestRetained: s.events.first?.id)
        }
    }

    public func compactEvents(keep: Int, notAfter: Int64?) async throws -> Int {
        state.withLock { s in
            guard let newest = s.events.last?.id else { return 0 }
            let bound = min(newest - Int64(keep), notAfter ?? Int64.max)
            let before = s.events.count
            s.events.removeAll { $0.id <= bound }
            return before - s.events.count
        }
    }

    public func relayCursor(_ name: String) async throws -> Int64 { state.withLock { $0.cursors[name] ?? 0 } }
    public func setRelayCursor(_ name: String, to id: Int64) async throws { state.withLock { $0.cursors[name] = id } }

    public func appendTelemetry(_ samples: [TelemetrySample]) async throws { state.withLock { $0.telemetry += samples } }

    public func telemetry(resource: String, from: String?, to: String?, limit: Int) async throws -> [TelemetrySample] {
        state.withLock { s in
            let matching = s.telemetry.enumerated().filter { _, t in
                t.resource == resource && t.time >= (from ?? "") && t.time < (to ?? "~")
            }
            // The newest `limit` by time (then arrival), returned oldest first.
            let newest = matching.sorted { ($0.element.time, $0.offset) > ($1.element.time, $1.offset) }.prefix(limit)
            return newest.reversed().map(\.element)
        }
    }

    public func compactTelemetry(receivedBefore: String) async throws -> Int {
        state.withLock { s in
            let before = s.telemetry.count
            s.telemetry.removeAll { $0.receivedAt < receivedBefore }
            return before - s.telemetry.count
        }
    }

    public func saveInvocation(_ invocation: Invocation) async throws {
        state.withLock { s in
            var record = invocation
            if let existing = s.invocations[invocation.id] { record.sequence = existing.sequence }
            s.invocations[invocation.id] = record
        }
    }

    public func invocation(id: String) async throws -> Invocation? { state.withLock { $0.invocations[id] } }

    public func invocations(_ query: InvocationQuery) async throws -> InvocationPage {
        state.withLock { s in
            let matching = s.invocations.values.filter { i in
                (query.resource.map { i.resource == $0 } ?? true) && (query.caller.map { i.caller == $0 } ?? true)
                    && (query.since.map { i.startedAt >= $0 } ?? true)
            }.sorted { $0.sequence > $1.sequence }
            let page = matching.filter { i in query.before.map { i.sequence < $0 } ?? true }
            let items = Array(page.prefix(query.limit))
            return InvocationPage(
                items: items, next: page.count > query.limit ? items.last?.sequence : nil,
                matched: matching.count, totalCharged: matching.reduce(0) { $0 + $1.charged })
        }
    }

    public func unfinishedInvocations(node: String) async throws -> [Invocation] {
        state.withLock { s in
            s.invocations.values.filter { $0.node == node && !$0.state.isFinal }.sorted { $0.sequence < $1.sequence }
        }
    }

    public func insertToken(_ token: TokenRecord) async throws {
        try state.withLock { s in
            guard s.tokens[token.name] == nil else { throw RegistryError.tokenExists(name: token.name) }
            s.tokens[token.name] = token
        }
    }

    public func token(secretHash: String) async throws -> TokenRecord? {
        state.withLock { $0.tokens.values.first { $0.secretHash == secretHash } }
    }

    public func tokens() async throws -> [TokenRecord] { state.withLock { $0.tokens.values.sorted { $0.name < $1.name } } }

    public func revokeToken(name: String, at time: String) async throws -> TokenRecord? {
        state.withLock { s in
            if s.tokens[name]?.revokedAt == nil { s.tokens[name]?.revokedAt = time }
            return s.tokens[name]
        }
    }

    public func activeAdminCount() async throws -> Int {
        state.withLock { $0.tokens.values.filter { $0.role == .admin && $0.revokedAt == nil }.count }
    }

    public func ping() async throws {}
}

/// One write: reads see the committed index plus this write's own change; `commit` applies the
/// change, the event and the ledger record together.
final class InMemoryTransaction: RegistryTransaction, @unchecked Sendable {
    // @unchecked: used by one task at a time, under the backend's write lock (as SQLite's).
    private let committed: (String) -> StoredResource?
    private let committedProject: (String) -> StoredProject?
    private let lastRevision: Int64
    private var change: (name: String, record: StoredResource?)?
    private var invocation: Invocation?
    private var event: RegistryEvent?

    init(revision: Int64, committed: @escaping (String) -> StoredResource?, committedProject: @escaping (String) -> StoredProject?) {
        self.lastRevision = revision
        self.committed = committed
        self.committedProject = committedProject
    }

    func loadProject(name: String) async throws -> StoredProject? { committedProject(name) }

    func load(name: String) async throws -> StoredResource? {
        if let change, change.name == name { return change.record }
        return committed(name)
    }

    func nextRevision() async throws -> Int64 { lastRevision + 1 }
    func insert(_ record: StoredResource) async throws { change = (record.name, record) }
    func update(_ record: StoredResource) async throws { change = (record.name, record) }
    func delete(name: String) async throws { change = (name, nil) }
    func put(_ invocation: Invocation) async throws { self.invocation = invocation }

    func append(_ e: RegistryEvent) async throws {
        guard event == nil else { throw RegistryError.unavailable("a registry write appends one event") }
        event = e
    }

    func commit(into state: inout InMemoryBackend.State) {
        guard let event else { return }
        if let change {
            if let record = change.record { state.index.put(record) } else { state.index.remove(change.name) }
        }
        if var record = invocation {
            if let existing = state.invocations[record.id] { record.sequence = existing.sequence }
            state.invocations[record.id] = record
        }
        switch event.type {
        case .projectCreated, .projectUpdated, .projectStatus:
            state.projects[event.name] = StoredProject(name: event.name, revision: event.id, document: event.document)
        case .projectDeleted: state.projects[event.name] = nil
        default: break
        }
        state.index.revision = event.id
        state.events.append(event)
    }
}
