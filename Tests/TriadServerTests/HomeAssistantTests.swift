import AsyncHTTPClient
import Foundation
import Logging
import NIOHTTP1
import NIOWebSocket
import ServiceLifecycle
import Synchronization
import Testing
import TriadAMQP
import TriadAgents
import TriadClient
import TriadCore
import TriadServer
import TriadTesting
import WSClient

/// Device agents against the real Home Assistant that scripts/test.sh starts (its demo plus
/// `fan.air_purifier` and `switch.coffee_machine`): apps invoke a device's operations through
/// Triad; Home Assistant's state comes back as the resource's status.
@Suite("Against Home Assistant, one test at a time (one stops it): device and person agents, the probe", .serialized)
struct HomeAssistantTests {
    static func homeAssistant() throws -> (url: String, tokenFile: String) {
        let env = ProcessInfo.processInfo.environment
        guard let url = env["TRIAD_TEST_HA_URL"], let tokenFile = env["TRIAD_TEST_HA_TOKEN_FILE"] else {
            throw SetupError("TRIAD_TEST_HA_URL and TRIAD_TEST_HA_TOKEN_FILE are not set: run the suite with scripts/test.sh, which starts Home Assistant")
        }
        return (url, tokenFile)
    }

    static func haToken() throws -> String {
        try String(contentsOfFile: try homeAssistant().tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Home Assistant's REST API, as the test sees it (not through the agent).
    static func ha(_ method: HTTPMethod, _ path: String, _ body: JSONValue? = nil) async throws -> JSONValue? {
        let client = TriadClient(server: try homeAssistant().url, token: try haToken())
        return try await client.call(method, path, body: body.map { JSONCoding.encode($0) }).json
    }

    static func entity(_ id: String) async throws -> JSONValue? { try await ha(.GET, "/api/states/\(id)") }

    /// One command over Home Assistant's WebSocket API (the entity registry is only there).
    static func haCommand(_ command: JSONValue) async throws -> JSONValue? {
        let (url, _) = try homeAssistant()
        let token = try haToken()
        let answer = AnswerBox()
        try await WebSocketClient.connect(
            url: url.replacingOccurrences(of: "http://", with: "ws://") + "/api/websocket",
            configuration: .init(maxFrameSize: 16 << 20), logger: TestEnvironment.logger
        ) { inbound, outbound, _ in
            var messages = inbound.messages(maxSize: 16 << 20).makeAsyncIterator()
            _ = try await messages.next()
            try await outbound.write(.text(#"{"type":"auth","access_token":"\#(token)"}"#))
            _ = try await messages.next()
            try await outbound.write(.text(String(decoding: JSONCoding.encode(command), as: UTF8.self)))
            while case .text(let text)? = try await messages.next() {
                let tree = try JSONCoding.parse(Data(text.utf8))
                if tree["type"] == .string("result") {
                    answer.set(tree)
                    break
                }
            }
            try await outbound.close(.normalClosure, reason: nil)
        }
        return answer.get()
    }

    static func rename(_ from: String, to: String) async throws {
        let reply = try await haCommand(
            .object([
                "id": .number(1), "type": .string("config/entity_registry/update"),
                "entity_id": .string(from), "new_entity_id": .string(to),
            ]))
        #expect(reply?["success"] == .bool(true), "renamed \(from) to \(to): \(String(describing: reply))")
    }

    /// Runs an agent host with `agents` (YAML) against `server` until `body` returns; `files` are
    /// written beside the configuration (token files).
    static func withAgents(
        _ server: TestServer, _ agentsYAML: String, files: [String: String] = [:], amqp: String? = nil,
        _ body: (_ host: AgentHost, _ port: Int) async throws -> Void
    ) async throws {
        let dir = try TestPaths.temporaryDirectory()
        for (file, content) in files { try content.write(toFile: dir + "/" + file, atomically: true, encoding: .utf8) }
        let operatorToken = try await server.token(.operator)
        try operatorToken.write(toFile: dir + "/triad.token", atomically: true, encoding: .utf8)
        let (haURL, haTokenFile) = try homeAssistant()
        let yaml = """
            triad: {url: "\(server.baseURL)", tokenFile: triad.token\(amqp.map { ", amqp: \"\($0)\"" } ?? "")}
            listen: 127.0.0.1:0
            heartbeatSeconds: 2
            homeAssistant: {url: "\(haURL)", tokenFile: "\(haTokenFile)"}
            agents:
            \(agentsYAML)
            """
        try yaml.write(toFile: dir + "/agents.yaml", atomically: true, encoding: .utf8)
        let config = try AgentConfig.load(path: dir + "/agents.yaml", environment: [:])
        let host = AgentHost(config: config, logger: TestEnvironment.logger)
        let (ports, portContinuation) = AsyncStream<Int>.makeStream()
        let group = ServiceGroup(configuration: .init(services: [host.makeApplication { portContinuation.yield($0) }], logger: TestEnvironment.logger))
        let task = Task { try await group.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw SetupError("the agent host did not start") }
        do { try await body(host, port) } catch {
            await group.triggerGracefulShutdown()
            _ = try? await task.value
            throw error
        }
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }

    static func resource(_ server: TestServer, _ name: String) async throws -> JSONValue? {
        try await server.admin.send(.GET, "/api/v1/resources/\(name)").json
    }

    @Test func appsInvokeThePurifierThroughTriadAndItsStateComesBack() async throws {
        // A clean start: the purifier off at 0.
        _ = try await Self.ha(.POST, "/api/services/fan/turn_off", .object(["entity_id": .string("fan.air_purifier")]))
        let amqp = try TestEnvironment.amqpURL()
        try await withServer(.sqlite, amqp: amqp) { server in
            let name = TelemetryTests.name("purifier")
            // An integrator follows the purifier's status on RabbitMQ.
            try await EventRelayTests.waitForRelay(server)
            let integrator = try await ReplicaRelayTests.eventConsumer(url: amqp, boundTo: "device.\(name).status")
            defer { integrator.close() }
            try await Self.withAgents(
                server,
                """
                  - name: \(name)
                    device: {type: fan, entity: fan.air_purifier}
                    labels: {triad.io/space: pantry-3f}
                    prices: {set_percentage: 0.25, turn_on: 1}
                """, amqp: amqp
            ) { host, port in
                try await eventually("the purifier's resource is Running with its operations", within: 20) {
                    let r = try await Self.resource(server, name)
                    let ops = r?["spec"]?["operations"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []
                    return r?["status"]?["phase"] == .string("Running") && ops.contains("set_percentage") && ops.contains("set_preset_mode")
                }
                // Its location is the resource's status.location: one the registry would refuse is refused here.
                let agent = TriadClient(server: "http://127.0.0.1:\(port)", token: host.invocationSecret)
                let badLocation = try await agent.send(.PATCH, "/agents/\(name)/meta", body: Data(#"{"location": {"since": "yesterday"}}"#.utf8))
                #expect(badLocation.status == 422 && String(decoding: badLocation.body, as: UTF8.self).contains("/location/since"))
                let moved = try await agent.call(.PATCH, "/agents/\(name)/meta", body: Data(#"{"location": {"space": "pantry-3f"}}"#.utf8))
                #expect(moved.json?["location"]?["space"] == .string("pantry-3f"))
                let app = try await server.namedToken(.app)
                let client = server.client(token: app.secret)
                _ = try await client.call(.POST, "/api/v1/resources/\(name)/binding", body: Data(#"{"ttlSeconds": 60}"#.utf8))
                let reply = try await client.call(.POST, "/api/v1/resources/\(name)/operations/set_percentage", body: Data(#"{"percentage": 60}"#.utf8))
                #expect(reply.json?["invocation"]?["state"] == .string("Succeeded"))
                #expect(reply.json?["invocation"]?["price"] == .number(0.25))

                // Home Assistant changed; the resource's status follows it.
                #expect(try await Self.entity("fan.air_purifier")?["attributes"]?["percentage"] == .number(60))
                try await eventually("the status shows 60 %", within: 10) {
                    try await Self.resource(server, name)?["status"]?["telemetry"]?["values"]?["percentage"] == .number(60)
                }
                var seenOnTheBus = false
                while !seenOnTheBus, let delivery = try await integrator.next(timeout: .seconds(10)) {
                    let event = try JSONCoding.parse(Data(delivery.body))
                    seenOnTheBus = event["data"]?["status"]?["telemetry"]?["values"]?["percentage"] == .number(60)
                }
                #expect(seenOnTheBus, "the integrator's queue got the purifier's status event with 60 %")
                // The agent reported its status through triad.state, not over REST.
                let reports = await host.statusReports
                #expect(reports.bus > 0 && reports.rest == 0, "\(reports)")
                let ledger = try await server.admin.call(.GET, "/api/v1/invocations?resource=\(name)").json
                #expect(ledger?["items"]?.arrayValue?.first?["caller"] == .string(app.name))
                #expect(ledger?["metadata"]?["totalPrice"] == .number(0.25))

                // Arguments Home Assistant would refuse never reach it.
                let badPreset = try await client.send(
                    .POST, "/api/v1/resources/\(name)/operations/set_preset_mode", body: Data(#"{"preset_mode": "warp"}"#.utf8))
                #expect(badPreset.status == 422)
                #expect(String(decoding: badPreset.body, as: UTF8.self).contains("auto, sleep, turbo"), "names what is allowed")
                let badPercentage = try await client.send(
                    .POST, "/api/v1/resources/\(name)/operations/set_percentage", body: Data(#"{"percentage": 140}"#.utf8))
                #expect(badPercentage.status == 422)
                #expect(try await Self.entity("fan.air_purifier")?["attributes"]?["percentage"] == .number(60), "nothing changed")
                let unknown = try await client.send(.POST, "/api/v1/resources/\(name)/operations/self_destruct", body: Data("{}".utf8))
                #expect(unknown.status == 404)
            }
            // Stopped: the resource says so.
            try await eventually("the stopped agent's resource is Pending", within: 10) {
                try await Self.resource(server, name)?["status"]?["phase"] == .string("Pending")
            }
        }
    }

    @Test func aRenamedEntityIsFollowedByItsUniqueID() async throws {
        try await withServer(.sqlite) { server in
            let name = TelemetryTests.name("coffee")
            try await Self.withAgents(
                server,
                """
                  - name: \(name)
                    device: {type: switch, entity: switch.coffee_machine}
                    accessMode: Shared
                """
            ) { _, _ in
                try await eventually("the coffee machine is Running", within: 20) {
                    try await Self.resource(server, name)?["status"]?["phase"] == .string("Running")
                }
                try await Self.rename("switch.coffee_machine", to: "switch.coffee_machine_renamed")
                do {
                    let app = try await server.token(.app)
                    try await eventually("the agent follows the new entity id", within: 10) {
                        try await Self.resource(server, name)?["status"]?["conditions"]?.arrayValue?
                            .contains { $0["message"]?.stringValue?.contains("switch.coffee_machine_renamed") == true } == true
                    }
                    _ = try await server.client(token: app).call(.POST, "/api/v1/resources/\(name)/operations/turn_on", body: Data("{}".utf8))
                    #expect(try await Self.entity("switch.coffee_machine_renamed")?["state"] == .string("on"))
                    _ = try await server.client(token: app).call(.POST, "/api/v1/resources/\(name)/operations/turn_off", body: Data("{}".utf8))
                } catch {
                    try await Self.rename("switch.coffee_machine_renamed", to: "switch.coffee_machine")
                    throw error
                }
                try await Self.rename("switch.coffee_machine_renamed", to: "switch.coffee_machine")
            }
        }
    }

    /// Stops or starts the Home Assistant that scripts/test.sh runs.
    static func homeAssistantService(_ verb: String) async throws {
        let env = ProcessInfo.processInfo.environment
        guard let script = env["TRIAD_TEST_SERVICES"] else {
            throw SetupError("TRIAD_TEST_SERVICES is not set: run the suite with scripts/test.sh")
        }
        try await TestEnvironment.services(script, verb, "homeassistant", environment: env)
    }

    @Test func stoppingHomeAssistantMakesTheDeviceFailedAndStartingItBringsItBack() async throws {
        try await withServer(.sqlite) { server in
            let name = TelemetryTests.name("purifier")
            try await Self.withAgents(
                server,
                """
                  - name: \(name)
                    device: {type: fan, entity: fan.air_purifier}
                """
            ) { _, _ in
                try await eventually("the purifier is Running", within: 20) {
                    try await Self.resource(server, name)?["status"]?["phase"] == .string("Running")
                }
                try await Self.homeAssistantService("stop")
                do {
                    try await eventually("Failed, DeviceReachable False naming Home Assistant", within: 30) {
                        let status = try await Self.resource(server, name)?["status"]
                        let reachable = status?["conditions"]?.arrayValue?.first { $0["type"] == .string("DeviceReachable") }
                        return status?["phase"] == .string("Failed") && reachable?["status"] == .string("False")
                            && reachable?["reason"] == .string("HomeAssistantUnreachable")
                    }
                } catch {
                    try? await Self.homeAssistantService("start")
                    throw error
                }
                try await Self.homeAssistantService("start")
                try await eventually("Running again, the same agent", within: 60) {
                    try await Self.resource(server, name)?["status"]?["phase"] == .string("Running")
                }
            }
        }
    }

    @Test func anUnreachableHomeAssistantMeansFailedThenRunningWithoutARestart() async throws {
        // A port where Home Assistant is not (yet): the agent starts, says Failed and why, and
        // keeps trying. Then a relay to the real one opens there.
        try await withServer(.sqlite) { server in
            let name = TelemetryTests.name("purifier")
            let relay = try TCPRelay(target: try Self.homeAssistant().url)
            let dir = try TestPaths.temporaryDirectory()
            try await server.token(.operator).write(toFile: dir + "/triad.token", atomically: true, encoding: .utf8)
            try """
            triad: {url: "\(server.baseURL)", tokenFile: triad.token}
            listen: 127.0.0.1:0
            heartbeatSeconds: 2
            homeAssistant: {url: "http://127.0.0.1:\(relay.port)", tokenFile: "\(try Self.homeAssistant().tokenFile)"}
            agents:
              - name: \(name)
                device: {type: fan, entity: fan.air_purifier}
            """.write(toFile: dir + "/agents.yaml", atomically: true, encoding: .utf8)
            let host = AgentHost(config: try AgentConfig.load(path: dir + "/agents.yaml", environment: [:]), logger: TestEnvironment.logger)
            let group = ServiceGroup(configuration: .init(services: [host.makeApplication()], logger: TestEnvironment.logger))
            let task = Task { try await group.run() }
            defer { relay.stop() }
            try await eventually("Failed, with a condition naming Home Assistant", within: 20) {
                let status = try await Self.resource(server, name)?["status"]
                let reachable = status?["conditions"]?.arrayValue?.first { $0["type"] == .string("DeviceReachable") }
                return status?["phase"] == .string("Failed") && reachable?["reason"] == .string("HomeAssistantUnreachable")
            }
            relay.open()
            try await eventually("Running again once Home Assistant is reachable", within: 20) {
                try await Self.resource(server, name)?["status"]?["phase"] == .string("Running")
            }
            await group.triggerGracefulShutdown()
            _ = try? await task.value
        }
    }

    @Test func aBadConfigurationIsRefusedWithEveryProblemAtOnce() throws {
        let dir = try TestPaths.temporaryDirectory()
        try """
        triad: {url: "http://127.0.0.1:8080", tokenFile: missing.token, amqp: "http://127.0.0.1:5672"}
        homeAssistant: {url: "not a url", tokenFile: also-missing.token}
        agents:
          - name: fan-1
            device: {type: toaster, entity: toaster.kitchen}
          - name: fan-1
            device: {type: fan, entity: switch.wrong_domain}
          - name: Bad_Name
            person: {}
            extra: 1
        """.write(toFile: dir + "/agents.yaml", atomically: true, encoding: .utf8)
        do {
            _ = try AgentConfig.load(path: dir + "/agents.yaml", environment: [:])
            Issue.record("the configuration was accepted")
        } catch {
            let text = error.description
            for expected in [
                "/triad/tokenFile: cannot read the token file", "/triad/amqp: must be an amqp:// URL", "/homeAssistant/url: must be an http(s) URL",
                "/homeAssistant/tokenFile: cannot read the token file", "/agents/0/device/type: unknown device type \"toaster\"",
                "/agents/1/name: \"fan-1\" is already the name of /agents/0", "/agents/1/device/entity: a fan is an entity fan.<id>",
                "/agents/2/name: must be a DNS-1123 label", "/agents/2/extra: is not a known key", "/agents/2/person: needs the person's app token",
            ] {
                #expect(text.contains(expected), "reports \(expected)")
            }
            #expect(error.problems.allSatisfy { $0.file == dir + "/agents.yaml" })
        }
    }
}

/// What a WebSocket handler found, read after it returns.
final class AnswerBox: Sendable {
    private let value = Mutex<JSONValue?>(nil)
    func set(_ v: JSONValue) { value.withLock { $0 = v } }
    func get() -> JSONValue? { value.withLock { $0 } }
}
