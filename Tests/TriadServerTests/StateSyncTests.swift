import Foundation
import NIOHTTP1
import Testing
import TriadAMQP
import TriadClient
import TriadCore
import TriadServer
import TriadTesting

/// State sync from `triad.state` (docs/events.md) against the real RabbitMQ of scripts/test.sh.
@Suite("State sync from RabbitMQ")
struct StateSyncTests {
    @Test(arguments: BackendKind.allCases)
    func goodMessagesApplyAndBadOnesAreDeadLetteredWithAReason(_ kind: BackendKind) async throws {
        let url = try TestEnvironment.amqpURL()
        try await withServer(kind, amqp: url) { server in
            let anonymous = TriadClient(server: server.baseURL, token: nil)
            try await eventually("state sync is consuming") {
                try await anonymous.send(.GET, "/readyz").json?["checks"]?["amqpState"]?["ok"] == .bool(true)
            }
            let meter = TelemetryTests.name("meter")
            let other = TelemetryTests.name("other")
            for name in [meter, other] { _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(name))) }
            let own = try await server.token(.device, resource: meter)
            let foreign = try await server.token(.device, resource: other)
            let before = try await server.admin.call(.GET, "/api/v1/resources/\(meter)").json

            let publisher = AMQPPublisher(endpoint: try AMQPEndpoint(url: url))
            try await publisher.connect()
            defer { publisher.close() }
            let deadQueue = server.server.configuration.stateQueue + ".dead"
            let deadLetters = AMQPConsumer(endpoint: try AMQPEndpoint(url: url))
            try await deadLetters.connect()
            defer { deadLetters.close() }
            try await deadLetters.declareQueue(deadQueue, durable: true)
            try await deadLetters.startConsuming()

            // (routing key, token, body, expected reason prefix; nil = applied)
            let tooLarge = #"{"phase":"Failed","note":""# + String(repeating: "x", count: 1 << 20) + #""}"#
            let messages: [(String, String?, String, String?)] = [
                (meter, "Bearer \(own)", tooLarge, "too-large"),
                (meter, "Bearer \(own)", #"{"phase":"Running","location":{"space":"lab"}}"#, nil),
                (meter, "Bearer \(own)", "{oops", "malformed"),
                (meter, "Bearer \(own)", #"["Running"]"#, "malformed"),
                ("nosuch-\(meter)", "Bearer \(server.adminToken)", #"{"phase":"Running"}"#, "not-found"),
                (meter, "Bearer \(own)", #"{"phase":"Dancing"}"#, "invalid"),
                (meter, "Bearer \(foreign)", #"{"phase":"Failed"}"#, "unauthorised"),
                (meter, nil, #"{"phase":"Failed"}"#, "unauthorised"),
                (meter, "Bearer not-a-token", #"{"phase":"Failed"}"#, "unauthorised"),
                (meter, "Bearer \(own)", #"{"location":{"space":"hall"}}"#, nil),
            ]
            var ids: [String: String] = [:]
            for (i, (key, token, body, reason)) in messages.enumerated() {
                let id = "\(meter)-\(i)"
                if let reason { ids[id] = reason }
                // The malformed ones also carry 90 KB of headers: more than a dead letter may copy.
                var headers = token.map { ["authorization": $0] } ?? [:]
                if reason == "malformed" { for h in ["x-a", "x-b", "x-c"] { headers[h] = String(repeating: "h", count: 30_000) } }
                try await publisher.publishConfirmed([
                    AMQPMessage(exchange: StateSync.exchange, routingKey: key, body: Array(body.utf8), messageID: id, headers: headers)
                ])
            }

            var dead: [String: AMQPDelivery] = [:]
            while dead.count < ids.count, let d = try await deadLetters.next(timeout: .seconds(10)) {
                if let id = d.messageID, ids[id] != nil { dead[id] = d }
            }
            #expect(dead.count == ids.count, "every bad message is dead-lettered")
            for (id, prefix) in ids {
                let reason = dead[id]?.headers["x-triad-reason"] ?? ""
                #expect(reason.hasPrefix(prefix + ":"), "\(id): \(reason)")
                #expect(dead[id]?.headers["authorization"] == nil, "the token is not kept in the dead letter")
                let copied = dead[id]?.headers.filter { !$0.key.hasPrefix("x-triad-") }.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count } ?? 0
                #expect(copied <= 32 * 1024, "\(id): \(copied) bytes of headers copied")
            }
            // Generous: on a machine busy with every other suite, applying takes a while.
            try await eventually("both good messages are applied, in order", within: 60) {
                let status = try await server.admin.call(.GET, "/api/v1/resources/\(meter)").json?["status"]
                return status?["phase"] == .string("Running") && status?["location"]?["space"] == .string("hall")
            }
            let after = try await server.admin.call(.GET, "/api/v1/resources/\(meter)").json
            #expect(after?["spec"] == before?["spec"], "state sync touches only the status")
            let log = String(decoding: try await server.admin.call(.GET, "/api/v1/events?follow=false&since=0").body, as: UTF8.self)
            let statusEvents = try log.split(separator: "\n").filter { $0.hasPrefix("data:") }
                .map { try JSONCoding.parse(Data($0.dropFirst(5).drop { $0 == " " }.utf8)) }
                .filter { $0["subject"] == .string(meter) && $0["type"] == .string("io.triad.resource.status") }
            #expect(statusEvents.count == 2, "exactly the two good messages were written")
        }
    }
}
