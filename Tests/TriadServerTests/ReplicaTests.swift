import Foundation
import NIOHTTP1
import Testing
import TriadClient
import TriadCore
import TriadMQTT
import TriadTesting

/// Two `triad server` processes on one PostgreSQL, RabbitMQ and Mosquitto (docs/operations.md): one
/// controller leader, a takeover within seconds when it is killed (under load: ReplicaLoadTests),
/// telemetry split between them by the shared subscription.
@Suite("Replicas")
struct ReplicaTests {
    static func metric(_ server: ServerProcess, token: String, _ line: String) async throws -> Double {
        let text = String(decoding: try await TriadClient(server: server.baseURL, token: token).call(.GET, "/metrics").body, as: UTF8.self)
        return text.split(separator: "\n").first { $0.hasPrefix(line + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") } ?? 0
    }

    /// Two servers on one new PostgreSQL database with `arguments`, each with a data directory of
    /// its own under the returned one.
    static func startTwo(_ arguments: [String], token: String) async throws -> ([ServerProcess], String) {
        let dir = try TestPaths.temporaryDirectory()
        let database = try await ProcessTests.databaseArguments(.postgres, dataDir: dir + "/a")
        var args = database + arguments
        let a = try await ServerProcess.start(args, environment: ["TRIAD_ADMIN_TOKEN": token], directory: dir)
        args[args.firstIndex(of: dir + "/a")!] = dir + "/b"
        do {
            let b = try await ServerProcess.start(args, environment: ["TRIAD_ADMIN_TOKEN": token], directory: dir)
            return ([a, b], dir)
        } catch {
            a.stop()
            throw error
        }
    }

    /// Which of `servers` leads the controller, once exactly one does.
    static func leader(of servers: [ServerProcess], token: String) async throws -> Int {
        var leaders: [Double] = []
        try await eventually("one server leads the controller", within: 10) {
            leaders = []
            for s in servers { leaders.append(try await Self.metric(s, token: token, "triad_controller_leader")) }
            return leaders.reduce(0, +) == 1
        }
        #expect(leaders.sorted() == [0, 1])
        return leaders.firstIndex(of: 1) ?? 0
    }

    @Test func oneLeaderTakesOverAndTelemetryIsShared() async throws {
        let mqtt = try TestEnvironment.mqttURL()
        let amqp = try TestEnvironment.amqpURL()
        let token = "replica-token-\(UUID().uuidString)"
        let (servers, dir) = try await Self.startTwo(["--mqtt", mqtt, "--mqtt-shared", "true", "--amqp", amqp], token: token)
        defer { servers.forEach { $0.stop() } }
        let leaderIndex = try await Self.leader(of: servers, token: token)
        let leader = servers[leaderIndex]
        let standby = servers[1 - leaderIndex]
        let standbyProbeLog = dir + (leaderIndex == 0 ? "/b" : "/a") + "/probes/"

        // A probe runs (once) and data flows.
        let api = TriadClient(server: standby.baseURL, token: token)  // survives the leader's kill
        let probe = TelemetryTests.name("replica")
        _ = try await api.call(.POST, "/api/v1/resources", body: try ProbeControllerTests.device(probe, args: ["--rate", "5"]))
        try await eventually("the probe is Synchronous", within: 30) {
            try await api.call(.GET, "/api/v1/resources/\(probe)").json?["status"]?["probePhase"] == .string("Synchronous")
        }

        // Telemetry is split by the shared subscription: each takes part, none is taken twice.
        let meter = TelemetryTests.name("shared")
        _ = try await api.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(meter)))
        try await Task.sleep(for: .seconds(6))  // both replicas' kind caches see the new resource
        let before = try await servers.asyncMap { try await Self.metric($0, token: token, #"triad_telemetry_samples_total{source="mqtt"}"#) }
        let publisher = try MQTTClient(endpoint: try MQTTEndpoint(url: mqtt))
        try publisher.start()
        defer { publisher.stop() }
        #expect(await publisher.waitUntilReady(timeout: .seconds(10)))
        for i in 0..<100 {
            try publisher.publish(topic: Telemetry.topic(meter, .telemetry), payload: Array(#"{"i":\#(i)}"#.utf8))
            try await Task.sleep(for: .milliseconds(5))
        }
        try await eventually("the history has each sample once", within: 15) {
            let items = try await api.call(.GET, "/api/v1/resources/\(meter)/telemetry?limit=1000").json?["items"]?.arrayValue ?? []
            return items.count == 100
        }
        let after = try await servers.asyncMap { try await Self.metric($0, token: token, #"triad_telemetry_samples_total{source="mqtt"}"#) }
        let shares = zip(after, before).map { $0 - $1 }
        #expect(shares.allSatisfy { $0 > 0 }, "both replicas took part: \(shares)")

        // kill -9 of the leader: the standby leads within seconds and the probe runs again.
        #expect(!FileManager.default.fileExists(atPath: standbyProbeLog + probe + "/probe.log"), "the standby ran no probe before")
        leader.kill9()
        let killedAt = ContinuousClock.now
        try await eventually("the standby takes over", within: 15) {
            try await Self.metric(standby, token: token, "triad_controller_leader") == 1
        }
        let takeover = ContinuousClock.now - killedAt
        #expect(takeover < .seconds(10), "took \(takeover)")
        try await eventually("the new leader runs the probe", within: 20) {
            FileManager.default.fileExists(atPath: standbyProbeLog + probe + "/probe.log")
        }
        try await eventually("the probe is Synchronous under the new leader", within: 20) {
            let status = try await api.call(.GET, "/api/v1/resources/\(probe)").json?["status"]
            let ready = status?["conditions"]?.arrayValue?.first { $0["type"] == .string("ProbeReady") }
            return status?["probePhase"] == .string("Synchronous") && ready?["reason"] == .string("DataFlowing")
        }
    }
}
