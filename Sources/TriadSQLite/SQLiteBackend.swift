import Foundation
import Logging
import Synchronization
import TriadCore
import TriadSQL

/// The embedded registry: one SQLite file in WAL mode, owned by one process. Writes go through a
/// single connection, one transaction at a time; resources are also kept in a `ResourceIndex`
/// that commits update, so reads by name and lists are served from memory. Events and tokens
/// are read from the file by their own connections, which never see uncommitted data.
///
/// Statements are prepared once per connection and kept (`SQLiteDatabase`). Writes and reads of a
/// few rows by key run on the calling thread, which saves the thread hand-offs they used to cost;
/// scans and batches run on NIO's blocking pool, and so does the WAL checkpoint (on a connection
/// of its own, so no commit waits for it).
public final class SQLiteBackend: RegistryBackend {
    private let writer: SQLiteConnectionBox
    /// Serialises the writer's users without blocking a thread while they wait.
    private let writeLock = AsyncMutex()
    /// Registry writes waiting for the writer, in order (`withWriteTransaction`).
    private let queued = Mutex<[QueuedWrite]>([])
    private let readers: [SQLiteConnectionBox]
    private let nextReader = Atomic<Int>(0)
    private let checkpointer: SQLiteConnectionBox
    private let writesSinceCheckpoint = Atomic<Int>(0)
    private let checkpointRunning = Atomic<Bool>(false)
    private let checkpointCount = Atomic<Int>(0)
    private let index: Mutex<ResourceIndex>
    private let recent: Mutex<RecentEvents>
    private let fileLock: FileLock
    private let logger: Logger

    /// Writes between two checkpoints (SQLite's own automatic checkpoint uses 1,000 pages).
    static let checkpointEvery = 500
    /// The size the WAL file is cut back to when it starts over (after a burst of large writes).
    static let walSizeLimit = 64 << 20

    public struct InUse: Error, CustomStringConvertible {
        public var description: String
    }

    /// Runs `body` with the registry in the file at `path`, migrated; the file is closed (and its
    /// lock released) when `body` returns or throws.
    public static func withBackend<T: Sendable>(
        path: String, readers: Int = 2, logger: Logger, _ body: (SQLiteBackend) async throws -> T
    ) async throws -> T {
        let backend = try await open(path: path, readers: readers, logger: logger)
        return try await withCleanup {
            try await body(backend)
        } cleanup: {
            await backend.close()
        }
    }

    private static func open(path: String, readers readerCount: Int, logger: Logger) async throws -> SQLiteBackend {
        // A second server on the same file would make the index stale: refuse it.
        guard let fileLock = FileLock(path: path + ".lock") else {
            throw InUse(description: "another triad server is using \(path)")
        }
        do {
            let writer = SQLiteConnectionBox(try SQLiteDatabase(path: path))
            let (index, recent) = try await writer.offloaded { db in
                // WAL: readers do not block the writer; synchronous=NORMAL survives a killed
                // process. The writer never checkpoints itself: `checkpointIfDue` does, elsewhere.
                try db.execute(
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000; PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit=\(Self.walSizeLimit)"
                )
                try SQLiteMigrations.run(on: db, logger: logger)
                var index = ResourceIndex()
                for row in try db.query("SELECT name, kind, labels, revision, document FROM triad_resources") {
                    index.put(try resource(row))
                }
                index.revision = Int64(try db.query("SELECT value FROM triad_counters WHERE name = 'revision'").first?.column("value")?.integer ?? 0)
                return (index, RecentEvents(oldestRetained: try oldestEventID(db)))
            }
            func connection() throws -> SQLiteConnectionBox {
                let db = try SQLiteDatabase(path: path)
                try db.execute("PRAGMA busy_timeout=5000")
                return SQLiteConnectionBox(db)
            }
            return SQLiteBackend(
                writer: writer, readers: try (0..<max(1, readerCount)).map { _ in try connection() }, checkpointer: try connection(),
                index: index, recent: recent, fileLock: fileLock, logger: logger)
        } catch {
            fileLock.release()
            throw error
        }
    }

    private init(
        writer: SQLiteConnectionBox, readers: [SQLiteConnectionBox], checkpointer: SQLiteConnectionBox, index: ResourceIndex,
        recent: RecentEvents, fileLock: FileLock, logger: Logger
    ) {
        self.writer = writer
        self.readers = readers
        self.checkpointer = checkpointer
        self.index = Mutex(index)
        self.recent = Mutex(recent)
        self.fileLock = fileLock
        self.logger = logger
    }

    /// A read of a few rows by key: on the calling thread on a free reader, else on the blocking
    /// pool (a scan holds the reader).
    private func read<T: Sendable>(_ body: @escaping @Sendable (SQLiteDatabase) throws -> T) async throws -> T {
        for reader in readers {
            if let result = try reader.syncIfFree(body) { return result }
        }
        return try await scan(body)
    }

    /// A read of many rows, on the blocking pool.
    private func scan<T: Sendable>(_ body: @escaping @Sendable (SQLiteDatabase) throws -> T) async throws -> T {
        try await readers[nextReader.wrappingAdd(1, ordering: .relaxed).oldValue % readers.count].offloaded(body)
    }

    /// A short write on the writer, in turn with the others.
    private func write<T: Sendable>(_ body: (SQLiteDatabase) throws -> T) async throws -> T {
        let result = try await writeLock.withLock { try writer.sync(body) }
        checkpointIfDue(writes: 1)
        return result
    }

    /// A long write (a batch, a compaction) on the blocking pool, in turn with the others.
    private func bulkWrite<T: Sendable>(_ body: @escaping @Sendable (SQLiteDatabase) throws -> T) async throws -> T {
        let result = try await writeLock.withLock { try await writer.offloaded(body) }
        checkpointIfDue(writes: Self.checkpointEvery)
        return result
    }

    /// Copies the WAL into the database file every `checkpointEvery` writes, on the checkpoint
    /// connection and the blocking pool: first PASSIVE, beside the writes (the bulk of the copy
    /// and its syncs), then RESTART with the writer held, which copies what was written
    /// meanwhile and waits for readers of older frames, so the next write starts the WAL over.
    /// Under steady writes a passive checkpoint alone never catches up: the WAL grew without end
    /// (300 MB in ten seconds of invocations), and every write went to new pages of it.
    private func checkpointIfDue(writes: Int) {
        guard writesSinceCheckpoint.add(writes, ordering: .relaxed).newValue >= Self.checkpointEvery,
            checkpointRunning.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
        else { return }
        writesSinceCheckpoint.store(0, ordering: .relaxed)
        Task { [self] in
            defer { checkpointRunning.store(false, ordering: .releasing) }
            do {
                try await checkpointer.offloaded { try $0.execute("PRAGMA wal_checkpoint(PASSIVE)") }
                try await writeLock.withLock { try await checkpointer.offloaded { try $0.execute("PRAGMA wal_checkpoint(RESTART)") } }
                checkpointCount.add(1, ordering: .releasing)
            } catch {
                logger.warning("registry checkpoint failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// A registry write appends exactly one event, and that one INSERT (with the triggers of
    /// `RegistrySchema`) is the whole write: if the body throws before it, nothing was written.
    ///
    /// Writers queue, and whoever holds the writer commits every write queued so far as one group
    /// (`commit`): alone, a write is its INSERT and no more; under load, many writes share one
    /// transaction, so SQLite writes each page they touch once per group instead of once per
    /// write. Each writer gets its own outcome either way.
    public func withWriteTransaction<T: Sendable>(_ body: @escaping @Sendable (any RegistryTransaction) async throws -> T) async throws -> T {
        let result = Mutex<T?>(nil)
        let write = QueuedWrite { tx in
            let value = try await body(tx)
            result.withLock { $0 = value }
        }
        queued.withLock { $0.append(write) }
        let committed = try await writeLock.withLock {
            var committed = 0
            // Writes queued ahead of this one are committed first, a group at a time.
            while write.outcome.withLock({ $0 == nil }) {
                let group = queued.withLock { q in
                    let n = min(q.count, Self.maxGroup)
                    defer { q.removeFirst(n) }
                    return Array(q.prefix(n))
                }
                await commit(group)
                committed += group.count
            }
            return committed
        }
        if committed > 0 { checkpointIfDue(writes: committed) }
        try write.outcome.withLock { $0! }.get()
        guard let value = result.withLock({ $0.take() }) else { throw RegistryError.unavailable("a registry write ended without a result") }
        return value
    }

    /// The most writes one transaction takes.
    static let maxGroup = 128

    /// Checkpoints finished so far (the tests wait on it).
    var checkpoints: Int { checkpointCount.load(ordering: .acquiring) }

    /// Registry writes waiting for the writer now (the tests wait on it).
    var queuedWrites: Int { queued.withLock { $0.count } }

    /// Commits `group` with the writer held. One write is its own INSERT; more run in one
    /// transaction, each in a savepoint (a body that fails is undone alone) and each reading what
    /// the earlier ones wrote. The index and the recent events take the changes once committed.
    private func commit(_ group: [QueuedWrite]) async {
        let grouped = group.count > 1
        var revision = index.withLock { $0.revision }
        let overlay = GroupOverlay()
        var written: [(QueuedWrite, SQLiteTransaction)] = []
        do {
            if grouped { try writer.sync { try $0.execute("BEGIN IMMEDIATE") } }
            for write in group {
                let tx = SQLiteTransaction(connection: writer, revision: revision) { name in
                    if let change = overlay.changes[name] { return change }
                    return self.index.withLock { $0.byName[name] }
                }
                if grouped { try writer.sync { try $0.execute("SAVEPOINT write") } }
                do {
                    try await write.body(tx)
                    if grouped { try writer.sync { try $0.execute("RELEASE write") } }
                } catch {
                    if grouped { try writer.sync { try $0.execute("ROLLBACK TO write; RELEASE write") } }
                    write.finish(error)
                    continue
                }
                if let event = tx.appended { revision = event.id }
                if let change = tx.change { overlay.changes[change.name] = .some(change.record) }
                written.append((write, tx))
            }
            if grouped { try writer.sync { try $0.execute("COMMIT") } }
        } catch {
            if grouped { _ = try? writer.sync { try $0.execute("ROLLBACK") } }
            for write in group where write.outcome.withLock({ $0 == nil }) { write.finish(error) }
            return
        }
        recent.withLock { r in
            for (_, tx) in written { if let event = tx.appended { r.add(event) } }
        }
        index.withLock { i in
            for (_, tx) in written { tx.apply(to: &i) }
        }
        for (write, _) in written { write.finish(nil) }
    }

    public func get(name: String) async throws -> StoredResource? {
        index.withLock { $0.byName[name] }
    }

    public func list(kind: ResourceKind?, after: String?, limit: Int) async throws -> [StoredResource] {
        index.withLock { $0.page(kind: kind, after: after, limit: limit) }
    }

    public func latestRevision() async throws -> Int64 {
        index.withLock { $0.revision }
    }

    /// The index changes only after a commit, so it is exact.
    public func readRevision() async throws -> Int64 { try await latestRevision() }

    static let projectByName = "SELECT name, revision, document FROM triad_projects WHERE name = ?"

    public func project(name: String) async throws -> StoredProject? {
        try await read { try $0.query(Self.projectByName, [.text(name)]).first.map(Self.project) }
    }

    public func projects() async throws -> [StoredProject] {
        try await scan { try $0.query("SELECT name, revision, document FROM triad_projects ORDER BY name").map(Self.project) }
    }

    public func events(after id: Int64, limit: Int) async throws -> EventBatch {
        if let batch = recent.withLock({ $0.batch(after: id, limit: limit) }) { return batch }
        return try await scan { db in
            let rows = try db.query(
                "SELECT id, type, name, kind, labels, time, document FROM triad_events WHERE id > ? ORDER BY id LIMIT ?",
                [.integer(Int(id)), .integer(limit)])
            return EventBatch(events: try rows.map(Self.event), oldestRetained: try Self.oldestEventID(db))
        }
    }

    public func compactEvents(keep: Int, notAfter: Int64?) async throws -> Int {
        try await bulkWrite { [self] db in
            let deleted = try db.query(
                "DELETE FROM triad_events WHERE id <= min((SELECT max(id) FROM triad_events) - ?, ?) RETURNING id",
                [.integer(keep), .integer(Int(notAfter ?? Int64.max))]
            ).count
            let oldest = try Self.oldestEventID(db)
            recent.withLock { $0.compacted(oldestRetained: oldest) }
            return deleted
        }
    }

    public func relayCursor(_ name: String) async throws -> Int64 {
        try await read { db in
            Int64(try db.query("SELECT last_id FROM triad_relay_cursors WHERE name = ?", [.text(name)]).first?.column("last_id")?.integer ?? 0)
        }
    }

    public func setRelayCursor(_ name: String, to id: Int64) async throws {
        _ = try await write { db in
            try db.query(
                "INSERT INTO triad_relay_cursors (name, last_id) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id",
                [.text(name), .integer(Int(id))])
        }
    }

    public func appendTelemetry(_ samples: [TelemetrySample]) async throws {
        guard !samples.isEmpty else { return }
        try await bulkWrite { db in
            // One transaction; the prepared INSERT is reused for every sample.
            try db.execute("BEGIN")
            do {
                for s in samples {
                    try db.query(
                        "INSERT INTO triad_telemetry (resource, time, received_at, sample_values) VALUES (?, ?, ?, ?)",
                        [.text(s.resource), .text(s.time), .text(s.receivedAt), .text(String(decoding: s.values, as: UTF8.self))])
                }
                try db.execute("COMMIT")
            } catch {
                try? db.execute("ROLLBACK")
                throw error
            }
        }
    }

    public func telemetry(resource: String, from: String?, to: String?, limit: Int) async throws -> [TelemetrySample] {
        let rows = try await scan { db in
            try db.query(
                """
                SELECT resource, time, received_at, sample_values FROM triad_telemetry
                WHERE resource = ? AND time >= ? AND time < ? ORDER BY time DESC, seq DESC LIMIT ?
                """, [.text(resource), .text(from ?? ""), .text(to ?? "~"), .integer(limit)])
        }
        return rows.reversed().map { row in
            TelemetrySample(
                resource: row.column("resource")?.string ?? "", time: row.column("time")?.string ?? "",
                receivedAt: row.column("received_at")?.string ?? "",
                values: Data((row.column("sample_values")?.string ?? "{}").utf8))
        }
    }

    public func compactTelemetry(receivedBefore: String) async throws -> Int {
        try await bulkWrite { db in
            try db.query("DELETE FROM triad_telemetry WHERE received_at < ? RETURNING seq", [.text(receivedBefore)]).count
        }
    }

    public func saveInvocation(_ invocation: Invocation) async throws {
        _ = try await write { db in
            try db.query(Self.upsertInvocation, Self.invocationBinds(invocation))
        }
    }

    public func invocation(id: String) async throws -> Invocation? {
        try await read { try $0.query("SELECT seq, document FROM triad_invocations WHERE id = ?", [.text(id)]).first.map(Self.invocation) }
    }

    public func invocations(_ query: InvocationQuery) async throws -> InvocationPage {
        var filter = "1 = 1"
        var binds: [SQLiteValue] = []
        if let resource = query.resource {
            filter += " AND resource = ?"
            binds.append(.text(resource))
        }
        if let caller = query.caller {
            filter += " AND caller = ?"
            binds.append(.text(caller))
        }
        if let since = query.since {
            filter += " AND started_at >= ?"
            binds.append(.text(since))
        }
        var pageFilter = filter
        var pageBinds = binds
        if let before = query.before {
            pageFilter += " AND seq < ?"
            pageBinds.append(.integer(Int(before)))
        }
        let (totals, rows) = try await scan { [filter, binds, pageFilter, pageBinds] db in
            let totals = try db.query("SELECT count(*) AS n, coalesce(sum(charged), 0.0) AS total FROM triad_invocations WHERE \(filter)", binds).first
            let rows = try db.query(
                "SELECT seq, document FROM triad_invocations WHERE \(pageFilter) ORDER BY seq DESC LIMIT ?",
                pageBinds + [.integer(query.limit + 1)])
            return (totals, rows)
        }
        var items = try rows.map(Self.invocation)
        var next: Int64?
        if items.count > query.limit {
            items.removeLast()
            next = items.last?.sequence
        }
        return InvocationPage(
            items: items, next: next, matched: totals?.column("n")?.integer ?? 0,
            totalCharged: totals?.column("total")?.double ?? 0)
    }

    public func unfinishedInvocations(node: String) async throws -> [Invocation] {
        try await scan { db in
            try db.query(
                "SELECT seq, document FROM triad_invocations WHERE node = ? AND state IN ('Pending', 'Running') ORDER BY seq",
                [.text(node)]
            ).map(Self.invocation)
        }
    }

    static let upsertInvocation = """
        INSERT INTO triad_invocations (id, seq, resource, caller, state, node, started_at, charged, document) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET state = excluded.state, charged = excluded.charged, document = excluded.document
        """

    static func invocationBinds(_ i: Invocation) -> [SQLiteValue] {
        [
            .text(i.id), .integer(Int(i.sequence)), .text(i.resource), .text(i.caller), .text(i.state.rawValue), .text(i.node),
            .text(i.startedAt), .double(i.charged), .text(String(decoding: i.document, as: UTF8.self)),
        ]
    }

    static func invocation(_ row: SQLiteRow) throws -> Invocation {
        var record = try JSONDecoder().decode(Invocation.self, from: Data((row.column("document")?.string ?? "").utf8))
        record.sequence = Int64(row.column("seq")?.integer ?? 0)
        return record
    }

    public func insertToken(_ token: TokenRecord) async throws {
        try await write { db in
            guard try db.query("SELECT name FROM triad_tokens WHERE name = ?", [.text(token.name)]).isEmpty else {
                throw RegistryError.tokenExists(name: token.name)
            }
            try db.query(
                "INSERT INTO triad_tokens (name, role, resource, secret_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                [
                    .text(token.name), .text(token.role.rawValue), token.resource.map(SQLiteValue.text) ?? .null,
                    .text(token.secretHash), .text(token.createdAt),
                ])
        }
    }

    public func token(secretHash: String) async throws -> TokenRecord? {
        try await read { try $0.query("SELECT * FROM triad_tokens WHERE secret_hash = ?", [.text(secretHash)]).first.map(Self.token) }
    }

    public func tokens() async throws -> [TokenRecord] {
        try await scan { try $0.query("SELECT * FROM triad_tokens ORDER BY name").map(Self.token) }
    }

    public func revokeToken(name: String, at time: String) async throws -> TokenRecord? {
        try await write { db in
            try db.query("UPDATE triad_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", [.text(time), .text(name)])
            return try db.query("SELECT * FROM triad_tokens WHERE name = ?", [.text(name)]).first.map(Self.token)
        }
    }

    public func activeAdminCount() async throws -> Int {
        try await read { db in
            try db.query("SELECT count(*) AS n FROM triad_tokens WHERE role = 'admin' AND revoked_at IS NULL").first?.column("n")?.integer ?? 0
        }
    }

    public func ping() async throws {
        _ = try await read { try $0.query("SELECT 1") }
    }

    private func close() async {
        // Taking each connection's lock waits for the statement using it, if any.
        writer.close()
        for reader in readers { reader.close() }
        checkpointer.close()
        fileLock.release()
    }

    static func resource(_ row: SQLiteRow) throws -> StoredResource {
        StoredResource(
            name: row.column("name")?.string ?? "",
            kind: try RowCoding.kind(row.column("kind")?.string ?? ""),
            labels: RowCoding.labels(row.column("labels")?.string ?? "{}"),
            revision: Int64(row.column("revision")?.integer ?? 0),
            document: Data((row.column("document")?.string ?? "").utf8))
    }

    static func project(_ row: SQLiteRow) -> StoredProject {
        StoredProject(
            name: row.column("name")?.string ?? "", revision: Int64(row.column("revision")?.integer ?? 0),
            document: Data((row.column("document")?.string ?? "").utf8))
    }

    /// The smallest id in the event log (nil: empty).
    static func oldestEventID(_ db: SQLiteDatabase) throws -> Int64? {
        try db.query("SELECT min(id) AS id FROM triad_events").first?.column("id")?.integer.map(Int64.init)
    }

    static func event(_ row: SQLiteRow) throws -> RegistryEvent {
        RegistryEvent(
            id: Int64(row.column("id")?.integer ?? 0),
            type: try RowCoding.eventType(row.column("type")?.string ?? ""),
            name: row.column("name")?.string ?? "",
            kind: try RowCoding.eventKind(row.column("kind")?.string ?? ""),
            labels: RowCoding.labels(row.column("labels")?.string ?? "{}"),
            time: row.column("time")?.string ?? "",
            document: Data((row.column("document")?.string ?? "").utf8))
    }

    static func token(_ row: SQLiteRow) throws -> TokenRecord {
        TokenRecord(
            name: row.column("name")?.string ?? "",
            role: try RowCoding.role(row.column("role")?.string ?? ""),
            resource: row.column("resource")?.string,
            secretHash: row.column("secret_hash")?.string ?? "",
            createdAt: row.column("created_at")?.string ?? "",
            revokedAt: row.column("revoked_at")?.string)
    }
}

/// One registry write on the writer connection: reads come from the index, the change is
/// remembered for it, and the event's INSERT writes everything. Used by one task at a time,
/// under the backend's write lock.
final class SQLiteTransaction: RegistryTransaction {
    let connection: SQLiteConnectionBox
    /// Reads the committed index without copying it (a copy would cost a whole dictionary per write).
    private let committed: (String) -> StoredResource?
    private let lastRevision: Int64
    /// The resource this write changed (nil record: deleted).
    private(set) var change: (name: String, record: StoredResource?)?
    /// The event this write appended, once committed.
    private(set) var appended: RegistryEvent?

    init(connection: SQLiteConnectionBox, revision: Int64, committed: @escaping (String) -> StoredResource?) {
        self.connection = connection
        self.lastRevision = revision
        self.committed = committed
    }

    func apply(to index: inout ResourceIndex) {
        guard let written = appended?.id else { return }
        if let change {
            if let record = change.record { index.put(record) } else { index.remove(change.name) }
        }
        index.revision = written
    }

    func nextRevision() async throws -> Int64 {
        lastRevision + 1
    }

    func load(name: String) async throws -> StoredResource? {
        if let change, change.name == name { return change.record }
        return committed(name)
    }

    /// Read on the writer connection: the write lock is held, so nothing changes it meanwhile.
    func loadProject(name: String) async throws -> StoredProject? {
        try connection.sync { try $0.query(SQLiteBackend.projectByName, [.text(name)]).first.map(SQLiteBackend.project) }
    }

    func insert(_ r: StoredResource) async throws { change = (r.name, r) }
    func update(_ r: StoredResource) async throws { change = (r.name, r) }
    func delete(name: String) async throws { change = (name, nil) }
    /// The event's document is the invocation record, and the ledger trigger writes its row from it.
    func put(_ invocation: Invocation) async throws {}

    func append(_ e: RegistryEvent) async throws {
        guard appended == nil else { throw RegistryError.unavailable("a registry write appends one event") }
        // One INSERT is the whole write: the schema's triggers apply it to the resources, to the
        // ledger (an operation event's document is the invocation record) or to the projects.
        _ = try connection.sync { db in
            try db.query(
                "INSERT INTO triad_events (id, type, name, kind, labels, time, document) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    .integer(Int(e.id)), .text(e.type.rawValue), .text(e.name), .text(e.kind.rawValue),
                    .text(RowCoding.labelsText(e.labels)), .text(e.time), .text(String(decoding: e.document, as: UTF8.self)),
                ])
        }
        appended = e
    }
}

/// Versioned schema changes, applied in order at start; each runs once.
enum SQLiteMigrations {
    static let steps = RegistrySchema.migrations(.sqlite)

    static func run(on db: SQLiteDatabase, logger: Logger) throws {
        try db.execute("CREATE TABLE IF NOT EXISTS triad_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        let applied = Set(try db.query("SELECT version FROM triad_migrations").compactMap { $0.column("version")?.integer })
        for step in steps where !applied.contains(step.version) {
            try db.execute("BEGIN IMMEDIATE")
            do {
                for statement in step.statements { try db.execute(statement) }
                try db.query(
                    "INSERT INTO triad_migrations (version, applied_at) VALUES (?, ?)",
                    [.integer(step.version), .text(Timestamp.format(Date()))])
                try db.execute("COMMIT")
                logger.info("applied registry migration", metadata: ["version": "\(step.version)", "backend": "sqlite"])
            } catch {
                try? db.execute("ROLLBACK")
                throw error
            }
        }
    }
}

/// A registry write waiting for the writer, and its outcome once its group is done.
final class QueuedWrite: Sendable {
    let body: @Sendable (any RegistryTransaction) async throws -> Void
    let outcome = Mutex<Result<Void, any Error>?>(nil)

    init(_ body: @escaping @Sendable (any RegistryTransaction) async throws -> Void) {
        self.body = body
    }

    func finish(_ error: (any Error)?) {
        outcome.withLock { $0 = error.map { .failure($0) } ?? .success(()) }
    }
}

/// What a group's earlier writes changed, read by its later ones (nil: deleted).
final class GroupOverlay {
    var changes: [String: StoredResource?] = [:]
}
