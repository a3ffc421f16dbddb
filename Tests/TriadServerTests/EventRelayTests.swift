import Foundation
import NIOHTTP1
import Synchronization
import Testing
import TriadAMQP
import TriadClient
import TriadCore
import TriadServer
import TriadTesting

/// The outbox relay against the real RabbitMQ that scripts/test.sh starts (docs/events.md).
@Suite("Event relay to RabbitMQ")
struct EventRelayTests {
    /// Waits until `/readyz` says the relay is connected (so the exchange exists).
    static func waitForRelay(_ server: TestServer) async throws {
        let anonymous = TriadClient(server: server.baseURL, token: nil)
        for _ in 0..<100 {
            let checks = try await anonymous.send(.GET, "/readyz").json?["checks"]
            if checks?["amqp"]?["ok"] == .bool(true) && checks?["amqpTelemetry"]?["ok"] == .bool(true) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw SetupError("the relay did not connect to RabbitMQ")
    }

    @Test(arguments: BackendKind.allCases)
    func anIntegratorBoundToDevicesGetsEveryDeviceEventAndNothingElse(_ kind: BackendKind) async throws {
        let url = try TestEnvironment.amqpURL()
        try await withServer(kind, amqp: url) { server in
            try await Self.waitForRelay(server)
            let consumer = try await ReplicaRelayTests.eventConsumer(url: url)
            defer { consumer.close() }

            let api = server.admin
            // Names unique to this test case: the exchange is shared by every server in the run.
            let fan = "fan-\(UUID().uuidString.prefix(8).lowercased())"
            let alice = "alice-\(UUID().uuidString.prefix(8).lowercased())"
            var versions: [String] = []
            func version(_ reply: TriadClient.Reply) -> String { reply.json?["metadata"]?["resourceVersion"]?.stringValue ?? "" }
            versions.append(version(try await api.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(fan)))))
            _ = try await api.call(.POST, "/api/v1/resources", body: Docs.json(Docs.resource(alice, kind: "Person")))
            versions.append(
                version(
                    try await api.call(
                        .PATCH, "/api/v1/resources/\(fan)/status",
                        body: Data(#"{"status":{"phase":"Running"}}"#.utf8), contentType: "application/merge-patch+json")))
            versions.append(
                version(
                    try await api.call(
                        .PATCH, "/api/v1/resources/\(fan)",
                        body: Data(#"{"spec":{"aliasName":"Desk fan"}}"#.utf8), contentType: "application/merge-patch+json")))
            for name in [fan, alice] {
                _ = try await api.call(.POST, "/api/v1/resources/\(name)/telemetry", body: Data(#"{"values":{"rpm":1200}}"#.utf8))
            }
            versions.append(version(try await api.call(.DELETE, "/api/v1/resources/\(fan)")))

            var received: [AMQPDelivery] = []
            var telemetry: [AMQPDelivery] = []
            while !(received.contains { $0.routingKey.hasSuffix(".deleted") } && telemetry.count == 1),
                let delivery = try await consumer.next(timeout: .seconds(10))
            {
                guard delivery.routingKey.hasPrefix("device.\(fan).") else { continue }
                // Samples travel apart from the outbox, so their order against registry events is free.
                if delivery.routingKey.hasSuffix(".telemetry") { telemetry.append(delivery) } else { received.append(delivery) }
            }
            // The sample may also have produced a status write (status.telemetry) before the delete.
            let extra = received.filter { !versions.contains($0.messageID ?? "") }
            #expect(extra.allSatisfy { $0.routingKey == "device.\(fan).status" }, "\(extra.map(\.routingKey))")
            received.removeAll { !versions.contains($0.messageID ?? "") }
            #expect(telemetry.count == 1)
            if let sample = telemetry.first {
                let event = try JSONCoding.parse(Data(sample.body))
                #expect(event["type"] == .string("io.triad.telemetry"))
                #expect(event["subject"] == .string(fan))
                #expect(event["id"]?.stringValue == sample.messageID)
                #expect(event["data"]?["values"] == .object(["rpm": .number(1200)]))
                #expect(sample.persistent && sample.contentType == "application/cloudevents+json")
            }
            #expect(received.map(\.routingKey) == ["created", "status", "updated", "deleted"].map { "device.\(fan).\($0)" })
            #expect(received.map(\.messageID) == versions.map { Optional($0) }, "message_id is the event id, in order")
            for delivery in received {
                #expect(delivery.persistent)
                #expect(delivery.contentType == "application/cloudevents+json")
                let event = try JSONCoding.parse(Data(delivery.body))
                #expect(event["specversion"] == .string("1.0"))
                #expect(event["id"]?.stringValue == delivery.messageID)
                #expect(event["subject"] == .string(fan))
                #expect(event["resourcekind"] == .string("device"))
                #expect(event["data"]?["metadata"]?["resourceVersion"]?.stringValue == delivery.messageID)
            }
            #expect(try JSONCoding.parse(Data(received[1].body))["data"]?["status"]?["phase"] == .string("Running"))
            // Each one a valid CloudEvent, judged by schemas/cloudevent.schema.json (and its data by
            // resource.schema.json) with Python's jsonschema.
            try await Self.expectValidCloudEvents((received + telemetry).map(\.body))
            // Nothing about the person reaches a queue bound to devices.
            while let extra = try await consumer.next(timeout: .milliseconds(500)) {
                #expect(!extra.routingKey.contains(alice), "\(extra.routingKey)")
            }
            #expect(try await server.server.registry.relayCursors.relayCursor(OutboxRelay.cursorName) >= Int64(versions.last!)!)
        }
    }

    /// `telemetryEvents: batch`: each message is a JSON array of one resource's samples, in the
    /// order they came; together they are every sample, once.
    @Test func batchedTelemetryCarriesEverySampleOnceInOrderAsArraysOfEvents() async throws {
        let url = try TestEnvironment.amqpURL()
        try await withServer(.sqlite, amqp: url, configure: { $0.telemetryEvents = .batch }) { server in
            try await Self.waitForRelay(server)
            let consumer = try await ReplicaRelayTests.eventConsumer(url: url, boundTo: "#.telemetry")
            defer { consumer.close() }

            let names = (0..<2).map { _ in "meter-\(UUID().uuidString.prefix(8).lowercased())" }
            let perResource = 40
            for name in names { _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(name))) }
            // Sent side by side, so that samples queue up while a publication is being confirmed.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for name in names {
                    group.addTask {
                        for seq in 0..<perResource {
                            let reply = try await server.admin.call(
                                .POST, "/api/v1/resources/\(name)/telemetry", body: Data(#"{"values":{"seq":\#(seq)}}"#.utf8))
                            #expect(reply.status == 202 || reply.status == 200, "\(reply.status)")
                        }
                    }
                }
                try await group.waitForAll()
            }

            var seqs: [String: [Int]] = [:]
            var ids: Set<String> = []
            var events: [JSONValue] = []
            while seqs.values.reduce(0, { $0 + $1.count }) < names.count * perResource, let delivery = try await consumer.next(timeout: .seconds(10)) {
                guard let name = names.first(where: { delivery.routingKey == "device.\($0).telemetry" }) else { continue }
                #expect(delivery.contentType == "application/cloudevents-batch+json")
                #expect(delivery.persistent)
                guard case .array(let batch) = try JSONCoding.parse(Data(delivery.body)), let first = batch.first else {
                    Issue.record("not a non-empty JSON array: \(String(decoding: delivery.body, as: UTF8.self))")
                    continue
                }
                #expect(first["id"]?.stringValue == delivery.messageID, "message_id is the first event's id")
                for event in batch {
                    #expect(event["type"] == .string("io.triad.telemetry"))
                    #expect(event["subject"] == .string(name), "a batch holds one resource's samples")
                    let fresh = ids.insert(event["id"]?.stringValue ?? "").inserted
                    #expect(fresh, "each sample once")
                    if case .number(let seq)? = event["data"]?["values"]?["seq"] { seqs[name, default: []].append(Int(seq)) }
                    events.append(event)
                }
            }
            for name in names { #expect(seqs[name] == Array(0..<perResource), "\(name): every sample, in order") }
            try await Self.expectValidCloudEvents(events.prefix(10).map { Array(JSONCoding.encode($0)) })
        }
    }

    /// Writes each event to a file and runs scripts/check_cloudevents.py over them.
    static func expectValidCloudEvents(_ bodies: [[UInt8]]) async throws {
        let dir = try TestPaths.temporaryDirectory()
        let files = try bodies.enumerated().map { i, body in
            let path = "\(dir)/event-\(i).json"
            try Data(body).write(to: URL(fileURLWithPath: path))
            return path
        }
        let result = try await Python.run("check_cloudevents.py", files)
        #expect(result.status == 0, "\(result.output)")
        let verdicts = try result.output.split(separator: "\n").map { try JSONCoding.parse(Data($0.utf8)) }
        #expect(verdicts.count == files.count)
        for v in verdicts { #expect(v["valid"] == .bool(true), "\(v)") }
    }

    @Test func theCloudEventSchemaRefusesBrokenEvents() async throws {
        let dir = try TestPaths.temporaryDirectory()
        let broken = [
            #"{"specversion":"1.0","source":"/triad/resources/a","type":"io.triad.telemetry","subject":"a","time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","resourcekind":"device","data":{"ts":"2026-01-01T00:00:00Z","values":{}}}"#,
            #"{"specversion":"1.0","id":"1","source":"/triad/resources/a","type":"io.triad.resource.created","subject":"a","time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","resourcekind":"device","resourceversion":"1","data":{"kind":"Resource"}}"#,
        ]
        let files = try broken.enumerated().map { i, text in
            let path = "\(dir)/broken-\(i).json"
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            return path
        }
        let verdicts = try await Python.run("check_cloudevents.py", files).output.split(separator: "\n").map { try JSONCoding.parse(Data($0.utf8)) }
        #expect(verdicts.map { $0["valid"] } == [.bool(false), .bool(false)], "a missing id; data that is no Resource")
    }

    @Test func anUnreachableBrokerLeavesWritesAcceptedAndReadinessFalse() async throws {
        // A port where nothing listens: the relay cannot connect, the API still takes writes.
        try await withServer(.sqlite, amqp: "amqp://guest:guest@127.0.0.1:1") { server in
            let created = try await server.admin.send(.POST, "/api/v1/resources", body: Docs.json(Docs.device("kept")))
            #expect(created.status == 201)
            try await Task.sleep(for: .milliseconds(300))
            // Anyone learns that the broker part is down; an admin also learns why.
            #expect(try await TriadClient(server: server.baseURL, token: nil).send(.GET, "/readyz").status == 503)
            let ready = try await server.admin.send(.GET, "/readyz")
            #expect(ready.status == 503)
            let message = ready.json?["checks"]?["amqp"]?["message"]?.stringValue ?? ""
            #expect(message.contains("127.0.0.1:1"), "\(message)")
            #expect(!message.contains("guest:guest"), "no credentials in readiness")
            #expect(try await server.server.registry.relayCursors.relayCursor(OutboxRelay.cursorName) == 0, "nothing marked delivered")
        }
    }

    /// kill -9 of the server while it writes and relays: after a restart every acknowledged
    /// write's event reaches the integrator (duplicates allowed, losses not).
    @Test(arguments: BackendKind.allCases)
    func noEventIsLostWhenTheServerIsKilled(_ kind: BackendKind) async throws {
        let url = try TestEnvironment.amqpURL()
        let consumer = AMQPConsumer(endpoint: try AMQPEndpoint(url: url))
        try await consumer.connect()
        defer { consumer.close() }
        try await consumer.declareQueue("", durable: false)
        // The exchange may not exist yet on a fresh broker: declare it as the relay does.
        let declarer = try AMQPEventPublisher(url: url)
        try await declarer.connect()
        await declarer.disconnect()
        try await consumer.bind(exchange: AMQPEventPublisher.exchange, routingKey: "device.#")
        try await consumer.startConsuming()

        let dir = try TestPaths.temporaryDirectory()
        let args = try await ProcessTests.databaseArguments(kind, dataDir: dir + "/data") + ["--amqp", url]
        let token = "relay-kill-token-0123456789abcdef0123"
        let prefix = "k\(UUID().uuidString.prefix(6).lowercased())"
        let first = try await ServerProcess.start(args, environment: ["TRIAD_ADMIN_TOKEN": token], directory: dir)
        let acknowledged = try await first.killWhileWriting(token: token, prefix: prefix)

        let second = try await ServerProcess.start(args, environment: ["TRIAD_ADMIN_TOKEN": token], directory: dir)
        defer { second.stop() }
        let marker = "\(prefix)-marker"
        _ = try await TriadClient(server: second.baseURL, token: token).call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(marker)))
        var seen = Set<String>()
        while let delivery = try await consumer.next(timeout: .seconds(15)) {
            guard delivery.routingKey.hasPrefix("device.\(prefix)-") else { continue }
            if let id = delivery.messageID { seen.insert(id) }
            if delivery.routingKey == "device.\(marker).created" { break }
        }
        let missing = acknowledged.filter { !seen.contains($0.value) }.map(\.key).sorted()
        #expect(missing.isEmpty, "events never delivered: \(missing.prefix(5))")
        #expect(seen.count >= acknowledged.count + 1)
    }
}

/// Replicas on one PostgreSQL: each runs a relay, yet every event is published once.
@Suite("Event relay among replicas")
struct ReplicaRelayTests {
    @Test func twoRelaysOnOneDatabasePublishEachEventOnce() async throws {
        let url = try TestEnvironment.amqpURL()
        try await TestEnvironment.withBackend(.postgres) { first, schema in
            try await TestEnvironment.withBackend(.postgres, reuse: schema) { second, _ in
                try await Self.publishEachEventOnce(first, second, url: url)
            }
        }
    }

    /// An integrator: a consumer of the events exchange on a queue of its own, bound with `key`.
    static func eventConsumer(url: String, boundTo key: String = "device.#") async throws -> AMQPConsumer {
        let consumer = AMQPConsumer(endpoint: try AMQPEndpoint(url: url))
        try await consumer.connect()
        do {
            try await consumer.declareTopicExchange(AMQPEventPublisher.exchange)
            try await consumer.declareQueue("", durable: false)
            try await consumer.bind(exchange: AMQPEventPublisher.exchange, routingKey: key)
            try await consumer.startConsuming()
            return consumer
        } catch {
            consumer.close()
            throw error
        }
    }

    static func publishEachEventOnce(_ first: any RegistryBackend, _ second: any RegistryBackend, url: String) async throws {
        let prefix = "r\(UUID().uuidString.prefix(6).lowercased())"

        let consumer = try await eventConsumer(url: url)
        defer { consumer.close() }

        let notifiers = [EventNotifier(), EventNotifier()]
        let relays = try [first, second].enumerated().map { i, backend in
            OutboxRelay(
                cursors: backend, publisher: try AMQPEventPublisher(url: url), notifier: notifiers[i],
                logger: TestEnvironment.logger, batchSize: 7)
        }
        let running = relays.map { relay in Task { try await relay.run() } }
        // What the server's wake-up loop does: each replica looks again often.
        let ticker = Task {
            while !Task.isCancelled {
                for n in notifiers { n.notify() }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        defer { ticker.cancel() }
        // Writes through both replicas while both relays run.
        let registries = [Registry(backend: first), Registry(backend: second)]
        for i in 0..<120 {
            let doc = Docs.device("\(prefix)-\(i)")
            _ = try await registries[i % 2].create(try Resource(validated: doc))
        }
        var ids: [String] = []
        // Other tests publish to the same exchange: keep this test's resources only.
        func ours(_ d: AMQPDelivery) -> Bool { d.routingKey.hasPrefix("device.\(prefix)-") }
        while ids.count < 120, let d = try await consumer.next(timeout: .seconds(10)) {
            if ours(d) { ids.append(d.messageID ?? "") }
        }
        // Anything extra would be a second publication.
        while let d = try await consumer.next(timeout: .seconds(2)) { if ours(d) { ids.append(d.messageID ?? "") } }
        for task in running { task.cancel() }
        for task in running { _ = try? await task.value }
        #expect(ids.count == 120, "each event once, not once per replica")
        #expect(Set(ids).count == 120)
        #expect(ids.compactMap(Int64.init) == ids.compactMap(Int64.init).sorted(), "in log order")
    }
}

/// PostgreSQL NOTIFY: a replica hears another's writes at once, and only its own registry's.
@Suite("Registry change notifications")
struct ChangeNotificationTests {
    @Test func aReplicaHearsWritesToItsRegistryOnly() async throws {
        try await TestEnvironment.withBackend(.postgres) { listener, schema in
            try await TestEnvironment.withBackend(.postgres, reuse: schema) { writer, _ in
                try await TestEnvironment.withBackend(.postgres) { stranger, _ in
                    try await Self.hearsItsOwnRegistryOnly(listener: listener, writer: writer, stranger: stranger)
                }
            }
        }
    }

    static func hearsItsOwnRegistryOnly(listener: any RegistryBackend, writer: any RegistryBackend, stranger: any RegistryBackend) async throws {
        let heard = Heard()
        let watching = Task { try await listener.watchOtherWriters { heard.add() } }
        defer { watching.cancel() }
        // LISTEN is in place once a write of ours is heard (nothing here polls).
        var n = 0
        try await eventually("a write to the same registry is heard") {
            n += 1
            _ = try await Registry(backend: writer).create(try Resource(validated: Docs.device("here-\(n)")))
            return heard.count > 0
        }
        // Writes made before LISTEN was in place are never heard (on a busy machine the first
        // few are), and the last ones may still be on their way: count from a quiet moment.
        try await eventually("the notifications so far have arrived") {
            let seen = heard.count
            try await Task.sleep(for: .milliseconds(300))
            return heard.count == seen && seen <= n
        }
        let before = heard.count
        _ = try await Registry(backend: stranger).create(try Resource(validated: Docs.device("elsewhere")))
        _ = try await Registry(backend: writer).create(try Resource(validated: Docs.device("here")))
        try await eventually("the next write is heard") { heard.count > before }
        // Only our write may count; a stranger's notification would have arrived before it.
        try await Task.sleep(for: .milliseconds(500))
        #expect(heard.count == before + 1, "another registry's write is not ours")
        watching.cancel()
        _ = try? await watching.value
    }

    final class Heard: Sendable {
        private let counter = Mutex(0)
        var count: Int { counter.withLock { $0 } }
        func add() { counter.withLock { $0 += 1 } }
    }
}
