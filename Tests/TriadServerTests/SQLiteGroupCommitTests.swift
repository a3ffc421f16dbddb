import Foundation
import Synchronization
import Testing
import TriadCore
import TriadTesting

@testable import TriadSQLite

/// Writes that queue while the SQLite writer is busy are committed as one group: each writer
/// gets its own outcome, later writes in the group read what earlier ones wrote, a write that
/// fails is undone alone, and revisions stay gap-free, in the file as in memory.
@Suite("SQLite group commit")
struct SQLiteGroupCommitTests {
    static func resource(_ name: String) -> Resource {
        Resource(metadata: ObjectMeta(name: name), spec: ResourceSpec(kind: .device))
    }

    struct Refused: Error {}

    @Test func queuedWritesCommitTogetherEachWithItsOwnOutcome() async throws {
        let path = try TestPaths.temporaryDirectory() + "/triad.db"
        try await SQLiteBackend.withBackend(path: path, logger: TestEnvironment.logger) { backend in
            let registry = Registry(backend: backend)
            let template = try await registry.create(Self.resource("template"))

            // A write holds the writer until the others have queued behind it.
            let (opened, open) = AsyncStream<Void>.makeStream()
            let holding = Atomic<Bool>(false)
            let holder = Task {
                try await backend.withWriteTransaction { _ in
                    holding.store(true, ordering: .releasing)
                    for await _ in opened { break }
                }
            }
            try await eventually("the writer is held") { holding.load(ordering: .acquiring) }

            let names = (0..<10).map { "grouped-\($0)" }
            let creates = names.map { name in Task { try await registry.create(Self.resource(name)) } }
            try await eventually("the creates have queued") { backend.queuedWrites == names.count }
            // A second creator of a name created earlier in the same group: it reads that write.
            let duplicate = Task { try await registry.create(Self.resource("grouped-0")) }
            try await eventually("the duplicate has queued") { backend.queuedWrites == names.count + 1 }
            // A write that fails after appending its event: only it is undone.
            let failing = Task {
                try await backend.withWriteTransaction { tx in
                    let revision = try await tx.nextRevision()
                    let document = String(decoding: template.document, as: UTF8.self).replacingOccurrences(of: #""template""#, with: #""doomed""#)
                    let record = StoredResource(name: "doomed", kind: .device, labels: [:], revision: revision, document: Data(document.utf8))
                    try await tx.insert(record)
                    try await tx.append(
                        RegistryEvent(
                            id: revision, type: .created, name: "doomed", kind: .device, labels: [:], time: "2026-12-07T00:00:00Z", document: record.document))
                    throw Refused()
                }
            }
            let last = Task { try await registry.create(Self.resource("after-the-failure")) }
            try await eventually("every write has queued") { backend.queuedWrites == names.count + 3 }
            open.yield()
            try await holder.value

            var created: [StoredResource] = []
            for task in creates { created.append(try await task.value) }
            await #expect(throws: RegistryError.alreadyExists(name: "grouped-0")) { try await duplicate.value }
            await #expect(throws: Refused.self) { try await failing.value }
            created.append(try await last.value)

            let revisions = created.map(\.revision).sorted()
            #expect(revisions == Array((template.revision + 1)...(template.revision + 11)), "gap-free: the failed write took no revision")
            let events = try await backend.events(after: template.revision, limit: 100).events
            #expect(events.map(\.id) == revisions)
            #expect(!events.contains { $0.name == "doomed" })
            #expect(try await registry.find("doomed") == nil)
            for record in created { #expect(try await registry.get(record.name) == record) }
        }
        // What the group wrote is in the file.
        try await SQLiteBackend.withBackend(path: path, logger: TestEnvironment.logger) { backend in
            let names = try await backend.list(kind: nil, after: nil, limit: 100).map(\.name)
            #expect(names.count == 12)
            #expect(!names.contains("doomed"))
            #expect(try await backend.latestRevision() == 12)
        }
    }

    /// Under steady writes the WAL file stops growing: after a checkpoint the writes start it
    /// over. (A passive checkpoint alone never caught up with them, and the WAL grew by every
    /// write, without end.)
    @Test func theWALStartsOverAfterACheckpoint() async throws {
        let path = try TestPaths.temporaryDirectory() + "/triad.db"
        let walSize = { (try? FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int) ?? -1 }
        try await SQLiteBackend.withBackend(path: path, logger: TestEnvironment.logger) { backend in
            let registry = Registry(backend: backend)
            for i in 0..<(SQLiteBackend.checkpointEvery + 100) { _ = try await registry.create(Self.resource("steady-\(i)")) }
            try await eventually("a checkpoint has run") { backend.checkpoints >= 1 }
            let afterCheckpoint = walSize()
            #expect(afterCheckpoint > 0)
            // Fewer writes than the WAL already held, and fewer than make the next checkpoint due.
            for i in 0..<200 { _ = try await registry.create(Self.resource("after-\(i)")) }
            #expect(backend.checkpoints == 1)
            #expect(walSize() == afterCheckpoint, "the WAL grew from \(afterCheckpoint) to \(walSize()) bytes after a checkpoint")
        }
    }
}
