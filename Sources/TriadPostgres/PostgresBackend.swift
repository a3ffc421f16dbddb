import Foundation
import Logging
import PostgresNIO
import Synchronization
import TriadCore
import TriadSQL

/// The registry on PostgreSQL, for many replicas. Writers serialise on the revision counter's
/// row lock (held to commit), so event ids commit in order and the outbox never has a late gap.
/// Each replica serves reads of resources from memory (`ResourceCache`), kept current by its own
/// commits and by following the event log.
public final class PostgresBackend: RegistryBackend {
    public let client: PostgresClient
    private let logger: Logger
    private let cache: ResourceCache
    private let groups = GroupCommit()
    /// The read cache's bound, in resources (about 2 KB each, twice that for those this replica
    /// wrote and keeps decoded): past it, reads go to the database.
    public static let defaultCacheLimit = 200_000
    /// Relay cursor rows known to exist (see `relayRound`).
    private let relayCursorRows = Mutex<Set<String>>([])

    public struct URLError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Parses `postgres://user:password@host:port/database[?sslmode=disable|require]`.
    public static func configuration(url: String) throws -> PostgresClient.Configuration {
        guard let c = URLComponents(string: url), c.scheme == "postgres" || c.scheme == "postgresql", let host = c.host, !host.isEmpty else {
            throw URLError(description: "database URL must look like postgres://user:password@host:5432/database")
        }
        let database = c.path.hasPrefix("/") ? String(c.path.dropFirst()) : c.path
        let sslmode = c.queryItems?.first(where: { $0.name == "sslmode" })?.value ?? "disable"
        let tls: PostgresClient.Configuration.TLS
        switch sslmode {
        case "disable": tls = .disable
        case "prefer": tls = .prefer(.makeClientConfiguration())
        case "require", "verify-full": tls = .require(.makeClientConfiguration())
        default: throw URLError(description: "unsupported sslmode \(sslmode): use disable, prefer or require")
        }
        var config = PostgresClient.Configuration(
            host: host, port: c.port ?? 5432, username: c.user ?? "postgres", password: c.password,
            database: database.isEmpty ? nil : database, tls: tls)
        config.options.maximumConnections = 16
        return config
    }

    /// Runs `body` with a migrated backend. The connection pool runs as a child task of this
    /// call, so it lives exactly as long as `body`: when `body` returns or throws, the pool closes.
    /// The read cache is loaded before `body` runs and followed while it does; writes are
    /// committed in groups by a task that runs as long as `body`.
    public static func withBackend<T: Sendable>(
        url: String, searchPath: String? = nil, cacheLimit: Int = defaultCacheLimit, logger: Logger,
        _ body: (PostgresBackend) async throws -> T
    ) async throws -> T {
        var config = try configuration(url: url)
        if let searchPath { config.options.additionalStartupParameters = [("search_path", searchPath)] }
        return try await withRunningClient(config, logger: logger) { client in
            try await PostgresMigrations.run(on: client, logger: logger)
            let backend = PostgresBackend(client: client, cache: ResourceCache(limit: cacheLimit, logger: logger), logger: logger)
            try await backend.reloadCache()
            return try await withThrowingTaskGroup(of: Void.self, returning: T.self) { group in
                group.addTask { await backend.groups.run(backend.commit) }
                group.addTask { await backend.followOtherWriters() }
                defer { group.cancelAll() }
                return try await body(backend)
            }
        }
    }

    /// Runs `body` with a client whose connection pool runs as a child task of this call, so the
    /// pool lives exactly as long as `body`.
    public static func withRunningClient<T: Sendable>(
        _ configuration: PostgresClient.Configuration, logger: Logger, _ body: (PostgresClient) async throws -> T
    ) async throws -> T {
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        return try await withThrowingTaskGroup(of: Void.self, returning: T.self) { group in
            let (started, signal) = AsyncStream<Void>.makeStream()
            group.addTask {
                // `run()` marks the pool running before its first suspension; waiting for this
                // signal keeps the first query from leasing before that (postgres-nio warns then).
                signal.finish()
                await client.run()
            }
            for await _ in started {}
            defer { group.cancelAll() }
            return try await body(client)
        }
    }

    private init(client: PostgresClient, cache: ResourceCache, logger: Logger) {
        self.client = client
        self.cache = cache
        self.logger = logger
    }

    /// Whether reads go to the database because the registry outgrew the read cache.
    public var cacheIsOff: Bool { !cache.isOn }

    /// Loads every resource into the cache. The log's position is read first: events after it
    /// that the load already reflects are skipped when followed (older revisions never win).
    private func reloadCache() async throws {
        let revision = try await latestRevision()
        var resources: [StoredResource] = []
        let rows = try await client.query("SELECT name, kind, labels, revision, document FROM triad_resources", logger: logger)
        for try await row in rows.decode((String, String, String, Int64, String).self) { resources.append(try Self.resource(row)) }
        cache.reload(resources, revision: revision)
    }

    /// Follows the event log into the cache, woken by other writers' notifications and once a
    /// second (a notification lost while listening again is caught up then). Runs until cancelled.
    private func followOtherWriters() async {
        let (wakes, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await self.watchOtherWriters { wake.yield() } }
            group.addTask {
                while (try? await Task.sleep(for: .seconds(1))) != nil { wake.yield() }
            }
            for await _ in wakes {
                do {
                    try await catchUpCache()
                } catch  where Task.isCancelled {
                    break
                } catch {
                    logger.warning("the read cache could not follow the event log; trying again", metadata: ["error": "\(error)"])
                }
            }
            group.cancelAll()
        }
    }

    private func catchUpCache() async throws {
        while cache.isOn {
            let from = cache.followedRevision
            let events = try await Self.events(client.query(Self.eventsAfter(from, limit: 1000), logger: logger))
            if !cache.follow(events) {
                logger.info("the event log was compacted past the read cache's position; reloading", metadata: ["position": "\(from)"])
                try await reloadCache()
                continue
            }
            if events.count < 1000 { return }
        }
    }

    /// The write joins the next group (`GroupCommit`) and returns once the group has committed.
    public func withWriteTransaction<T: Sendable>(_ body: @escaping @Sendable (any RegistryTransaction) async throws -> T) async throws -> T {
        try await groups.write(body)
    }

    /// One group. First without a transaction when the read cache has followed the log to its
    /// end (`optimistically`); else, or when another replica committed meanwhile, in one
    /// transaction with the counter locked first (so every read the bodies make sees all that
    /// committed before), the bodies in turn, one statement for all they wrote.
    private func commit(_ writes: [PendingWrite]) async {
        if let outcomes = await optimistically(writes) {
            for (write, outcome) in zip(writes, outcomes) { write.finish(outcome) }
            return
        }
        var outcomes: [(any Error)?] = Array(repeating: nil, count: writes.count)
        var committed: CommittedGroup?
        let logger = self.logger
        do {
            try await client.withTransaction(logger: logger) { conn in
                var start: Int64?
                for try await value in try await conn.execute(LockRevisionCounter(), logger: logger) { start = value }
                guard let start else { throw RegistryError.unavailable("revision counter missing") }
                let group = GroupState(connection: conn, logger: logger, revision: start, cache: cache)
                outcomes = try await Self.run(writes, in: group)
                if !group.events.isEmpty {
                    var set = false
                    for try await _ in try await conn.execute(group.flush(expecting: start), logger: logger) { set = true }
                    guard set else { throw RegistryError.unavailable("the revision counter moved while locked") }
                    committed = CommittedGroup(changes: group.changes, events: group.events, start: start, end: group.revision)
                }
            }
        } catch {
            // Nothing of the group committed: the writes it would have carried fail with it.
            committed = nil
            for i in outcomes.indices where outcomes[i] == nil { outcomes[i] = error }
        }
        if let committed { cache.applyCommitted(committed) }
        for (write, outcome) in zip(writes, outcomes) { write.finish(outcome) }
    }

    /// The group in one round trip instead of four (BEGIN, the counter's lock, the write, COMMIT):
    /// the bodies read the cache, which has followed the log to revision `start`, and the write is
    /// one statement that commits only if the counter is still at `start` (compare and set), that
    /// is, if nobody has committed since and every read was the database's state. nil: not tried
    /// or not committed (another replica wrote first; nothing was written), and the group goes
    /// the locked way; its bodies run again there.
    private func optimistically(_ writes: [PendingWrite]) async -> [(any Error)?]? {
        guard cache.isOn else { return nil }
        let start = cache.followedRevision
        let logger = self.logger
        do {
            return try await client.withConnection { conn in
                let group = GroupState(connection: conn, logger: logger, revision: start, cache: cache)
                guard group.current != nil else { return nil }
                let outcomes = try await Self.run(writes, in: group)
                // A group that writes nothing has no statement to check its reads with.
                guard !group.events.isEmpty else { return nil }
                var set = false
                for try await _ in try await conn.execute(group.flush(expecting: start), logger: logger) { set = true }
                guard set else { return nil }
                cache.applyCommitted(CommittedGroup(changes: group.changes, events: group.events, start: start, end: group.revision))
                return outcomes
            }
        } catch {
            logger.debug("optimistic group commit failed; taking the lock", metadata: ["error.type": "\(type(of: error))"])
            return nil
        }
    }

    /// Runs each write's body against the group; a body that refuses (a conflict, a missing
    /// resource) takes no revision and writes nothing. Returns each write's refusal, if any; any
    /// other error ends the group.
    private static func run(_ writes: [PendingWrite], in group: GroupState) async throws -> [(any Error)?] {
        var outcomes: [(any Error)?] = Array(repeating: nil, count: writes.count)
        for (i, write) in writes.enumerated() {
            let tx = GroupTransaction(group)
            do {
                try await write.body(tx)
                try tx.merge()
            } catch let refusal as RegistryError {
                outcomes[i] = refusal
            }
        }
        return outcomes
    }

    public func get(name: String) async throws -> StoredResource? {
        if let cached = cache.read({ $0.byName[name] }) { return cached }
        for try await row in try await client.execute(ResourceByName(name: name), logger: logger) { return try Self.resource(row) }
        return nil
    }

    public func project(name: String) async throws -> StoredProject? {
        try await Self.projects(client.query("SELECT name, revision, document FROM triad_projects WHERE name = \(name)", logger: logger)).first
    }

    public func projects() async throws -> [StoredProject] {
        try await Self.projects(client.query("SELECT name, revision, document FROM triad_projects ORDER BY name", logger: logger))
    }

    /// Rows of `SELECT name, revision, document FROM triad_projects`.
    static func projects(_ rows: PostgresRowSequence) async throws -> [StoredProject] {
        var out: [StoredProject] = []
        for try await (name, revision, document) in rows.decode((String, Int64, String).self) {
            out.append(StoredProject(name: name, revision: revision, document: Data(document.utf8)))
        }
        return out
    }

    public func list(kind: ResourceKind?, after: String?, limit: Int) async throws -> [StoredResource] {
        if let page = cache.read({ $0.page(kind: kind, after: after, limit: limit) }) { return page }
        var out: [StoredResource] = []
        let rows = try await client.execute(ResourcePage(kind: kind?.rawValue, after: after ?? "", limit: Int64(limit)), logger: logger)
        for try await row in rows { out.append(try Self.resource(row)) }
        return out
    }

    /// How far the read cache has followed the log (its own later writes are in it too); the
    /// database's latest revision when the cache is off.
    public func readRevision() async throws -> Int64 {
        if cache.isOn { return cache.followedRevision }
        return try await latestRevision()
    }

    public func latestRevision() async throws -> Int64 {
        let rows = try await client.query("SELECT value FROM triad_counters WHERE name = 'revision'", logger: logger)
        for try await value in rows.decode(Int64.self) { return value }
        return 0
    }

    public func events(after id: Int64, limit: Int) async throws -> EventBatch {
        // What the cache has followed is in memory: a follower woken by this replica's own commit
        // (the event tail, the controller) reads it without a round trip.
        if let batch = cache.recentEvents(after: id, limit: limit) { return batch }
        // One round trip (each follower asks after every commit it hears of): the oldest retained
        // id on every row, and one row without an event when none follows `id`.
        let rows = try await client.query(
            """
            SELECT o.oldest, e.id, e.type, e.name, e.kind, e.labels, e.time, e.document
            FROM (SELECT min(id) AS oldest FROM triad_events) AS o
            LEFT JOIN LATERAL (
              SELECT id, type, name, kind, labels, time, document FROM triad_events WHERE id > \(id) ORDER BY id LIMIT \(limit)
            ) AS e ON true
            ORDER BY e.id
            """, logger: logger)
        var events: [RegistryEvent] = []
        var oldest: Int64?
        for try await r in rows.decode((Int64?, Int64?, String?, String?, String?, String?, String?, String?).self) {
            oldest = r.0
            guard let id = r.1, let type = r.2, let name = r.3, let kind = r.4, let labels = r.5, let time = r.6, let document = r.7 else {
                continue
            }
            events.append(
                RegistryEvent(
                    id: id, type: try RowCoding.eventType(type), name: name, kind: try RowCoding.eventKind(kind),
                    labels: RowCoding.labels(labels), time: time, document: Data(document.utf8)))
        }
        // A reader that saw an event reads the registry at least that new (the controller reads a
        // resource right after hearing of its change): the cache follows first when it is behind.
        if cache.isOn, let last = events.last, last.id > cache.followedRevision, !cache.follow(events) {
            try await catchUpCache()
        }
        return EventBatch(events: events, oldestRetained: oldest)
    }

    /// The schema this registry lives in (one database may hold several).
    static func currentSchema(_ conn: PostgresConnection, logger: Logger) async throws -> String {
        for try await s in try await conn.query("SELECT current_schema()", logger: logger).decode(String.self) { return s }
        return ""
    }

    static func eventsAfter(_ id: Int64, limit: Int) -> PostgresQuery {
        "SELECT id, type, name, kind, labels, time, document FROM triad_events WHERE id > \(id) ORDER BY id LIMIT \(limit)"
    }

    static func events(_ rows: PostgresRowSequence) async throws -> [RegistryEvent] {
        var events: [RegistryEvent] = []
        for try await r in rows.decode((Int64, String, String, String, String, String, String).self) {
            events.append(
                RegistryEvent(
                    id: r.0, type: try RowCoding.eventType(r.1), name: r.2, kind: try RowCoding.eventKind(r.3),
                    labels: RowCoding.labels(r.4), time: r.5, document: Data(r.6.utf8)))
        }
        return events
    }

    public func compactEvents(keep: Int, notAfter: Int64?) async throws -> Int {
        let keep64 = Int64(keep)
        let limit = notAfter ?? Int64.max
        let rows = try await client.query(
            """
            DELETE FROM triad_events WHERE id <= least((SELECT max(id) FROM triad_events) - \(keep64), \(limit)) RETURNING id
            """, logger: logger)
        var n = 0
        var through: Int64 = 0
        for try await id in rows.decode(Int64.self) {
            n += 1
            through = max(through, id)
        }
        // Readers behind this are told of the gap by the database, not answered from memory. (A
        // compaction by another replica is not heard of here: readers behind it that this
        // replica's memory still covers get every event after their position, which is no gap.)
        if n > 0 { cache.compacted(through: through) }
        return n
    }

    public func relayCursor(_ name: String) async throws -> Int64 {
        let rows = try await client.query("SELECT last_id FROM triad_relay_cursors WHERE name = \(name)", logger: logger)
        for try await id in rows.decode(Int64.self) { return id }
        return 0
    }

    public func setRelayCursor(_ name: String, to id: Int64) async throws {
        _ = try await client.query(
            """
            INSERT INTO triad_relay_cursors (name, last_id) VALUES (\(name), \(id))
            ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id
            """, logger: logger)
    }

    public func appendTelemetry(_ samples: [TelemetrySample]) async throws {
        guard !samples.isEmpty else { return }
        // One statement for the whole batch: arrays unnested into rows.
        _ = try await client.query(
            """
            INSERT INTO triad_telemetry (resource, time, received_at, sample_values)
            SELECT * FROM unnest(\(samples.map(\.resource))::text[], \(samples.map(\.time))::text[],
                                 \(samples.map(\.receivedAt))::text[], \(samples.map { String(decoding: $0.values, as: UTF8.self) })::text[])
            """, logger: logger)
    }

    public func telemetry(resource: String, from: String?, to: String?, limit: Int) async throws -> [TelemetrySample] {
        let rows = try await client.query(
            """
            SELECT resource, time, received_at, sample_values FROM triad_telemetry
            WHERE resource = \(resource) AND time >= \(from ?? "") AND time < \(to ?? "~")
            ORDER BY time DESC, seq DESC LIMIT \(Int64(limit))
            """, logger: logger)
        var samples: [TelemetrySample] = []
        for try await (r, time, received, values) in rows.decode((String, String, String, String).self) {
            samples.append(TelemetrySample(resource: r, time: time, receivedAt: received, values: Data(values.utf8)))
        }
        return samples.reversed()
    }

    public func compactTelemetry(receivedBefore: String) async throws -> Int {
        let rows = try await client.query("DELETE FROM triad_telemetry WHERE received_at < \(receivedBefore) RETURNING seq", logger: logger)
        var n = 0
        for try await _ in rows { n += 1 }
        return n
    }

    /// The cursor row is the lease: locked with SKIP LOCKED for the whole round (read, publish,
    /// move), so of several replicas exactly one relays at a time, and an event is published
    /// twice only if a replica dies between the broker's confirm and this commit.
    public func relayRound(_ name: String, limit: Int, deliver: @Sendable ([RegistryEvent]) async throws -> Void) async throws -> RelayRound {
        // The row must exist to be locked; made once per relay name, not on every round.
        if !relayCursorRows.withLock({ $0.contains(name) }) {
            _ = try await client.query(
                "INSERT INTO triad_relay_cursors (name, last_id) VALUES (\(name), 0) ON CONFLICT (name) DO NOTHING",
                logger: logger)
            relayCursorRows.withLock { _ = $0.insert(name) }
        }
        let logger = self.logger
        return try await client.withTransaction(logger: logger) { conn in
            var cursor: Int64?
            let locked = try await conn.query(
                "SELECT last_id FROM triad_relay_cursors WHERE name = \(name) FOR UPDATE SKIP LOCKED", logger: logger)
            for try await id in locked.decode(Int64.self) { cursor = id }
            guard let cursor else { return .busy }
            let batch = try await Self.events(conn.query(Self.eventsAfter(cursor, limit: limit), logger: logger))
            guard let last = batch.last else { return .idle }
            try await deliver(batch)
            _ = try await conn.query("UPDATE triad_relay_cursors SET last_id = \(last.id) WHERE name = \(name)", logger: logger)
            return .delivered(count: batch.count, cursor: last.id)
        }
    }

    /// LISTEN on `triad_events` on a pooled connection held for it, keeping the notifications of
    /// this schema; after a lost connection it listens again (changes meanwhile are caught by the
    /// callers' own polling).
    public func watchOtherWriters(_ changed: @escaping @Sendable () -> Void) async throws {
        let logger = self.logger
        while !Task.isCancelled {
            do {
                try await client.withConnection { conn in
                    let schema = try await Self.currentSchema(conn, logger: logger)
                    try await conn.listen(on: "triad_events") { notifications in
                        for try await n in notifications where n.payload == schema { changed() }
                    }
                }
            } catch is CancellationError {
                return
            } catch {
                logger.warning("registry change notifications lost; listening again", metadata: ["error": "\(error)"])
                try await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Leadership is a session advisory lock held by one pooled connection for as long as the
    /// body runs; the connection is pinged every second, and when it dies (or the process is
    /// killed) PostgreSQL releases the lock, so a standby's next attempt takes over.
    public func lead(_ name: String, _ body: @escaping @Sendable () async throws -> Void) async throws -> Bool {
        let logger = self.logger
        return try await client.withConnection { conn in
            // One leader per registry: the key is the name and the schema (deployments may share
            // a database), hashed to 64 bits (FNV-1a).
            let schema = try await Self.currentSchema(conn, logger: logger)
            let key = Int64(bitPattern: "\(name)@\(schema)".utf8.reduce(UInt64(0xcbf2_9ce4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 })
            var acquired = false
            for try await got in try await conn.query("SELECT pg_try_advisory_lock(\(key))", logger: logger).decode(Bool.self) {
                acquired = got
            }
            guard acquired else { return false }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await body() }
                group.addTask {
                    while true {
                        try await Task.sleep(for: .seconds(1))
                        _ = try await conn.query("SELECT 1", logger: logger)
                    }
                }
                _ = try await group.next()
                group.cancelAll()
            }
            _ = try? await conn.query("SELECT pg_advisory_unlock(\(key))", logger: logger)
            return true
        }
    }

    public func saveInvocation(_ invocation: Invocation) async throws {
        let i = invocation
        let document = String(decoding: i.document, as: UTF8.self)
        _ = try await client.query(
            """
            INSERT INTO triad_invocations (id, seq, resource, caller, state, node, started_at, charged, document)
            VALUES (\(i.id), \(i.sequence), \(i.resource), \(i.caller), \(i.state.rawValue), \(i.node), \(i.startedAt), \(i.charged), \(document))
            ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, charged = EXCLUDED.charged, document = EXCLUDED.document
            """, logger: logger)
    }

    public func invocation(id: String) async throws -> Invocation? {
        try await Self.invocations(client.query("SELECT seq, document FROM triad_invocations WHERE id = \(id)", logger: logger)).first
    }

    public func invocations(_ query: InvocationQuery) async throws -> InvocationPage {
        let (resource, caller, since) = (query.resource, query.caller, query.since)
        var matched = 0
        var total = 0.0
        let totals = try await client.query(
            """
            SELECT count(*), coalesce(sum(charged), 0) FROM triad_invocations
            WHERE (\(resource)::text IS NULL OR resource = \(resource)) AND (\(caller)::text IS NULL OR caller = \(caller))
              AND (\(since)::text IS NULL OR started_at >= \(since))
            """, logger: logger)
        for try await (n, sum) in totals.decode((Int64, Double).self) { (matched, total) = (Int(n), sum) }
        let before = query.before
        let limit = Int64(query.limit + 1)
        var items = try await Self.invocations(
            client.query(
                """
                SELECT seq, document FROM triad_invocations
                WHERE (\(resource)::text IS NULL OR resource = \(resource)) AND (\(caller)::text IS NULL OR caller = \(caller))
                  AND (\(since)::text IS NULL OR started_at >= \(since)) AND (\(before)::bigint IS NULL OR seq < \(before))
                ORDER BY seq DESC LIMIT \(limit)
                """, logger: logger))
        var next: Int64?
        if items.count > query.limit {
            items.removeLast()
            next = items.last?.sequence
        }
        return InvocationPage(items: items, next: next, matched: matched, totalCharged: total)
    }

    public func unfinishedInvocations(node: String) async throws -> [Invocation] {
        try await Self.invocations(
            client.query(
                "SELECT seq, document FROM triad_invocations WHERE node = \(node) AND state IN ('Pending', 'Running') ORDER BY seq",
                logger: logger))
    }

    static func invocations(_ rows: PostgresRowSequence) async throws -> [Invocation] {
        var out: [Invocation] = []
        for try await (seq, document) in rows.decode((Int64, String).self) {
            var record = try JSONDecoder().decode(Invocation.self, from: Data(document.utf8))
            record.sequence = seq
            out.append(record)
        }
        return out
    }

    public func insertToken(_ token: TokenRecord) async throws {
        let rows = try await client.query(
            """
            INSERT INTO triad_tokens (name, role, resource, secret_hash, created_at)
            VALUES (\(token.name), \(token.role.rawValue), \(token.resource), \(token.secretHash), \(token.createdAt))
            ON CONFLICT (name) DO NOTHING RETURNING name
            """, logger: logger)
        var inserted = false
        for try await _ in rows { inserted = true }
        if !inserted { throw RegistryError.tokenExists(name: token.name) }
    }

    public func token(secretHash: String) async throws -> TokenRecord? {
        try await tokens(where: "secret_hash", equals: secretHash).first
    }

    public func tokens() async throws -> [TokenRecord] {
        try await collectTokens(
            try await client.query(
                "SELECT name, role, resource, secret_hash, created_at, revoked_at FROM triad_tokens ORDER BY name", logger: logger))
    }

    private func tokens(where column: String, equals value: String) async throws -> [TokenRecord] {
        let rows: PostgresRowSequence
        if column == "name" {
            rows = try await client.query(
                "SELECT name, role, resource, secret_hash, created_at, revoked_at FROM triad_tokens WHERE name = \(value)", logger: logger)
        } else {
            rows = try await client.query(
                "SELECT name, role, resource, secret_hash, created_at, revoked_at FROM triad_tokens WHERE secret_hash = \(value)", logger: logger)
        }
        return try await collectTokens(rows)
    }

    private func collectTokens(_ rows: PostgresRowSequence) async throws -> [TokenRecord] {
        var out: [TokenRecord] = []
        for try await r in rows.decode((String, String, String?, String, String, String?).self) {
            out.append(TokenRecord(name: r.0, role: try RowCoding.role(r.1), resource: r.2, secretHash: r.3, createdAt: r.4, revokedAt: r.5))
        }
        return out
    }

    public func revokeToken(name: String, at time: String) async throws -> TokenRecord? {
        _ = try await client.query(
            "UPDATE triad_tokens SET revoked_at = \(time) WHERE name = \(name) AND revoked_at IS NULL", logger: logger)
        return try await tokens(where: "name", equals: name).first
    }

    public func activeAdminCount() async throws -> Int {
        let rows = try await client.query(
            "SELECT count(*) FROM triad_tokens WHERE role = 'admin' AND revoked_at IS NULL", logger: logger)
        for try await n in rows.decode(Int64.self) { return Int(n) }
        return 0
    }

    public func ping() async throws {
        _ = try await client.query("SELECT 1", logger: logger)
    }

    static func resource(_ r: (String, String, String, Int64, String)) throws -> StoredResource {
        StoredResource(name: r.0, kind: try RowCoding.kind(r.1), labels: RowCoding.labels(r.2), revision: r.3, document: Data(r.4.utf8))
    }
}

/// Statements that read one resource row by name, prepared once per connection.
protocol ResourceRowByName: PostgresPreparedStatement where Row == (String, String, String, Int64, String) {
    var name: String { get }
}

extension ResourceRowByName {
    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings()
        bindings.append(name)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

struct ResourceByName: ResourceRowByName {
    static let sql = "SELECT name, kind, labels, revision, document FROM triad_resources WHERE name = $1"
    var name: String
}

struct ResourcePage: PostgresPreparedStatement {
    static let sql = """
        SELECT name, kind, labels, revision, document FROM triad_resources
        WHERE name > $1 AND ($2::text IS NULL OR kind = $2) ORDER BY name LIMIT $3
        """
    typealias Row = (String, String, String, Int64, String)
    var kind: String?
    var after: String
    var limit: Int64

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings()
        bindings.append(after)
        bindings.append(kind)
        bindings.append(limit)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Row.self) }
}

/// Versioned schema changes, applied in order at start under an advisory lock, so replicas
/// starting together migrate once.
enum PostgresMigrations {
    static let lockKey: Int64 = 0x7472_6961_6401  // "triad" + 1

    static let steps = RegistrySchema.migrations(.postgres)

    static func run(on client: PostgresClient, logger: Logger) async throws {
        try await client.withTransaction(logger: logger) { conn in
            _ = try await conn.query("SELECT pg_advisory_xact_lock(\(lockKey))", logger: logger)
            _ = try await conn.query(
                "CREATE TABLE IF NOT EXISTS triad_migrations (version INT PRIMARY KEY, applied_at TEXT NOT NULL)", logger: logger)
            var applied = Set<Int>()
            for try await v in try await conn.query("SELECT version FROM triad_migrations", logger: logger).decode(Int32.self) {
                applied.insert(Int(v))
            }
            for step in steps where !applied.contains(step.version) {
                for statement in step.statements {
                    _ = try await conn.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                let version = Int32(step.version)
                let now = Timestamp.format(Date())
                _ = try await conn.query("INSERT INTO triad_migrations (version, applied_at) VALUES (\(version), \(now))", logger: logger)
                logger.info("applied registry migration", metadata: ["version": "\(step.version)", "backend": "postgres"])
            }
        }
    }
}
