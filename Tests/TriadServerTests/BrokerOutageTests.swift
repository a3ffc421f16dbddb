import Foundation
import NIOHTTP1
import Testing
import TriadAMQP
import TriadClient
import TriadCore
import TriadProcess
import TriadServer
import TriadTesting

/// RabbitMQ stopped for 10 s while resources are written and telemetry flows: after
/// it returns every registry event arrives, in order per resource, none lost. Uses the second
/// broker that scripts/test.sh starts only for this, so the shared one stays up for the others.
@Suite("RabbitMQ outage")
struct BrokerOutageTests {
    /// Runs scripts/services.sh against the outage node, with output to a file (ChildProcess, not
    /// Foundation's Process: its waitUntilExit never returned once the script had started the
    /// detached Erlang VM).
    static func outageBroker(_ verb: String) async throws {
        let env = ProcessInfo.processInfo.environment
        guard let script = env["TRIAD_TEST_OUTAGE_SERVICES"], let dir = env["TRIAD_TEST_OUTAGE_SVC_DIR"],
            let port = env["TRIAD_TEST_OUTAGE_AMQP_PORT"]
        else {
            throw SetupError("TRIAD_TEST_OUTAGE_* are not set: run the suite with scripts/test.sh")
        }
        var childEnv = env
        childEnv["CI"] = ""  // never kill the epmd the shared node uses
        childEnv["TRIAD_SVC_DIR"] = dir
        childEnv["TRIAD_AMQP_PORT"] = port
        childEnv["TRIAD_RABBITMQ_NODE"] = "rabbit-outage@localhost"
        try await TestEnvironment.services(script, verb, "rabbitmq", environment: childEnv)
    }

    @Test func everyRegistryEventArrivesAfterTenSecondsOfOutage() async throws {
        guard let url = ProcessInfo.processInfo.environment["TRIAD_TEST_OUTAGE_AMQP_URL"] else {
            throw SetupError("TRIAD_TEST_OUTAGE_AMQP_URL is not set: run the suite with scripts/test.sh")
        }
        // A durable queue with every event: it keeps what arrives while nobody consumes, and
        // survives the broker's restart (the relay publishes persistent messages).
        let queue = "outage-test-\(UUID().uuidString.prefix(8).lowercased())"
        let setup = AMQPConsumer(endpoint: try AMQPEndpoint(url: url))
        try await setup.connect()
        try await setup.declareTopicExchange(AMQPEventPublisher.exchange)
        try await setup.declareQueue(queue, durable: true)
        try await setup.bind(exchange: AMQPEventPublisher.exchange, routingKey: "#")
        setup.close()

        // Both backends through one outage (two cases would stop the same broker twice).
        try await withServer(.sqlite, amqp: url) { onSQLite in
            try await withServer(.postgres, amqp: url) { onPostgres in
                try await outage(servers: [onSQLite, onPostgres], url: url, queue: queue)
            }
        }
    }

    private func outage(servers: [TestServer], url: String, queue: String) async throws {
        for s in servers { try await EventRelayTests.waitForRelay(s) }
        let prefixes = servers.indices.map { "o\($0)\(UUID().uuidString.prefix(5).lowercased())" }

        // Writers: create then update resources, and send telemetry, until told to stop.
        let stop = StopFlag()
        let writers = servers.indices.map { i in
            Task {
                let api = servers[i].admin
                var n = 0
                var failures = 0
                while await !stop.isSet {
                    let name = "\(prefixes[i])-\(n % 20)"
                    if n < 20 {
                        if (try? await api.send(.POST, "/api/v1/resources", body: Docs.json(Docs.device(name))))?.status != 201 { failures += 1 }
                    } else {
                        let patch = Data(#"{"metadata":{"labels":{"round":"\#(n)"}}}"#.utf8)
                        if (try? await api.send(.PATCH, "/api/v1/resources/\(name)", body: patch, contentType: "application/merge-patch+json"))?.status != 200 {
                            failures += 1
                        }
                        _ = try? await api.send(.POST, "/api/v1/resources/\(name)/telemetry", body: Data(#"{"n":\#(n)}"#.utf8))
                    }
                    n += 1
                    try? await Task.sleep(for: .milliseconds(20))
                }
                return failures
            }
        }
        try await Task.sleep(for: .seconds(2))
        try await Self.outageBroker("stop")
        let stopped = ContinuousClock.now
        try await eventually("readiness says events are not delivered", within: 20) {
            let during = try await TriadClient(server: servers[1].baseURL, token: nil).send(.GET, "/readyz")
            return during.status == 503 && during.json?["checks"]?["amqp"]?["ok"] == .bool(false)
        }
        // The outage lasts 10 s whatever the wait above took.
        try await Task.sleep(until: stopped + .seconds(10))
        try await Self.outageBroker("start")
        try await Task.sleep(for: .seconds(2))
        await stop.set()
        for w in writers { #expect(await w.value == 0, "the API kept accepting writes during the outage") }

        // Every event in each server's log must reach the queue.
        var expected: [String: [Int64: String]] = [:]  // server prefix → id → subject
        for (i, s) in servers.enumerated() {
            let log = String(decoding: try await s.admin.call(.GET, "/api/v1/events?follow=false&since=0").body, as: UTF8.self)
            for line in log.split(separator: "\n") where line.hasPrefix("data:") {
                let event = try JSONCoding.parse(Data(line.dropFirst(5).drop { $0 == " " }.utf8))
                if let subject = event["subject"]?.stringValue, subject.hasPrefix(prefixes[i]), let id = Int64(event["id"]?.stringValue ?? "") {
                    expected[prefixes[i], default: [:]][id] = subject
                }
            }
            #expect((expected[prefixes[i]]?.count ?? 0) > 100, "the writer made enough events to span the outage")
        }
        let consumer = AMQPConsumer(endpoint: try AMQPEndpoint(url: url))
        try await consumer.connect()
        defer { consumer.close() }
        try await consumer.declareQueue(queue, durable: true)
        try await consumer.startConsuming()
        var seen: [String: [String: [Int64]]] = [:]  // prefix → subject → ids in arrival order
        func missing() -> Int {
            expected.reduce(0) { total, entry in
                let got = Set(seen[entry.key]?.values.flatMap { $0 } ?? [])
                return total + entry.value.keys.filter { !got.contains($0) }.count
            }
        }
        let deadline = ContinuousClock.now + .seconds(60)
        while missing() > 0, ContinuousClock.now < deadline {
            guard let d = try await consumer.next(timeout: .seconds(2)), !d.routingKey.hasSuffix(".telemetry") else { continue }
            let event = try JSONCoding.parse(Data(d.body))
            guard let subject = event["subject"]?.stringValue, let id = Int64(d.messageID ?? ""),
                let prefix = prefixes.first(where: { subject.hasPrefix($0) })
            else { continue }
            seen[prefix, default: [:]][subject, default: []].append(id)
        }
        #expect(missing() == 0, "no registry event is lost")
        for (prefix, subjects) in seen {
            for (subject, ids) in subjects {
                // Redelivery after a crash may repeat a batch; first arrivals must still be in order.
                var firsts: [Int64] = []
                for id in ids where !firsts.contains(id) { firsts.append(id) }
                #expect(firsts == firsts.sorted(), "\(prefix) \(subject): in order per resource")
            }
        }
    }
}

actor StopFlag {
    private(set) var isSet = false
    func set() { isSet = true }
}
