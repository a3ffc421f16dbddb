import Foundation
import NIOHTTP1
import Synchronization
import Testing
import TriadAMQP
import TriadClient
import TriadCore
import TriadTesting

/// The replicas under load: it writes as fast as two servers take it, so scripts/test.sh runs it
/// alone, after the other suites.
@Suite("Replicas under load")
struct ReplicaLoadTests {
    /// Writes through both replicas; the leader is killed (-9) in the middle of them. The standby
    /// leads within 10 s, every write acknowledged to a client has its event on RabbitMQ, and
    /// only calls to the killed server fail. The relay publishes at least once: a relay killed
    /// between RabbitMQ's confirm and its cursor's commit has that one batch published again by
    /// the other, so an event may arrive twice, never more than one batch of them.
    @Test func theLeaderKilledUnderLoadIsReplacedAndNoEventIsLost() async throws {
        let amqp = try TestEnvironment.amqpURL()
        let token = "replica-token-\(UUID().uuidString)"
        let (servers, _) = try await ReplicaTests.startTwo(["--amqp", amqp], token: token)
        defer { servers.forEach { $0.stop() } }
        let leaderIndex = try await ReplicaTests.leader(of: servers, token: token)
        let standby = servers[1 - leaderIndex]

        let prefix = "k\(UUID().uuidString.prefix(6).lowercased())"
        let consumer = try await ReplicaRelayTests.eventConsumer(url: amqp)
        defer { consumer.close() }

        // Four writers per server, each creating resources until its server is told to stop.
        let log = WriteLog()
        let urls = servers.map(\.baseURL)
        let load = Task {
            await withTaskGroup(of: Void.self) { group in
                for server in 0..<2 {
                    let api = TriadClient(server: urls[server], token: token)
                    for writer in 0..<4 {
                        group.addTask {
                            var n = 0
                            while !log.stopped.withLock({ $0[server] }) {
                                n += 1
                                let name = "\(prefix)-\(server)-\(writer)-\(n)"
                                let reply = try? await api.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(name)))
                                log.outcomes.withLock { $0.append((server, name, reply?.status == 201)) }
                            }
                        }
                    }
                }
            }
        }
        func acknowledged() -> Int { log.outcomes.withLock { $0.filter(\.acknowledged).count } }
        try await eventually("writes flow through both", within: 60) { acknowledged() >= 200 }

        servers[leaderIndex].kill9()
        let killedAt = ContinuousClock.now
        log.stopped.withLock { $0[leaderIndex] = true }
        let beforeKill = acknowledged()
        try await eventually("the standby takes over", within: 20) {
            try await ReplicaTests.metric(standby, token: token, "triad_controller_leader") == 1
        }
        let takeover = ContinuousClock.now - killedAt
        try await eventually("writes go on through the survivor", within: 60) { acknowledged() >= beforeKill + 200 }
        log.stopped.withLock { $0 = [true, true] }
        await load.value

        let all = log.outcomes.withLock { $0 }
        let expected = Set(all.filter(\.acknowledged).map(\.name))
        var received: [String: Int] = [:]
        try await eventually("every acknowledged write's event is on RabbitMQ", within: 60) {
            while let d = try await consumer.next(timeout: .milliseconds(500)) {
                let parts = d.routingKey.split(separator: ".")
                guard parts.count == 3, parts[1].hasPrefix(prefix + "-"), parts[2] == "created" else { continue }
                received[String(parts[1]), default: 0] += 1
            }
            return expected.isSubset(of: Set(received.keys))
        }
        // Anything more would be a second publication.
        while let d = try await consumer.next(timeout: .seconds(2)) {
            let parts = d.routingKey.split(separator: ".")
            if parts.count == 3, parts[1].hasPrefix(prefix + "-"), parts[2] == "created" { received[String(parts[1]), default: 0] += 1 }
        }
        let failed = all.filter { !$0.acknowledged }
        let twice = received.filter { $0.value > 1 }
        print(
            "leader killed under load: took over in \(takeover); \(expected.count) writes acknowledged, \(failed.count) failed, "
                + "\(received.count) events received, \(twice.count) twice")
        #expect(takeover < .seconds(10), "took \(takeover)")
        #expect(
            failed.allSatisfy { $0.server == leaderIndex }, "only calls to the killed server fail: \(failed.filter { $0.server != leaderIndex }.map(\.name))")
        #expect(received.values.allSatisfy { $0 <= 2 }, "no event more than twice")
        #expect(twice.count <= 200, "at most the killed relay's last batch again: \(twice.count)")
    }
}

/// What the writers of a load share: which servers they stop writing to, and each write's outcome.
final class WriteLog: Sendable {
    let stopped = Mutex([false, false])
    let outcomes = Mutex<[(server: Int, name: String, acknowledged: Bool)]>([])
}
