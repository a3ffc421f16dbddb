import Foundation
import Testing
import TriadCore

/// One contract, two backends: every test here runs against SQLite and against PostgreSQL.
@Suite("Registry conformance")
struct RegistryConformanceTests {
    static func resource(_ name: String, kind: ResourceKind = .device, labels: [String: String]? = nil) -> Resource {
        var spec = ResourceSpec(kind: kind)
        spec.description = ["brand": "Acme"]
        return Resource(metadata: ObjectMeta(name: name, labels: labels), spec: spec)
    }

    /// The stores the contract is checked on: the two SQL backends and the in-memory one.
    enum Store: String, CaseIterable, CustomTestStringConvertible, Sendable {
        case sqlite, postgres, memory
        var testDescription: String { rawValue }
    }

    func withStore(_ store: Store, _ body: (any RegistryBackend) async throws -> Void) async throws {
        switch store {
        case .sqlite: try await TestEnvironment.withBackend(.sqlite) { backend, _ in try await body(backend) }
        case .postgres: try await TestEnvironment.withBackend(.postgres) { backend, _ in try await body(backend) }
        case .memory: try await body(InMemoryBackend())
        }
    }

    func withRegistry(_ store: Store, _ body: (Registry) async throws -> Void) async throws {
        try await withStore(store) { try await body(Registry(backend: $0)) }
    }

    @Test(arguments: Store.allCases)
    func createGetReplaceDelete(_ kind: Store) async throws {
        try await withRegistry(kind) { registry in
            let created = try await registry.create(Self.resource("coffee-3f"))
            let doc = try created.decode()
            #expect(doc.metadata.generation == 1)
            #expect(doc.metadata.uid != nil)
            #expect(doc.metadata.resourceVersion == String(created.revision))
            #expect(doc.status?.phase == .pending)
            #expect(doc.status?.probePhase == .notReady)
            #expect(try await registry.get("coffee-3f") == created)

            await #expect(throws: RegistryError.alreadyExists(name: "coffee-3f")) { try await registry.create(Self.resource("coffee-3f")) }

            var changed = Self.resource("coffee-3f", labels: ["a": "b"])
            changed.spec.aliasName = "Pantry coffee"
            let (replaced, wasCreated) = try await registry.replace(changed, precondition: nil)
            #expect(!wasCreated)
            let r = try replaced.decode()
            #expect(r.metadata.generation == 2)
            #expect(r.metadata.uid == doc.metadata.uid)
            #expect(r.metadata.creationTimestamp == doc.metadata.creationTimestamp)
            #expect(replaced.revision > created.revision)
            #expect(r.spec.aliasName == "Pantry coffee")

            let deleted = try await registry.delete("coffee-3f", precondition: nil)
            #expect(deleted.revision > replaced.revision)
            await #expect(throws: RegistryError.notFound(name: "coffee-3f")) { try await registry.get("coffee-3f") }
            await #expect(throws: RegistryError.notFound(name: "coffee-3f")) { try await registry.delete("coffee-3f", precondition: nil) }
        }
    }

    @Test(arguments: Store.allCases)
    func generationMovesOnSpecWritesOnly(_ kind: Store) async throws {
        try await withRegistry(kind) { registry in
            let v1 = try await registry.create(Self.resource("lamp"))
            // Label-only write: new version, same generation.
            let (v2, _) = try await registry.replace(Self.resource("lamp", labels: ["floor": "3"]), precondition: nil)
            #expect(try v2.decode().metadata.generation == 1)
            #expect(v2.revision > v1.revision)
            // Status write: new version, same generation.
            let v3 = try await registry.writeStatus("lamp", .merge(.object(["phase": .string("Running")])), precondition: nil)
            #expect(try v3.decode().metadata.generation == 1)
            #expect(try v3.decode().status?.phase == .running)
            #expect(try v3.decode().status?.createTime != nil, "a merge keeps the other status fields")
            // Spec write through a merge patch: generation moves.
            let v4 = try await registry.patch("lamp", patch: .object(["spec": .object(["aliasName": .string("Desk lamp")])]), precondition: nil)
            #expect(try v4.decode().metadata.generation == 2)
            #expect(try v4.decode().status?.phase == .running, "spec writes keep status")
            // Status in a main-resource patch is ignored.
            let v5 = try await registry.patch("lamp", patch: .object(["status": .object(["phase": .string("Failed")])]), precondition: nil)
            #expect(try v5.decode().status?.phase == .running)
            // Status replace drops fields not given, but for the server-owned binding fields.
            let v6 = try await registry.writeStatus("lamp", .replace(.object(["phase": .string("Failed")])), precondition: nil)
            #expect(
                try v6.decode().status
                    == {
                        var s = ResourceStatus()
                        s.phase = .failed
                        s.bound = false
                        return s
                    }())
            #expect(try v6.decode().metadata.generation == 2)
        }
    }

    @Test(arguments: Store.allCases)
    func staleVersionsConflict(_ kind: Store) async throws {
        try await withRegistry(kind) { registry in
            let v1 = try await registry.create(Self.resource("fan"))
            let stale = String(v1.revision)
            _ = try await registry.writeStatus(
                "fan", .merge(.object(["bound": .bool(true)])), precondition: VersionPrecondition(source: .resourceVersion, version: stale))
            let current = try await registry.get("fan")
            await #expect(
                throws: RegistryError.conflict(
                    current: String(current.revision), detail: "resourceVersion \(stale) is stale; the current version is \(current.revision)")
            ) {
                try await registry.replace(Self.resource("fan"), precondition: VersionPrecondition(source: .resourceVersion, version: stale))
            }
            await #expect(throws: RegistryError.preconditionFailed(current: String(current.revision))) {
                try await registry.delete("fan", precondition: VersionPrecondition(source: .ifMatch, version: stale))
            }
            await #expect(throws: RegistryError.self) {
                try await registry.patch("fan", patch: .object(["metadata": .object(["resourceVersion": .string(stale)])]), precondition: nil)
            }
            #expect(try await registry.get("fan") == current, "failed writes change nothing")
            _ = try await registry.delete("fan", precondition: VersionPrecondition(source: .ifMatch, version: String(current.revision)))
        }
    }

    @Test(arguments: Store.allCases)
    func invalidPatchesChangeNothing(_ kind: Store) async throws {
        try await withRegistry(kind) { registry in
            let v1 = try await registry.create(Self.resource("sensor"))
            await #expect(throws: RegistryError.invalid([Violation(pointer: "/spec/kind", message: "must be one of Device, Person, Space, not \"Robot\"")])) {
                try await registry.patch("sensor", patch: .object(["spec": .object(["kind": .string("Robot")])]), precondition: nil)
            }
            await #expect(throws: RegistryError.self) {
                try await registry.patch("sensor", patch: .object(["metadata": .object(["name": .string("other")])]), precondition: nil)
            }
            await #expect(throws: RegistryError.self) {
                try await registry.writeStatus("sensor", .merge(.object(["phase": .string("Sleeping")])), precondition: nil)
            }
            #expect(try await registry.get("sensor") == v1)
            let events = try await registry.log.events(after: 0, limit: 100).events
            #expect(events.map(\.type) == [.created], "rejected writes leave no event")
        }
    }

    @Test(arguments: Store.allCases)
    func selectorsAndKinds(_ kind: Store) async throws {
        try await withRegistry(kind) { registry in
            _ = try await registry.create(Self.resource("coffee-3f", labels: ["triad.io/space": "pantry-3f", "tier": "gold"]))
            _ = try await registry.create(Self.resource("fan-3f", labels: ["triad.io/space": "pantry-3f"]))
            _ = try await registry.create(Self.resource("fan-4f", labels: ["triad.io/space": "lab-4f", "tier": "silver"]))
            _ = try await registry.create(Self.resource("alice", kind: .person, labels: ["triad.io/space": "pantry-3f"]))
            _ = try await registry.create(Self.resource("pantry-3f", kind: .space))
            func names(_ selector: String, kind: ResourceKind? = nil) async throws -> [String] {
                try await registry.list(ListQuery(kind: kind, selector: LabelSelector(parsing: selector))).items.map(\.name)
            }
            #expect(try await names("triad.io/space=pantry-3f") == ["alice", "coffee-3f", "fan-3f"])
            #expect(try await names("triad.io/space=pantry-3f", kind: .device) == ["coffee-3f", "fan-3f"])
            #expect(try await names("triad.io/space!=pantry-3f") == ["fan-4f", "pantry-3f"])
            #expect(try await names("tier in (gold, silver)") == ["coffee-3f", "fan-4f"])
            #expect(try await names("tier notin (gold)") == ["alice", "fan-3f", "fan-4f", "pantry-3f"])
            #expect(try await names("tier") == ["coffee-3f", "fan-4f"])
            #expect(try await names("!tier") == ["alice", "fan-3f", "pantry-3f"])
            #expect(try await names("", kind: .space) == ["pantry-3f"])
            #expect(try await names("triad.io/space=pantry-3f,!tier") == ["alice", "fan-3f"])
        }
    }

    @Test(arguments: Store.allCases)
    func paginationUnderConcurrentWrites(_ kind: Store) async throws {
        try await withRegistry(kind) { registry in
            let stable = (0..<60).map { String(format: "stable-%03d", $0) }
            for name in stable { _ = try await registry.create(Self.resource(name, labels: ["set": "a"])) }
            // Page through while another task creates, updates and deletes other resources.
            let writer = Task {
                for i in 0..<60 {
                    let name = String(format: "churn-%03d", i)
                    _ = try await registry.create(Self.resource(name, labels: ["set": "a"]))
                    _ = try await registry.replace(Self.resource(name, labels: ["set": "a", "n": "\(i)"]), precondition: nil)
                    if i % 2 == 0 { _ = try await registry.delete(name, precondition: nil) }
                    _ = try await registry.replace(Self.resource(stable[i], labels: ["set": "a", "touched": "yes"]), precondition: nil)
                }
            }
            var seen: [String] = []
            var query = ListQuery(selector: try LabelSelector(parsing: "set=a"), limit: 7)
            repeat {
                let page = try await registry.list(query)
                #expect(page.items.count <= 7)
                seen += page.items.map(\.name)
                query.continueToken = page.continueToken
                try await Task.sleep(for: .milliseconds(5))
            } while query.continueToken != nil
            try await writer.value
            #expect(Set(seen).count == seen.count, "no item twice")
            #expect(Set(stable).isSubset(of: Set(seen)), "every item that existed throughout is listed")
            #expect(seen == seen.sorted(), "pages are in name order")
        }
    }

    @Test(arguments: Store.allCases)
    func eventLogIsMonotonicResumableAndCompacted(_ kind: Store) async throws {
        try await withRegistry(kind) { registry in
            let a = try await registry.create(Self.resource("a"))
            _ = try await registry.writeStatus("a", .merge(.object(["phase": .string("Running")])), precondition: nil)
            _ = try await registry.replace(Self.resource("a", labels: ["x": "y"]), precondition: nil)
            _ = try await registry.delete("a", precondition: nil)
            let all = try await registry.log.events(after: 0, limit: 100)
            #expect(all.events.map(\.type) == [.created, .status, .updated, .deleted])
            #expect(all.events.map(\.id) == all.events.map(\.id).sorted())
            #expect(Set(all.events.map(\.id)).count == 4)
            #expect(all.events.first?.id == a.revision)
            #expect(all.events.last?.labels == ["x": "y"], "a deleted event carries the last document")
            let tail = try await registry.log.events(after: all.events[1].id, limit: 100)
            #expect(tail.events.map(\.type) == [.updated, .deleted])
            // Compaction keeps the newest events and never reuses ids.
            for i in 0..<10 { _ = try await registry.create(Self.resource("c\(i)")) }
            let removed = try await registry.log.compactEvents(keep: 5)
            #expect(removed == 9)
            let kept = try await registry.log.events(after: 0, limit: 100)
            #expect(kept.events.count == 5)
            #expect(kept.oldestRetained == kept.events.first?.id)
            let next = try await registry.create(Self.resource("after-compaction"))
            #expect(next.revision > kept.events.last!.id)
            // A relay's cursor bounds compaction: nothing it has not delivered is deleted.
            #expect(try await registry.relayCursors.relayCursor("amqp") == 0)
            let cursor = kept.events[1].id
            try await registry.relayCursors.setRelayCursor("amqp", to: cursor)
            #expect(try await registry.relayCursors.relayCursor("amqp") == cursor)
            _ = try await registry.log.compactEvents(keep: 1, notAfter: cursor)
            #expect(try await registry.log.events(after: 0, limit: 100).oldestRetained == cursor + 1)
        }
    }

    @Test(arguments: Store.allCases)
    func concurrentWritersOneWinsEachRound(_ kind: Store) async throws {
        try await withRegistry(kind) { registry in
            let start = try await registry.create(Self.resource("counter", labels: ["count": "0"]))
            var version = String(start.revision)
            for round in 1...10 {
                let expected = version
                let outcomes = await withTaskGroup(of: Result<StoredResource, any Error>.self) { group in
                    for writer in 0..<4 {
                        group.addTask {
                            do {
                                return .success(
                                    try await registry.replace(
                                        Self.resource("counter", labels: ["count": "\(round)", "writer": "\(writer)"]),
                                        precondition: VersionPrecondition(source: .resourceVersion, version: expected)
                                    ).0)
                            } catch { return .failure(error) }
                        }
                    }
                    var all: [Result<StoredResource, any Error>] = []
                    for await r in group { all.append(r) }
                    return all
                }
                let winners = outcomes.compactMap { try? $0.get() }
                #expect(winners.count == 1, "round \(round): exactly one writer wins")
                for case .failure(let error) in outcomes {
                    guard case RegistryError.conflict = error else {
                        Issue.record("unexpected \(error)")
                        continue
                    }
                }
                version = String(winners[0].revision)
            }
        }
    }

    @Test(arguments: Store.allCases)
    func concurrentCreatorsOfOneNameOneWins(_ kind: Store) async throws {
        try await withRegistry(kind) { registry in
            for round in 0..<5 {
                let name = "same-\(round)"
                let results = await withTaskGroup(of: Result<StoredResource, any Error>.self) { group in
                    for _ in 0..<6 {
                        group.addTask {
                            do { return .success(try await registry.create(Self.resource(name))) } catch { return .failure(error) }
                        }
                    }
                    var all: [Result<StoredResource, any Error>] = []
                    for await r in group { all.append(r) }
                    return all
                }
                #expect(results.filter { (try? $0.get()) != nil }.count == 1)
                for case .failure(let error) in results {
                    #expect(error as? RegistryError == .alreadyExists(name: name), "\(error)")
                }
            }
            let events = try await registry.log.events(after: 0, limit: 100).events
            #expect(events.count == 5, "one created event per name")
        }
    }

    /// Many writers at once (on PostgreSQL they commit in groups): each gets its own outcome, and
    /// the revisions they take are gap-free and in the order their events are read back.
    @Test(arguments: Store.allCases)
    func manyWritersAtOnceEachGetTheirOwnOutcome(_ kind: Store) async throws {
        try await withRegistry(kind) { registry in
            let results = await withTaskGroup(of: (String, Result<StoredResource, any Error>).self) { group in
                for i in 0..<60 {
                    let name = "many-\(i % 30)"
                    group.addTask {
                        do { return (name, .success(try await registry.create(Self.resource(name)))) } catch { return (name, .failure(error)) }
                    }
                }
                var all: [(String, Result<StoredResource, any Error>)] = []
                for await r in group { all.append(r) }
                return all
            }
            let created = results.compactMap { try? $0.1.get() }
            #expect(created.count == 30, "one creator of each name wins")
            #expect(Set(created.map(\.name)).count == 30)
            for case (let name, .failure(let error)) in results {
                #expect(error as? RegistryError == .alreadyExists(name: name), "\(error)")
            }
            let events = try await registry.log.events(after: 0, limit: 100).events
            #expect(events.map(\.id) == Array(1...30), "gap-free, in commit order")
            #expect(Set(created.map(\.revision)) == Set(events.map(\.id)))
            for record in created { #expect(try await registry.get(record.name) == record) }
        }
    }

    @Test(arguments: Store.allCases)
    func tokensAreStoredHashedAndRevocable(_ kind: Store) async throws {
        try await withStore(kind) { backend in
            #expect(try await backend.activeAdminCount() == 0)
            try await backend.insertToken(TokenRecord(name: "root", role: .admin, resource: nil, secretHash: "h1", createdAt: "2026-11-25T10:00:00Z"))
            await #expect(throws: RegistryError.tokenExists(name: "root")) {
                try await backend.insertToken(TokenRecord(name: "root", role: .app, resource: nil, secretHash: "h2", createdAt: "2026-11-25T10:00:00Z"))
            }
            try await backend.insertToken(TokenRecord(name: "probe", role: .device, resource: "fan", secretHash: "h3", createdAt: "2026-11-25T10:00:00Z"))
            #expect(try await backend.token(secretHash: "h3")?.resource == "fan")
            #expect(try await backend.activeAdminCount() == 1)
            let revoked = try await backend.revokeToken(name: "root", at: "2026-11-25T11:00:00Z")
            #expect(revoked?.revokedAt == "2026-11-25T11:00:00Z")
            #expect(try await backend.activeAdminCount() == 0)
            #expect(try await backend.revokeToken(name: "nobody", at: "2026-11-25T11:00:00Z") == nil)
            #expect(try await backend.tokens().map(\.name) == ["probe", "root"])
        }
    }

    /// A server reads the newest events from memory (SQLite) or a cache it follows
    /// (PostgreSQL); a restarted one reads them from the database: both must read the same.
    @Test(arguments: BackendKind.allCases)
    func theLogReadFromMemoryIsTheLogReadAfterARestart(_ kind: BackendKind) async throws {
        let ((whole, pages), location) = try await TestEnvironment.withBackend(kind) { backend, location in
            let registry = Registry(backend: backend)
            _ = try await registry.create(Self.resource("a", labels: ["triad.io/space": "pantry"]))
            _ = try await registry.writeStatus("a", .merge(.object(["phase": .string("Running")])), precondition: nil)
            _ = try await registry.create(Self.resource("b"))
            _ = try await registry.delete("b", precondition: nil)
            let whole = try await registry.log.events(after: 0, limit: 100)
            var pages: [[RegistryEvent]] = []
            for after in Int64(0)...5 { pages.append(try await registry.log.events(after: after, limit: 2).events) }
            return ((whole, pages), location)
        }
        #expect(whole.events.count == 4)
        #expect(pages.map(\.count) == [2, 2, 2, 1, 0, 0])
        try await TestEnvironment.withBackend(kind, reuse: location) { reopened, _ in
            let again = try await reopened.events(after: 0, limit: 100)
            #expect(again.events == whole.events)
            #expect(again.oldestRetained == whole.oldestRetained)
            for after in Int64(0)...5 {
                #expect(try await reopened.events(after: after, limit: 2).events == pages[Int(after)], "after \(after)")
            }
        }
    }

    @Test(arguments: BackendKind.allCases)
    func reopeningKeepsDataAndMigratesOnce(_ kind: BackendKind) async throws {
        let (created, location) = try await TestEnvironment.withBackend(kind) { backend, location in
            (try await Registry(backend: backend).create(Self.resource("kept")), location)
        }
        try await TestEnvironment.withBackend(kind, reuse: location) { reopened, _ in
            let again = Registry(backend: reopened)
            #expect(try await again.get("kept") == created)
            let next = try await again.create(Self.resource("next"))
            #expect(next.revision == created.revision + 1, "revisions continue across restarts")
        }
    }
    /// The ledger: each record and its event in one write, newest first, filtered, paged, summed.
    @Test(arguments: Store.allCases)
    func theLedgerRecordsInvocationsWithTheirEvents(_ kind: Store) async throws {
        try await withRegistry(kind) { registry in
            let fan = try await registry.create(Self.resource("fan", labels: ["floor": "3"]))
            let lamp = try await registry.create(Self.resource("lamp"))
            func begin(_ resource: StoredResource, _ caller: String, price: Double, node: String = "n1") async throws -> Invocation {
                let trace = Invocation.newTrace()
                return try await registry.record(
                    Invocation(
                        id: UUID().uuidString.lowercased(), resource: resource.name, operation: "turn_on", caller: caller, price: price,
                        state: .running, startedAt: Timestamp.format(Date()), traceId: trace.traceId, traceparent: trace.traceparent, node: node),
                    as: .invoked, resource: resource)
            }
            let a = try await begin(fan, "alice", price: 2)
            let b = try await begin(fan, "bob", price: 3)
            let c = try await begin(lamp, "alice", price: 5)
            let d = try await begin(lamp, "alice", price: 7, node: "n2")
            #expect(a.sequence > 0 && b.sequence > a.sequence && c.sequence > b.sequence)
            for (i, state) in [(a, InvocationState.succeeded), (b, .failed), (c, .succeeded)] {
                _ = try await registry.record(
                    i.finished(
                        state, httpStatus: state == .succeeded ? 200 : 500, reason: nil, message: nil,
                        at: Timestamp.format(Date())), as: .completed, resource: fan)
            }
            // Each record came with its event, in order, carrying the record.
            let events = try await registry.log.events(after: fan.revision, limit: 100).events.filter { !$0.type.carriesResource }
            #expect(events.map(\.type) == [.invoked, .invoked, .invoked, .invoked, .completed, .completed, .completed])
            #expect(try events.last.map { try JSONDecoder().decode(Invocation.self, from: $0.document).id } == c.id)
            #expect(try await registry.find("fan") == fan, "an operation event changes no resource")
            #expect(try await registry.log.latestRevision() == events.last?.id)

            let all = try await registry.ledger.invocations(InvocationQuery())
            #expect(all.items.map(\.id) == [d.id, c.id, b.id, a.id] && all.matched == 4 && all.totalCharged == 7)
            let alice = try await registry.ledger.invocations(InvocationQuery(caller: "alice"))
            #expect(alice.items.map(\.id) == [d.id, c.id, a.id] && alice.totalCharged == 7)
            let onFan = try await registry.ledger.invocations(InvocationQuery(resource: "fan"))
            #expect(onFan.items.map(\.id) == [b.id, a.id] && onFan.totalCharged == 2)
            let page = try await registry.ledger.invocations(InvocationQuery(limit: 3))
            #expect(page.items.count == 3 && page.next == b.sequence && page.matched == 4)
            let rest = try await registry.ledger.invocations(InvocationQuery(limit: 3, before: page.next))
            #expect(rest.items.map(\.id) == [a.id] && rest.next == nil)
            #expect(try await registry.ledger.invocation(id: b.id)?.state == .failed)
            #expect(try await registry.ledger.invocation(id: "nosuch") == nil)
            #expect(try await registry.ledger.unfinishedInvocations(node: "n2").map(\.id) == [d.id])
            #expect(try await registry.ledger.unfinishedInvocations(node: "n1").isEmpty)
            var running = d
            running.state = .pending
            try await registry.ledger.saveInvocation(running)
            #expect(try await registry.ledger.invocation(id: d.id)?.state == .pending)
        }
    }
}

extension RegistryConformanceTests {
    static func project(_ name: String, ref: String = "v1", labels: [String: String]? = nil) -> JSONValue {
        let labelsText = labels.map { String(decoding: JSONCoding.encode($0), as: UTF8.self) } ?? "null"
        let text = """
            {"apiVersion": "triad.io/v1alpha1", "kind": "Project", "metadata": {"name": "\(name)", "labels": \(labelsText)},
             "spec": {"services": [{"name": "purifier-agent", "repository": "file:///srv/git/purifier.git", "ref": "\(ref)",
               "build": {"command": ["make"], "artifact": "dist/agent"}, "run": ["{artifact}"], "health": "/healthz",
               "meshService": "purifier"}]}}
            """
        var tree = try! JSONCoding.parse(Data(text.utf8))
        if labels == nil, case .object(var root) = tree, case .object(var metadata)? = root["metadata"] {
            metadata["labels"] = nil
            root["metadata"] = .object(metadata)
            tree = .object(root)
        }
        return tree
    }

    /// Projects have the resources' rules, and each write is one event of the shared log that
    /// carries the project (the backends write the project from it).
    @Test(arguments: Store.allCases)
    func projectsAreDocumentsWithTheResourcesRulesAndEvents(_ kind: Store) async throws {
        try await withStore(kind) { backend in
            let registry = Registry(backend: backend)
            let before = try await backend.latestRevision()
            let (created, wasCreated) = try await registry.applyProject(Self.project("building", labels: ["team": "a"]), precondition: nil)
            #expect(wasCreated)
            let doc = try JSONCoding.parse(created.document)
            #expect(doc["metadata"]?["generation"] == .number(1))
            #expect(doc["metadata"]?["resourceVersion"] == .string(String(created.revision)))
            #expect(doc["metadata"]?["uid"]?.stringValue != nil)
            #expect(try await registry.project("building") == created)

            // The same spec again: a new version, the same generation; a new ref: generation 2.
            let (same, _) = try await registry.applyProject(Self.project("building", labels: ["team": "b"]), precondition: nil)
            #expect(try JSONCoding.parse(same.document)["metadata"]?["generation"] == .number(1))
            let (moved, movedCreated) = try await registry.applyProject(Self.project("building", ref: "v2"), precondition: nil)
            #expect(!movedCreated)
            let movedDoc = try JSONCoding.parse(moved.document)
            #expect(movedDoc["metadata"]?["generation"] == .number(2))
            #expect(movedDoc["metadata"]?["uid"] == doc["metadata"]?["uid"])

            // Preconditions as for resources: a stale resourceVersion 409, a stale If-Match 412.
            await #expect(
                throws: RegistryError.conflict(
                    current: String(moved.revision), detail: "resourceVersion \(created.revision) is stale; the current version is \(moved.revision)")
            ) {
                try await registry.applyProject(
                    Self.project("building"), precondition: VersionPrecondition(source: .resourceVersion, version: String(created.revision)))
            }
            await #expect(throws: RegistryError.preconditionFailed(current: String(moved.revision))) {
                try await registry.deleteProject("building", precondition: VersionPrecondition(source: .ifMatch, version: "1"))
            }
            // Invalid documents: every problem, nothing written.
            await #expect(throws: RegistryError.self) { try await registry.applyProject(.object(["kind": .string("Project")]), precondition: nil) }

            let check: [String: JSONValue] = ["execResult": .object(["result": .string("Succeeded")])]
            let checked = try await registry.writeProjectStatus("building", check, ifRevision: moved.revision)
            #expect(try JSONCoding.parse(checked.document)["status"] == .object(check))
            await #expect(throws: RegistryError.self) { try await registry.writeProjectStatus("building", check, ifRevision: moved.revision) }
            // An update's record: history appended, the current version set; a later check keeps both.
            let to: [String: JSONValue] = ["ref": .string("v2"), "version": .string("v2")]
            _ = try await registry.recordProjectUpdate(
                "building", service: "agent", entry: ["service": .string("agent"), "outcome": .string("Failed")], current: nil)
            let updated = try await registry.recordProjectUpdate(
                "building", service: "agent", entry: ["service": .string("agent"), "outcome": .string("Succeeded"), "to": .object(to)], current: to)
            var status = try JSONCoding.parse(updated.document)["status"]
            #expect(status?["history"]?.arrayValue?.compactMap { $0["outcome"]?.stringValue } == ["Failed", "Succeeded"])
            #expect(status?["history"]?.arrayValue?.last?["time"]?.stringValue != nil)
            #expect(status?["current"]?["agent"]?["ref"] == .string("v2") && status?["current"]?["agent"]?["since"] != nil)
            let rechecked = try await registry.writeProjectStatus("building", check)
            status = try JSONCoding.parse(rechecked.document)["status"]
            #expect(status?["history"]?.arrayValue?.count == 2 && status?["current"]?["agent"]?["ref"] == .string("v2"), "a check keeps the updates")
            let (respec, _) = try await registry.applyProject(Self.project("building", ref: "v3"), precondition: nil)
            #expect(try JSONCoding.parse(respec.document)["status"] == status, "spec writes keep the status")

            // A resource of the same name is another thing.
            _ = try await registry.create(Self.resource("building", kind: .space))
            #expect(try await registry.projects().map(\.name) == ["building"])

            let deleted = try await registry.deleteProject("building", precondition: nil)
            await #expect(throws: RegistryError.notFound(name: "building")) { try await registry.project("building") }
            #expect(try await registry.projects().isEmpty)
            #expect(try await registry.get("building").kind == .space)

            let events = try await backend.events(after: before, limit: 100).events
            #expect(
                events.map(\.type) == [
                    .projectCreated, .projectUpdated, .projectUpdated, .projectStatus, .projectStatus, .projectStatus, .projectStatus,
                    .projectUpdated, .created, .projectDeleted,
                ])
            #expect(events.filter { $0.type.subject == .project }.allSatisfy { $0.kind == .project })
            #expect(events.last?.document == deleted.document)
            #expect(events.first?.labels == ["team": "a"])
            #expect(try await backend.latestRevision() == deleted.revision)
            let rendered = try JSONCoding.parse(CloudEventRenderer.render(events[0]))
            #expect(rendered["type"] == .string("io.triad.project.created") && rendered["source"] == .string("/triad/projects/building"))
            #expect(CloudEventRenderer.routingKey(events[0]) == "project.building.created")
        }
    }

    /// Two creators of one project at once: one creates it; the other replaces it (the stores that
    /// serialise writers) or is told it exists (PostgreSQL), never a second creation.
    @Test(arguments: Store.allCases)
    func concurrentCreatorsOfOneProjectCreateItOnce(_ kind: Store) async throws {
        try await withStore(kind) { backend in
            let registry = Registry(backend: backend)
            let before = try await backend.latestRevision()
            let outcomes = await withTaskGroup(of: Result<Bool, any Error>.self) { group in
                for ref in ["v1", "v2"] {
                    group.addTask {
                        do { return .success(try await registry.applyProject(Self.project("race", ref: ref), precondition: nil).created) } catch {
                            return .failure(error)
                        }
                    }
                }
                var all: [Result<Bool, any Error>] = []
                for await o in group { all.append(o) }
                return all
            }
            let created = outcomes.filter { (try? $0.get()) == true }.count
            #expect(created == 1)
            for case .failure(let error) in outcomes { #expect(error as? RegistryError == .alreadyExists(name: "race"), "\(error)") }
            let events = try await backend.events(after: before, limit: 10).events
            #expect(events.filter { $0.type == .projectCreated }.count == 1)
            #expect(try await registry.project("race").revision == events.last?.id)
        }
    }
}
