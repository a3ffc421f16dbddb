import Foundation
import NIOHTTP1
import Testing
import TriadClient
import TriadCore
import TriadMQTT
import TriadServer
import TriadTesting

/// Telemetry (docs/mqtt.md) through the REST route and through the real Mosquitto that
/// scripts/test.sh starts: checked, counted when bad, stored in batches, reflected in status.
@Suite("Telemetry")
struct TelemetryTests {
    static func name(_ prefix: String) -> String { "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())" }

    /// A counter's value from `/metrics` (0 when it has not been created yet).
    static func metric(_ server: TestServer, _ name: String, _ labels: String) async throws -> Double {
        let text = String(decoding: try await server.admin.call(.GET, "/metrics").body, as: UTF8.self)
        let prefix = "\(name){\(labels)} "
        return text.split(separator: "\n").first { $0.hasPrefix(prefix) }.flatMap { Double($0.dropFirst(prefix.count)) } ?? 0
    }

    static func rejected(_ server: TestServer, _ reason: TelemetryRejection) async throws -> Double {
        try await metric(server, "triad_telemetry_rejected_total", "reason=\"\(reason.rawValue)\"")
    }

    static func history(_ server: TestServer, _ name: String, query: String = "") async throws -> [JSONValue] {
        try await server.admin.call(.GET, "/api/v1/resources/\(name)/telemetry\(query)").json?["items"]?.arrayValue ?? []
    }

    @Test(arguments: BackendKind.allCases)
    func restSamplesAreCheckedStoredAndReflectedInStatus(_ kind: BackendKind) async throws {
        try await withServer(kind) { server in
            let fan = Self.name("fan")
            let other = Self.name("lamp")
            for name in [fan, other] { _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(name))) }
            let device = server.client(token: try await server.token(.device, resource: fan))
            let path = "/api/v1/resources/\(fan)/telemetry"
            let before = try await Dictionary(uniqueKeysWithValues: TelemetryRejection.allCases.asyncMap { ($0, try await Self.rejected(server, $0)) })

            let first = try await device.send(.POST, path, body: Data(#"{"ts":1764115200000,"values":{"rpm":900}}"#.utf8))
            #expect(first.status == 202)
            #expect(first.json?["ts"] == .string("2025-11-26T00:00:00.000Z"))
            #expect(try await device.send(.POST, path, body: Data(#"{"rpm":1200,"on":true}"#.utf8)).status == 202, "a bare object of values")

            // Bad input: each refused with a clear problem, counted, and nothing stored.
            let bad: [(String, Data, String, Int, TelemetryRejection?)] = [
                (path, Data("{not json".utf8), "application/json", 400, .invalidJSON),
                (path, Data(#"{"values":"hot"}"#.utf8), "application/json", 422, .valuesNotObject),
                (path, Data(#"{"ts":"yesterday","values":{}}"#.utf8), "application/json", 422, .invalidTimestamp),
                (path, Data(#"[1,2]"#.utf8), "application/json", 400, .invalidJSON),
                (path, Data(repeating: UInt8(ascii: " "), count: 300 * 1024), "application/json", 413, .tooLarge),
                (path, Data(#"{"rpm":1}"#.utf8), "text/plain", 415, nil),
                ("/api/v1/resources/nosuch-\(fan)/telemetry", Data(#"{"rpm":1}"#.utf8), "application/json", 404, .unknownResource),
            ]
            for (target, body, type, status, _) in bad {
                let reply = try await server.admin.send(.POST, target, body: body, contentType: type)
                #expect(reply.status == status, "\(String(decoding: body.prefix(40), as: UTF8.self)) → \(reply.status)")
                #expect(reply.headers.contains { $0.0.lowercased() == "content-type" && $0.1 == "application/problem+json" })
            }
            let refused = try await device.send(.POST, "/api/v1/resources/\(other)/telemetry", body: Data(#"{"rpm":1}"#.utf8))
            #expect(refused.status == 403, "a device token reports only for its own resource")
            for (_, _, _, _, reason) in bad {
                guard let reason else { continue }
                #expect(try await Self.rejected(server, reason) >= before[reason]! + 1, "\(reason.rawValue) is counted")
            }

            try await eventually("both samples are in the history") { try await Self.history(server, fan).count == 2 }
            let items = try await Self.history(server, fan)
            #expect(items.first?["values"] == .object(["rpm": .number(900)]))
            #expect(items.last?["values"] == .object(["rpm": .number(1200), "on": .bool(true)]))
            #expect(try await Self.history(server, fan, query: "?limit=1").map { $0["values"] } == [items.last?["values"]], "limit keeps the newest")
            #expect(try await Self.history(server, fan, query: "?to=2025-11-27T00:00:00Z").count == 1)
            #expect(try await Self.history(server, other).isEmpty)
            for query in ["?from=yesterday", "?limit=0", "?limit=x"] {
                #expect(try await server.admin.send(.GET, "\(path)\(query)").status == 400, "\(query)")
            }
            #expect(try await server.admin.send(.GET, "/api/v1/resources/nosuch-\(fan)/telemetry").status == 404)

            try await eventually("status.telemetry shows the latest sample") {
                let status = try await server.admin.call(.GET, "/api/v1/resources/\(fan)").json?["status"]
                return status?["telemetry"]?["values"] == .object(["rpm": .number(1200), "on": .bool(true)])
                    && status?["probePhase"] == .string("Synchronous")
            }
        }
    }

    @Test func aFloodFromOneResourceIsLimitedWhileOthersAreServed() async throws {
        // 1 sample/s (a bucket of 2): 40 requests would have to take 38 s for none to be refused,
        // which no machine is slow enough to do (at 5/s a busy CI machine once accepted all 40).
        try await withServer(.sqlite, configure: { $0.telemetryRate = 1 }) { server in
            let flood = Self.name("flood")
            let calm = Self.name("calm")
            for name in [flood, calm] { _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(name))) }
            let before = try await Self.rejected(server, .rateLimited)
            var statuses: [Int] = []
            let started = ContinuousClock.now
            for i in 0..<40 {
                statuses.append(try await server.admin.send(.POST, "/api/v1/resources/\(flood)/telemetry", body: Data(#"{"n":\#(i)}"#.utf8)).status)
            }
            let elapsed = Double((ContinuousClock.now - started).components.seconds) + 1
            let accepted = statuses.filter { $0 == 202 }.count
            let refused = statuses.filter { $0 == 429 }.count
            // A bucket of 2 refilled at 1/s: never more than that is accepted, however slow the run.
            #expect(accepted <= 2 + Int(elapsed), "\(accepted) accepted in about \(elapsed) s")
            #expect(refused > 0)
            #expect(accepted + refused == 40)
            for i in 0..<2 {  // within its own bucket of 2
                #expect(try await server.admin.send(.POST, "/api/v1/resources/\(calm)/telemetry", body: Data(#"{"n":\#(i)}"#.utf8)).status == 202)
            }
            #expect(try await Self.rejected(server, .rateLimited) >= before + Double(refused))
            try await eventually("the calm resource's samples are all stored") { try await Self.history(server, calm).count == 2 }
        }
    }

    @Test func aSlowMQTTReaderHoldsAtMostItsByteBudgetAndOversizedPayloadsAreNeverCopied() async throws {
        let url = try TestEnvironment.mqttURL()
        let topic = "triad-test/budget/\(UUID().uuidString.prefix(8))"
        // Room for ten 100-byte messages (plus their topics); nobody reads yet.
        let reader = try MQTTClient(
            endpoint: try MQTTEndpoint(url: url), subscriptions: [topic],
            byteBudget: 10 * (100 + topic.utf8.count), maxPayloadBytes: 150)
        try reader.start()
        defer { reader.stop() }
        #expect(await reader.waitUntilReady(timeout: .seconds(10)))
        let sender = try MQTTClient(endpoint: try MQTTEndpoint(url: url))
        try sender.start()
        defer { sender.stop() }
        #expect(await sender.waitUntilReady(timeout: .seconds(10)))
        for i in 0..<30 { try sender.publish(topic: topic, payload: Array(repeating: UInt8(i), count: 100)) }
        try await eventually("the messages past the budget are dropped") { reader.droppedMessages == 20 }
        try sender.publish(topic: topic, payload: Array(repeating: 7, count: 10_000))
        var taken: [MQTTMessage] = []
        for await message in reader.messages {
            taken.append(message)
            if taken.count == 10 {
                // The budget is free again: the oversized one comes through as a marker, uncopied.
                try sender.publish(topic: topic, payload: Array(repeating: 7, count: 10_000))
            }
            if taken.count == 11 { break }
        }
        #expect(taken.prefix(10).map { $0.payload.first } == (0..<10).map { UInt8($0) }, "the first ten, in order")
        #expect(taken.last?.oversized == true && taken.last?.payload.isEmpty == true)
    }

    @Test func mqttSamplesFlowAndBadMessagesAreCountedWithoutStoppingOthers() async throws {
        let url = try TestEnvironment.mqttURL()
        try await withServer(.sqlite, mqtt: url, configure: { $0.telemetryRate = 20 }) { server in
            let anonymous = TriadClient(server: server.baseURL, token: nil)
            try await eventually("the server is subscribed") {
                try await anonymous.send(.GET, "/readyz").json?["checks"]?["mqtt"]?["ok"] == .bool(true)
            }
            let good = Self.name("meter")
            let flood = Self.name("noisy")
            for name in [good, flood] { _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(name))) }
            let before = try await Dictionary(uniqueKeysWithValues: TelemetryRejection.allCases.asyncMap { ($0, try await Self.rejected(server, $0)) })

            let probe = try MQTTClient(endpoint: try MQTTEndpoint(url: url))
            try probe.start()
            defer { probe.stop() }
            #expect(await probe.waitUntilReady(timeout: .seconds(10)))
            func send(_ topic: String, _ payload: String) throws { try probe.publish(topic: topic, payload: Array(payload.utf8)) }
            let topic = Telemetry.topic(good, .telemetry)
            try send(topic, #"{"values":{"kwh":1}}"#)
            try send("triad/v1/resources/Not_A_Name/telemetry", #"{"kwh":1}"#)
            try send(topic, "{oops")
            try send(topic, #"{"values":[1]}"#)
            try probe.publish(topic: topic, payload: Array(repeating: UInt8(ascii: " "), count: 300 * 1024))
            try send(Telemetry.topic("nosuch-\(good)", .telemetry), #"{"kwh":1}"#)
            try send(Telemetry.topic(good, .probe), "maybe")
            for i in 0..<100 { try send(Telemetry.topic(flood, .telemetry), #"{"i":\#(i)}"#) }
            for i in 2...5 { try send(topic, #"{"values":{"kwh":\#(i)}}"#) }

            try await eventually("every good sample is stored") { try await Self.history(server, good).count == 5 }
            #expect(try await Self.history(server, good).map { $0["values"]?["kwh"] } == (1...5).map { .number(Double($0)) })
            let expected: [TelemetryRejection: Double] = [
                .malformedTopic: 1, .invalidJSON: 1, .valuesNotObject: 1, .tooLarge: 1,
                .unknownResource: 1, .invalidProbeState: 1, .rateLimited: 50,
            ]
            for (reason, n) in expected {
                #expect(try await Self.rejected(server, reason) >= before[reason]! + n, "\(reason.rawValue) is counted")
            }

            // A probe's will: when its connection dies, the broker says `offline` for it.
            let dying = try MQTTClient(
                endpoint: try MQTTEndpoint(url: url),
                will: MQTTWill(topic: Telemetry.topic(good, .probe), payload: Array("offline".utf8), retain: false))
            try dying.start()
            #expect(await dying.waitUntilReady(timeout: .seconds(10)))
            try await Task.sleep(for: .milliseconds(200))
            dying.abandon()
            try await eventually("the probe is Failed with reason ProbeOffline") {
                let status = try await server.admin.call(.GET, "/api/v1/resources/\(good)").json?["status"]
                let condition = status?["conditions"]?.arrayValue?.first { $0["type"] == .string("ProbeReady") }
                return status?["probePhase"] == .string("Failed") && condition?["reason"] == .string("ProbeOffline")
            }
        }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for e in self { out.append(try await transform(e)) }
        return out
    }
}
