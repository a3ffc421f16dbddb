import Foundation
import Logging
import Testing
import TriadCore
import TriadTesting

@testable import TriadPostgres

/// The PostgreSQL backend serves reads from memory: its own writes at once, other replicas'
/// writes once the event log says so, against the real PostgreSQL that scripts/test.sh starts.
@Suite("Read cache on PostgreSQL")
struct ReadCacheTests {
    static func resource(_ name: String, labels: [String: String]? = nil) -> Resource {
        Resource(metadata: ObjectMeta(name: name, labels: labels), spec: ResourceSpec(kind: .device))
    }

    @Test func aWriteOnOneReplicaIsReadOnTheOtherAndAtOnceOnItsOwn() async throws {
        try await TestEnvironment.withBackend(.postgres) { a, schema in
            try await TestEnvironment.withBackend(.postgres, reuse: schema) { b, _ in
                let onA = Registry(backend: a)
                let onB = Registry(backend: b)

                let created = try await onA.create(Self.resource("fan", labels: ["floor": "3"]))
                #expect(try await onA.get("fan") == created, "read-your-writes on the writing replica")
                try await eventually("the other replica reads the new resource") { (try? await onB.get("fan")) == created }
                #expect(try await b.list(kind: .device, after: nil, limit: 10).map(\.name) == ["fan"])

                var changed = Self.resource("fan", labels: ["floor": "4"])
                changed.spec.aliasName = "Pantry fan"
                let (replaced, _) = try await onB.replace(changed, precondition: nil)
                #expect(try await onB.get("fan") == replaced)
                try await eventually("the first replica reads the change") { (try? await onA.get("fan")) == replaced }

                _ = try await onA.delete("fan", precondition: nil)
                await #expect(throws: RegistryError.notFound(name: "fan")) { try await onA.get("fan") }
                try await eventually("the other replica no longer reads it") { (try? await onB.get("fan")) == nil }
                #expect(try await b.list(kind: nil, after: nil, limit: 10).isEmpty)
            }
        }
    }

    /// Whoever reads an event from a replica's log reads that replica's registry at least as new
    /// (the controller reconciles a resource right after reading of its change). Here the other
    /// replica's write notifies nobody, so only the log read can bring the cache up to date.
    @Test func aReplicaThatReadsAnEventReadsTheResourceItNames() async throws {
        try await TestEnvironment.withBackend(.postgres) { a, schema in
            try await TestEnvironment.withBackend(.postgres, reuse: schema) { b, _ in
                try await TestEnvironment.postgresAdmin("ALTER TABLE \(schema).triad_events DISABLE TRIGGER triad_events_notify")
                let start = try await b.latestRevision()
                let created = try await Registry(backend: a).create(Self.resource("fan"))
                let batch = try await b.events(after: start, limit: 10)
                #expect(batch.events.map(\.name) == ["fan"])
                #expect(try await Registry(backend: b).get("fan") == created)
            }
        }
    }

    /// Past its bound the cache turns off and reads are the database's (still correct).
    @Test func pastItsBoundReadsGoToTheDatabase() async throws {
        let schema = TestEnvironment.uniqueName("t")
        try await TestEnvironment.postgresAdmin("CREATE SCHEMA \(schema)")
        try await PostgresBackend.withBackend(url: try TestEnvironment.postgresURL(), searchPath: schema, cacheLimit: 2, logger: TestEnvironment.logger) {
            backend in
            let registry = Registry(backend: backend)
            for name in ["a", "b", "c"] { _ = try await registry.create(Self.resource(name)) }
            try await eventually("the cache turns itself off") { backend.cacheIsOff }
            #expect(try await backend.list(kind: nil, after: nil, limit: 10).map(\.name) == ["a", "b", "c"])
            _ = try await registry.delete("b", precondition: nil)
            #expect(try await backend.get(name: "b") == nil)
            #expect(try await backend.get(name: "c")?.name == "c")
        }
    }

    /// A replica writes without the counter's lock while its cache is current, and its write
    /// commits only if nobody wrote since. Here another writer changes the fan and takes a
    /// revision without an event, so this replica cannot hear of it: a write made against its
    /// stale copy is checked against the database (a conflict), and one without a precondition
    /// commits after the other writer's revision.
    @Test func aWriteAgainstAStaleCacheIsCheckedAgainstTheDatabase() async throws {
        try await TestEnvironment.withBackend(.postgres) { backend, schema in
            let registry = Registry(backend: backend)
            let created = try await registry.create(Self.resource("fan"))
            try await TestEnvironment.postgresAdmin(
                """
                WITH c AS (UPDATE \(schema).triad_counters SET value = value + 1 WHERE name = 'revision' RETURNING value)
                UPDATE \(schema).triad_resources SET revision = c.value FROM c WHERE name = 'fan'
                """)
            var changed = Self.resource("fan")
            changed.spec.aliasName = "Pantry fan"
            let stale = VersionPrecondition(source: .resourceVersion, version: String(created.revision))
            await #expect {
                try await registry.replace(changed, precondition: stale)
            } throws: { error in
                if case RegistryError.conflict = error { return true }
                return false
            }
            let (replaced, _) = try await registry.replace(changed, precondition: nil)
            #expect(replaced.revision == created.revision + 2)
            #expect(try await registry.get("fan") == replaced)
        }
    }

    static func event(_ id: Int64, _ type: RegistryEventType, _ name: String) -> RegistryEvent {
        RegistryEvent(id: id, type: type, name: name, kind: .device, labels: [:], time: "2026-12-06T00:00:00Z", document: Data("{\"r\":\(id)}".utf8))
    }

    static func stored(_ name: String, _ revision: Int64) -> StoredResource {
        StoredResource(name: name, kind: .device, labels: [:], revision: revision, document: Data("{\"r\":\(revision)}".utf8))
    }

    /// Older news never overwrites newer, and a gap in the log is refused (the caller reloads).
    @Test func theLogNeverUndoesALaterOwnWrite() {
        let cache = ResourceCache(limit: 100, logger: Logger(label: "test"))
        cache.reload([Self.stored("fan", 1)], revision: 1)
        // Another replica wrote 2 and 4; this one updated the fan at 3 and deleted the lamp at 5
        // before following the log.
        cache.applyCommitted(
            CommittedGroup(
                changes: [.init(name: "fan", record: Self.stored("fan", 3), revision: 3)], events: [Self.event(3, .updated, "fan")], start: 2, end: 3))
        cache.applyCommitted(
            CommittedGroup(changes: [.init(name: "lamp", record: nil, revision: 5)], events: [Self.event(5, .deleted, "lamp")], start: 4, end: 5))
        #expect(cache.followedRevision == 1, "2 and 4 are not followed yet")
        #expect(cache.follow([Self.event(2, .updated, "fan"), Self.event(3, .updated, "fan"), Self.event(4, .created, "lamp")]))
        #expect(cache.read { $0.byName["fan"]?.revision } == 3)
        #expect(cache.read { $0.byName["lamp"] } == .some(nil), "the later deletion stands")
        #expect(cache.follow([Self.event(5, .deleted, "lamp"), Self.event(6, .created, "lamp")]))
        #expect(cache.read { $0.byName["lamp"]?.revision } == 6)
        #expect(cache.followedRevision == 6)
        // A group of this replica's right after what was followed moves the position with it,
        // and the log's copy of it is then skipped.
        cache.applyCommitted(
            CommittedGroup(
                changes: [.init(name: "fan", record: Self.stored("fan", 7), revision: 7)],
                events: [Self.event(7, .updated, "fan"), Self.event(8, .completed, "fan")], start: 6, end: 8))
        #expect(cache.followedRevision == 8)
        #expect(cache.follow([Self.event(7, .updated, "fan"), Self.event(8, .completed, "fan")]))
        #expect(cache.read { $0.byName["fan"]?.revision } == 7)
        #expect(!cache.follow([Self.event(10, .updated, "fan")]), "9 is missing")
        #expect(cache.followedRevision == 8)
        // What was followed, from the log or from its own commits in order, is served from
        // memory; what is older than that, or not followed yet, is the database's to answer.
        #expect(cache.recentEvents(after: 1, limit: 100)?.events.map(\.id) == [2, 3, 4, 5, 6, 7, 8])
        #expect(cache.recentEvents(after: 5, limit: 2)?.events.map(\.id) == [6, 7])
        #expect(
            cache.recentEvents(after: 5, limit: 2)?.events.map(\.document) == [
                Self.event(6, .created, "lamp").document, Self.event(7, .updated, "fan").document,
            ])
        #expect(cache.recentEvents(after: 8, limit: 100) == nil, "nothing followed after 8: the database may have more")
        #expect(cache.recentEvents(after: 0, limit: 100) == nil, "event 1 was never seen")
        cache.reload([Self.stored("fan", 9)], revision: 9)
        #expect(cache.recentEvents(after: 7, limit: 100) == nil, "a reload forgets the events")
    }
}
