import Foundation
import Logging
import PostgresNIO
import Synchronization
import TriadCore

/// A registry write waiting for its group: the registry's body, and how to answer its caller.
struct PendingWrite: Sendable {
    let body: @Sendable (any RegistryTransaction) async throws -> Void
    let finish: @Sendable ((any Error)?) -> Void
}

/// Registry writes on PostgreSQL are committed in groups. Writers queue here; one task takes
/// whatever has queued (up to `maxGroup`) and commits it as one transaction: one hold of the
/// revision counter's lock, the writes' bodies run one after another against what the group has
/// written so far, and every change and event goes out in one statement. Each writer gets its
/// own outcome: a body that refuses (a conflict, a missing resource) takes no revision and
/// writes nothing, and the others commit. Revisions stay gap-free and in commit order.
///
/// With one writer at a time a group is one write; under load the counter lock is held once per
/// group instead of once per write. While this replica's read cache is current, a group takes no
/// lock and is one round trip (`PostgresBackend.commit`).
final class GroupCommit: Sendable {
    static let maxGroup = 128

    private struct Queue {
        var waiting: [PendingWrite] = []
        var closed = false
    }

    private let queue = Mutex(Queue())
    private let wakes: AsyncStream<Void>
    private let wake: AsyncStream<Void>.Continuation

    init() {
        (wakes, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Runs `body` in the next group; returns its result once the group has committed.
    func write<T: Sendable>(_ body: @escaping @Sendable (any RegistryTransaction) async throws -> T) async throws -> T {
        let result = Mutex<T?>(nil)
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let pending = PendingWrite(
                body: { tx in
                    let value = try await body(tx)
                    result.withLock { $0 = value }
                },
                finish: { error in
                    if let error { continuation.resume(throwing: error) } else { continuation.resume() }
                })
            let accepted = queue.withLock { q in
                guard !q.closed else { return false }
                q.waiting.append(pending)
                return true
            }
            if accepted { wake.yield() } else { pending.finish(RegistryError.unavailable("the registry is closing")) }
        }
        guard let value = result.withLock({ $0.take() }) else { throw RegistryError.unavailable("a registry write ended without a result") }
        return value
    }

    /// Commits groups with `commit` until cancelled; then refuses what is still queued.
    func run(_ commit: ([PendingWrite]) async -> Void) async {
        for await _ in wakes {
            while true {
                let group = queue.withLock { q in
                    let n = min(q.waiting.count, Self.maxGroup)
                    defer { q.waiting.removeFirst(n) }
                    return Array(q.waiting.prefix(n))
                }
                if group.isEmpty { break }
                await commit(group)
            }
        }
        let left = queue.withLock { q in
            q.closed = true
            defer { q.waiting = [] }
            return q.waiting
        }
        for pending in left { pending.finish(RegistryError.unavailable("the registry is closing")) }
    }
}

/// A group that committed: it took the revisions after `start` through `end`, and `changes` are
/// its resource changes in order (for the read cache).
struct CommittedGroup: Sendable {
    struct Change: Sendable {
        var name: String
        /// The resource after the change; nil: deleted.
        var record: StoredResource?
        var revision: Int64
    }
    var changes: [Change]
    /// Its events, ids `start + 1` through `end`.
    var events: [RegistryEvent]
    var start: Int64
    var end: Int64
}

/// What a group has written so far, in order; its bodies read through it.
final class GroupState {
    let connection: PostgresConnection
    let logger: Logger
    /// The last revision taken (the counter's value once the group commits).
    var revision: Int64
    var events: [RegistryEvent] = []
    /// Each resource's state after the group (nil: deleted).
    var resources: [String: StoredResource?] = [:]
    var projects: [String: StoredProject?] = [:]
    var invocations: [String: Invocation] = [:]
    /// The resource changes in commit order, for the read cache.
    var changes: [CommittedGroup.Change] = []

    /// The replica's read cache when it has followed the log exactly to the group's start: with
    /// the counter locked nobody else can commit, so it is the database's state and the bodies'
    /// reads need no round trip (without the lock, the group's statement commits only if that
    /// still holds). nil: read the database.
    let current: ResourceCache?

    init(connection: PostgresConnection, logger: Logger, revision: Int64, cache: ResourceCache) {
        self.connection = connection
        self.logger = logger
        self.revision = revision
        current = cache.followedRevision == revision ? cache : nil
    }

    /// The statement that writes the whole group: every event, every resource's and project's
    /// final state, every ledger row, and the counter, if the counter is still at `start`. The
    /// events' trigger notifies the replicas.
    func flush(expecting start: Int64) -> GroupFlush {
        var flush = GroupFlush(revision: revision, expected: start)
        for e in events {
            flush.eventIDs.append(e.id)
            flush.eventTypes.append(e.type.rawValue)
            flush.eventNames.append(e.name)
            flush.eventKinds.append(e.kind.rawValue)
            flush.eventLabels.append(RowCoding.labelsText(e.labels))
            flush.eventTimes.append(e.time)
            flush.eventDocuments.append(String(decoding: e.document, as: UTF8.self))
        }
        for (name, record) in resources {
            guard let r = record else {
                flush.deletedResources.append(name)
                continue
            }
            flush.resourceNames.append(r.name)
            flush.resourceKinds.append(r.kind.rawValue)
            flush.resourceLabels.append(RowCoding.labelsText(r.labels))
            flush.resourceRevisions.append(r.revision)
            flush.resourceDocuments.append(String(decoding: r.document, as: UTF8.self))
        }
        for (name, project) in projects {
            guard let p = project else {
                flush.deletedProjects.append(name)
                continue
            }
            flush.projectNames.append(p.name)
            flush.projectRevisions.append(p.revision)
            flush.projectDocuments.append(String(decoding: p.document, as: UTF8.self))
        }
        for i in invocations.values {
            flush.invocationIDs.append(i.id)
            flush.invocationSequences.append(i.sequence)
            flush.invocationResources.append(i.resource)
            flush.invocationCallers.append(i.caller)
            flush.invocationStates.append(i.state.rawValue)
            flush.invocationNodes.append(i.node)
            flush.invocationStarts.append(i.startedAt)
            flush.invocationCharges.append(i.charged)
            flush.invocationDocuments.append(String(decoding: i.document, as: UTF8.self))
        }
        return flush
    }
}

/// One write of a group. Reads see the group's earlier writes (then the database, where the
/// counter lock the group holds keeps every other writer out); the change, the ledger record
/// and the event are kept until `merge`, so a body that throws leaves nothing behind.
final class GroupTransaction: RegistryTransaction {
    private let group: GroupState
    private enum Change {
        case put(StoredResource)
        case delete(String)
    }
    private var change: Change?
    private var invocation: Invocation?
    private var event: RegistryEvent?

    init(_ group: GroupState) {
        self.group = group
    }

    func load(name: String) async throws -> StoredResource? {
        switch change {
        case .put(let r) where r.name == name: return r
        case .delete(let n) where n == name: return nil
        default: break
        }
        if let staged = group.resources[name] { return staged }
        if let cached = group.current?.read({ $0.byName[name] }) { return cached }
        for try await row in try await group.connection.execute(ResourceByName(name: name), logger: group.logger) {
            return try PostgresBackend.resource(row)
        }
        return nil
    }

    func loadProject(name: String) async throws -> StoredProject? {
        if let staged = group.projects[name] { return staged }
        return try await PostgresBackend.projects(
            group.connection.query("SELECT name, revision, document FROM triad_projects WHERE name = \(name)", logger: group.logger)
        ).first
    }

    func nextRevision() async throws -> Int64 { group.revision + 1 }
    func insert(_ r: StoredResource) async throws { change = .put(r) }
    func update(_ r: StoredResource) async throws { change = .put(r) }
    func delete(name: String) async throws { change = .delete(name) }
    func put(_ invocation: Invocation) async throws { self.invocation = invocation }

    func append(_ e: RegistryEvent) async throws {
        guard event == nil else { throw RegistryError.unavailable("a registry write appends one event") }
        guard e.id == group.revision + 1 else { throw RegistryError.unavailable("a registry event out of order (\(e.id) after \(group.revision))") }
        event = e
    }

    /// Adds this write to the group, once its body has returned.
    func merge() throws {
        guard let e = event else { return }
        group.revision = e.id
        group.events.append(e)
        switch change {
        case .put(let r):
            // As the event reports it: its document and labels.
            let record = StoredResource(name: r.name, kind: r.kind, labels: e.labels, revision: r.revision, document: e.document)
                .keepingDecoded(of: r)
            group.resources[r.name] = .some(record)
            group.changes.append(.init(name: r.name, record: record, revision: e.id))
        case .delete(let name):
            group.resources[name] = .some(nil)
            group.changes.append(.init(name: name, record: nil, revision: e.id))
        case nil where e.type.subject == .project:
            group.projects[e.name] = e.type == .projectDeleted ? .some(nil) : StoredProject(name: e.name, revision: e.id, document: e.document)
        case nil:
            guard let i = invocation else { throw RegistryError.unavailable("a registry event without a change") }
            group.invocations[i.id] = i
        }
    }
}

/// The revision counter, locked until the group's transaction ends.
struct LockRevisionCounter: PostgresPreparedStatement {
    static let sql = "SELECT value FROM triad_counters WHERE name = 'revision' FOR UPDATE"
    typealias Row = Int64

    func makeBindings() throws -> PostgresBindings { PostgresBindings() }
    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Int64.self) }
}

/// A group's whole write in one statement, prepared once per connection (arrays unnested into
/// rows). Compare and set: every part joins the counter's update, which matches only while the
/// counter holds `expected`; no row back means nothing was written.
struct GroupFlush: PostgresPreparedStatement {
    static let sql = """
        WITH counter AS (
          UPDATE triad_counters SET value = $27 WHERE name = 'revision' AND value = $28 RETURNING value),
        events AS (
          INSERT INTO triad_events (id, type, name, kind, labels, time, document)
          SELECT e.* FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) AS e, counter),
        resources AS (
          INSERT INTO triad_resources (name, kind, labels, revision, document)
          SELECT r.* FROM unnest($8::text[], $9::text[], $10::text[], $11::int8[], $12::text[]) AS r, counter
          ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, labels = EXCLUDED.labels, revision = EXCLUDED.revision,
            document = EXCLUDED.document),
        deleted_resources AS (DELETE FROM triad_resources WHERE name = ANY($13::text[]) AND EXISTS (SELECT 1 FROM counter)),
        projects AS (
          INSERT INTO triad_projects (name, revision, document)
          SELECT p.* FROM unnest($14::text[], $15::int8[], $16::text[]) AS p, counter
          ON CONFLICT (name) DO UPDATE SET revision = EXCLUDED.revision, document = EXCLUDED.document),
        deleted_projects AS (DELETE FROM triad_projects WHERE name = ANY($17::text[]) AND EXISTS (SELECT 1 FROM counter)),
        ledger AS (
          INSERT INTO triad_invocations (id, seq, resource, caller, state, node, started_at, charged, document)
          SELECT l.* FROM unnest($18::text[], $19::int8[], $20::text[], $21::text[], $22::text[], $23::text[], $24::text[],
            $25::float8[], $26::text[]) AS l, counter
          ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, charged = EXCLUDED.charged, document = EXCLUDED.document)
        SELECT value FROM counter
        """
    typealias Row = Int64

    var revision: Int64
    var eventIDs: [Int64] = []
    var eventTypes: [String] = []
    var eventNames: [String] = []
    var eventKinds: [String] = []
    var eventLabels: [String] = []
    var eventTimes: [String] = []
    var eventDocuments: [String] = []
    var resourceNames: [String] = []
    var resourceKinds: [String] = []
    var resourceLabels: [String] = []
    var resourceRevisions: [Int64] = []
    var resourceDocuments: [String] = []
    var deletedResources: [String] = []
    var projectNames: [String] = []
    var projectRevisions: [Int64] = []
    var projectDocuments: [String] = []
    var deletedProjects: [String] = []
    var invocationIDs: [String] = []
    var invocationSequences: [Int64] = []
    var invocationResources: [String] = []
    var invocationCallers: [String] = []
    var invocationStates: [String] = []
    var invocationNodes: [String] = []
    var invocationStarts: [String] = []
    var invocationCharges: [Double] = []
    var invocationDocuments: [String] = []

    /// The counter's value the group started from: nothing is written unless it still is.
    var expected: Int64

    init(revision: Int64, expected: Int64) {
        self.revision = revision
        self.expected = expected
    }

    func makeBindings() throws -> PostgresBindings {
        var b = PostgresBindings()
        b.append(eventIDs)
        b.append(eventTypes)
        b.append(eventNames)
        b.append(eventKinds)
        b.append(eventLabels)
        b.append(eventTimes)
        b.append(eventDocuments)
        b.append(resourceNames)
        b.append(resourceKinds)
        b.append(resourceLabels)
        b.append(resourceRevisions)
        b.append(resourceDocuments)
        b.append(deletedResources)
        b.append(projectNames)
        b.append(projectRevisions)
        b.append(projectDocuments)
        b.append(deletedProjects)
        b.append(invocationIDs)
        b.append(invocationSequences)
        b.append(invocationResources)
        b.append(invocationCallers)
        b.append(invocationStates)
        b.append(invocationNodes)
        b.append(invocationStarts)
        b.append(invocationCharges)
        b.append(invocationDocuments)
        b.append(revision)
        b.append(expected)
        return b
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Int64.self) }
}
