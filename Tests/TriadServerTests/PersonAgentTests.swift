import Foundation
import NIOHTTP1
import Testing
import TriadAgents
import TriadClient
import TriadCore
import TriadMQTT
import TriadTesting

/// Person agents against a real server and the real Home Assistant: a person's operations follow
/// where they are; invoked, they run the device's operation in the person's name. In the device
/// agents' suite: every test that uses Home Assistant runs one at a time (one stops it).
extension HomeAssistantTests {
    static func personOperations(_ server: TestServer, _ name: String) async throws -> [String: JSONValue] {
        let items = try await Self.resource(server, name)?["spec"]?["operations"]?.arrayValue ?? []
        return Dictionary(items.compactMap { op in op["name"]?.stringValue.map { ($0, op) } }, uniquingKeysWith: { a, _ in a })
    }

    static func space(_ server: TestServer, _ name: String) async throws -> String? {
        try await Self.resource(server, name)?["status"]?["location"]?["space"]?.stringValue
    }

    @Test func aPersonsOperationsFollowWhereTheyAreAndRunInTheirName() async throws {
        _ = try await Self.ha(.POST, "/api/services/switch/turn_off", .object(["entity_id": .string("switch.coffee_machine")]))
        let mqtt = try TestEnvironment.mqttURL()
        try await withServer(.sqlite, mqtt: mqtt) { server in
            let pantry = TelemetryTests.name("pantry")
            let office = TelemetryTests.name("office")
            let coffee = TelemetryTests.name("coffee")
            let alice = TelemetryTests.name("alice")
            let lamp = TelemetryTests.name("lamp")
            for space in [pantry, office] {
                _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.resource(space, kind: "Space")))
            }
            let aliceToken = try await server.namedToken(.app)
            try await eventually("the server is subscribed to MQTT", within: 20) {
                try await TriadClient(server: server.baseURL, token: nil).send(.GET, "/readyz").json?["checks"]?["mqtt"]?["ok"] == .bool(true)
            }
            try await Self.withAgents(
                server,
                """
                  - name: \(coffee)
                    device: {type: switch, entity: switch.coffee_machine}
                    labels: {triad.io/space: \(pantry)}
                    prices: {turn_on: 1.5}
                  - name: \(alice)
                    person: {tokenFile: alice.token}
                """, files: ["alice.token": aliceToken.secret]
            ) { host, port in
                try await eventually("Alice's resource is Running, her lease held, no operations", within: 20) {
                    let r = try await Self.resource(server, alice)
                    return r?["status"]?["phase"] == .string("Running") && r?["status"]?["binding"]?["holder"] == .string(aliceToken.name)
                        && r?["spec"]?["operations"] == nil
                }
                try await eventually("the coffee machine is Running", within: 20) {
                    try await Self.resource(server, coffee)?["status"]?["phase"] == .string("Running")
                }

                // Alice walks into the pantry: she may now use the coffee machine, at its price.
                let agent = TriadClient(server: "http://127.0.0.1:\(port)", token: host.invocationSecret)
                _ = try await agent.call(.PATCH, "/agents/\(alice)/meta", body: Data(#"{"location": "\#(pantry)"}"#.utf8))
                try await eventually("Alice's operations include \(coffee).turn_on", within: 10) {
                    try await Self.personOperations(server, alice)["\(coffee).turn_on"]?["price"] == .number(1.5)
                }
                #expect(try await Self.space(server, alice) == pantry)
                let generation = try await Self.resource(server, alice)?["metadata"]?["generation"]

                // She invokes it: the coffee machine is on, the ledger names her and the price.
                let aliceClient = server.client(token: aliceToken.secret)
                let reply = try await aliceClient.call(.POST, "/api/v1/resources/\(alice)/operations/\(coffee).turn_on", body: Data("{}".utf8))
                #expect(reply.json?["invocation"]?["state"] == .string("Succeeded"))
                #expect(try await Self.entity("switch.coffee_machine")?["state"] == .string("on"))
                let ledger = try await server.admin.call(.GET, "/api/v1/invocations?resource=\(coffee)").json
                let deviceCall = ledger?["items"]?.arrayValue?.first
                #expect(deviceCall?["caller"] == .string(aliceToken.name))
                #expect(deviceCall?["price"] == .number(1.5))
                // The device's call was made for hers, in her call's trace: charged once, to hers.
                let herCall = try #require(reply.json?["invocation"])
                #expect(deviceCall?["parent"] == herCall["id"] && deviceCall?["traceId"] == herCall["traceId"], "\(deviceCall as Any)")
                #expect(deviceCall?["charged"] == .number(0) && herCall["charged"] == .number(1.5))
                let hers = try await server.admin.call(.GET, "/api/v1/invocations?caller=\(aliceToken.name)").json
                #expect(hers?["metadata"]?["totalPrice"] == .number(1.5), "\(hers as Any)")
                // The coffee machine's lease was taken for the call and given back.
                #expect(try await Self.resource(server, coffee)?["status"]?["bound"] != .bool(true))

                // Nobody else spends Alice's money: her operations need her lease.
                let bob = try await server.token(.app)
                let stolen = try await server.client(token: bob).send(.POST, "/api/v1/resources/\(alice)/operations/\(coffee).turn_off", body: Data("{}".utf8))
                #expect(stolen.status == 409)
                #expect(try await Self.entity("switch.coffee_machine")?["state"] == .string("on"), "nothing ran")

                // A device placed in the pantry appears in her operations without her moving; moved out, it goes.
                var lampDoc = Docs.device(lamp, labels: ["triad.io/space": pantry], price: 2)
                _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(lampDoc))
                try await eventually("\(lamp).brew appears in Alice's operations", within: 10) {
                    try await Self.personOperations(server, alice)["\(lamp).brew"]?["price"] == .number(2)
                }
                // Written once for the lamp, never for the invocations, bindings and statuses before it.
                #expect(try await Self.resource(server, alice)?["metadata"]?["generation"]?.numberValue == generation?.numberValue.map { $0 + 1 })
                lampDoc = Docs.device(lamp, labels: ["triad.io/space": office], price: 2)
                _ = try await server.admin.call(.PUT, "/api/v1/resources/\(lamp)", body: Docs.json(lampDoc))
                try await eventually("\(lamp).brew leaves Alice's operations", within: 10) {
                    try await Self.personOperations(server, alice)["\(lamp).brew"] == nil
                }

                // A location that is no space is refused, and changes nothing.
                for (location, expected) in [(coffee, "is a Device, not a Space"), ("nowhere-\(alice)", "there is no Space named")] {
                    let refused = try await agent.send(.PATCH, "/agents/\(alice)/meta", body: Data(#"{"location": "\#(location)"}"#.utf8))
                    #expect(refused.status == 422)
                    #expect(String(decoding: refused.body, as: UTF8.self).contains(expected))
                }
                #expect(try await Self.space(server, alice) == pantry)
                #expect(try await Self.personOperations(server, alice)["\(coffee).turn_on"] != nil)

                // A badge reader reports her in the office (telemetry on her topic): the pantry's
                // operations go, the lamp's come.
                let badgeReader = try MQTTClient(endpoint: try MQTTEndpoint(url: mqtt))
                try badgeReader.start()
                defer { badgeReader.stop() }
                #expect(await badgeReader.waitUntilReady(timeout: .seconds(10)))
                try badgeReader.publish(topic: Telemetry.topic(alice, .telemetry), payload: Array(#"{"location": "\#(office)"}"#.utf8))
                try await eventually("Alice is in the office with the office's operations", within: 10) {
                    let ops = try await Self.personOperations(server, alice)
                    return try await Self.space(server, alice) == office && ops["\(coffee).turn_on"] == nil && ops["\(lamp).brew"] != nil
                }
                let gone = try await aliceClient.send(.POST, "/api/v1/resources/\(alice)/operations/\(coffee).turn_off", body: Data("{}".utf8))
                #expect(gone.status == 404, "an operation she no longer has")

                // A badge reading that names no space is refused, said in a condition; she stays.
                _ = try await server.admin.call(.POST, "/api/v1/resources/\(alice)/telemetry", body: Data(#"{"location": "\#(coffee)"}"#.utf8))
                try await eventually("LocationAccepted False says why", within: 10) {
                    let conditions = try await Self.resource(server, alice)?["status"]?["conditions"]?.arrayValue ?? []
                    return conditions.contains {
                        $0["type"] == .string("LocationAccepted") && $0["status"] == .string("False")
                            && $0["message"]?.stringValue?.contains("not a Space") == true
                    }
                }
                #expect(try await Self.space(server, alice) == office)
            }
            try await eventually("stopped: Alice is Pending and her lease given back", within: 10) {
                let r = try await Self.resource(server, alice)
                return r?["status"]?["phase"] == .string("Pending") && r?["status"]?["bound"] != .bool(true)
            }
            _ = try? await Self.ha(.POST, "/api/services/switch/turn_off", .object(["entity_id": .string("switch.coffee_machine")]))
        }
    }

    @Test func aPersonIsExclusive() throws {
        let dir = try TestPaths.temporaryDirectory()
        try "secret".write(toFile: dir + "/alice.token", atomically: true, encoding: .utf8)
        try """
        triad: {url: "http://127.0.0.1:8080", tokenFile: alice.token}
        agents:
          - name: alice
            person: {tokenFile: alice.token, location: Not_A_Space}
            accessMode: Shared
        """.write(toFile: dir + "/agents.yaml", atomically: true, encoding: .utf8)
        #expect(throws: AgentConfig.Invalid.self) { try AgentConfig.load(path: dir + "/agents.yaml", environment: [:]) }
        do { _ = try AgentConfig.load(path: dir + "/agents.yaml", environment: [:]) } catch {
            #expect(error.description.contains("/agents/0/accessMode: a person is Exclusive"))
            #expect(error.description.contains("/agents/0/person/location: must name a space"))
        }
    }

    @Test func theExampleBuildingIsAValidConfiguration() throws {
        let dir = try TestPaths.temporaryDirectory()
        let source = Python.repositoryRoot.appendingPathComponent("agents/building/building.yaml").path
        try FileManager.default.copyItem(atPath: source, toPath: dir + "/building.yaml")
        for file in ["agent.token", "alice.token", "bob.token"] { try "a-token".write(toFile: dir + "/" + file, atomically: true, encoding: .utf8) }
        let config = try AgentConfig.load(path: dir + "/building.yaml", environment: [:])
        #expect(config.agents.map(\.name) == ["purifier-3f", "coffee-3f", "alice", "bob"])
    }
}
