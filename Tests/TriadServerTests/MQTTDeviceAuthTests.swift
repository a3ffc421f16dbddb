import Foundation
import NIOHTTP1
import Testing
import TriadClient
import TriadCore
import TriadMQTT
import TriadServer
import TriadTesting

/// `--mqtt-auth dynsec` against the real Mosquitto with its dynamic-security plugin (no
/// anonymous access): every device token has an MQTT client of its own that may publish only
/// under its resource, probes get theirs, and revoking a token drops its client at once.
@Suite("MQTT device authentication")
struct MQTTDeviceAuthTests {
    static func dynsecURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["TRIAD_TEST_MQTT_DYNSEC_URL"], !url.isEmpty else {
            throw SetupError("TRIAD_TEST_MQTT_DYNSEC_URL is not set: run the suite with scripts/test.sh, which starts Mosquitto with dynamic security")
        }
        return url
    }

    /// The broker's address with other credentials.
    static func url(_ admin: String, username: String, password: String) throws -> String {
        let broker = try MQTTEndpoint(url: admin)
        return "mqtt://\(username):\(password)@\(broker.host):\(broker.port)"
    }

    static func condition(_ server: TestServer, _ name: String, _ type: String) async throws -> JSONValue? {
        try await ProbeControllerTests.status(server, name)?["conditions"]?.arrayValue?.first { $0["type"] == .string(type) }
    }

    @Test func eachDeviceMayPublishOnlyForItsOwnResourceAndLosesItsClientWhenRevoked() async throws {
        let admin = try Self.dynsecURL()
        try await withServer(.sqlite, mqtt: admin, configure: { $0.mqttAuth = .dynsec }) { server in
            try await eventually("the server is subscribed and manages the broker", within: 20) {
                // Not ready is a 503 with the same checks: keep waiting, do not throw.
                let checks = try await server.admin.send(.GET, "/readyz").json?["checks"]
                return checks?["mqtt"]?["ok"] == .bool(true) && checks?["mqttDynamicSecurity"]?["ok"] == .bool(true)
            }
            let mine = TelemetryTests.name("meter")
            let other = TelemetryTests.name("victim")
            for name in [mine, other] { _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(name))) }

            // The device token's answer carries its MQTT client, derived from the token.
            let tokenName = "dev-\(UUID().uuidString.prefix(8).lowercased())"
            let reply = try await server.admin.call(
                .POST, "/api/v1/tokens",
                body: JSONCoding.encode(
                    JSONValue.object(
                        ["name": .string(tokenName), "role": .string("device"), "resource": .string(mine)])))
            let secret = try #require(reply.json?["token"]?.stringValue)
            #expect(reply.json?["mqtt"]?["username"] == .string(tokenName))
            let password = try #require(reply.json?["mqtt"]?["password"]?.stringValue)
            #expect(password == TokenAuthority.mqttPassword(forSecret: secret))
            #expect(password != secret, "the token itself never goes to the broker")
            let deviceURL = try Self.url(admin, username: tokenName, password: password)

            // Nobody is anonymous on this broker, and a wrong password is refused.
            let stranger = try MQTTClient(endpoint: try MQTTEndpoint(url: try Self.url(admin, username: tokenName, password: "guess")))
            try stranger.start()
            defer { stranger.stop() }

            let device = try MQTTClient(endpoint: try MQTTEndpoint(url: deviceURL))
            try device.start()
            defer { device.stop() }
            #expect(await device.waitUntilReady(timeout: .seconds(15)), "the device's client: \(device.lastError ?? "no error")")
            // Speaking for the other resource: its telemetry, and its probe's retained `offline`.
            try device.publish(topic: Telemetry.topic(other, .telemetry), payload: Array(#"{"values":{"kwh":666}}"#.utf8))
            try device.publish(topic: Telemetry.topic(other, .probe), payload: Array("offline".utf8), retain: true)
            // Then for itself, on the same connection: once this sample is stored, the ones
            // before it have been judged.
            try device.publish(topic: Telemetry.topic(mine, .telemetry), payload: Array(#"{"values":{"kwh":1}}"#.utf8))
            try await eventually("its own sample is stored", within: 20) { try await TelemetryTests.history(server, mine).count == 1 }
            #expect(try await TelemetryTests.history(server, other).isEmpty, "the broker refused the sample for the other resource")
            #expect(try await Self.condition(server, other, "ProbeConnected") == nil, "nor could it say the other's probe is offline")
            #expect(
                !stranger.isConnected && stranger.lastError?.contains("not authorised") == true,
                "a wrong password is refused: \(stranger.lastError ?? "none")")

            // Revoked: its connection is dropped, and it cannot come back.
            _ = try await server.admin.call(.DELETE, "/api/v1/tokens/\(tokenName)")
            try await eventually("the revoked client is disconnected", within: 10) { !device.isConnected }
            let again = try MQTTClient(endpoint: try MQTTEndpoint(url: deviceURL))
            try again.start()
            defer { again.stop() }
            try await eventually("the revoked client is refused", within: 10) { again.lastError?.contains("not authorised") == true }
            #expect(!again.isConnected, "\(again.lastError ?? "")")
        }
    }

    @Test func probesGetTheirOwnClientsWhichCannotSpeakForOthers() async throws {
        let admin = try Self.dynsecURL()
        try await withServer(
            .sqlite, mqtt: admin,
            configure: { config in
                config.mqttAuth = .dynsec
                config.probePolicy.silence = 30
            }
        ) { server in
            let honest = TelemetryTests.name("honest")
            let victim = TelemetryTests.name("victim")
            let liar = TelemetryTests.name("liar")
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(victim)))
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: try ProbeControllerTests.device(honest, args: ["--rate", "5"]))
            // The liar's probe is told to publish as the victim: its own credentials do not allow it.
            _ = try await server.admin.call(
                .POST, "/api/v1/resources", body: try ProbeControllerTests.device(liar, args: ["--rate", "5", "--resource", victim]))

            // The server's own credentials may not publish telemetry on this broker: a probe that
            // gets data through has its own client.
            // Both probes start together at 5 samples a second: by the honest one's tenth sample, the
            // liar has been trying for as long.
            try await eventually("the honest probe's samples arrive", within: 40) {
                try await TelemetryTests.history(server, honest).count >= 10
            }
            #expect(await server.server.controller.runningProbes().contains(liar), "the liar's probe ran all along")
            #expect(try await TelemetryTests.history(server, victim).isEmpty, "nothing was stored for the victim")
            #expect(try await Self.condition(server, victim, "ProbeConnected") == nil, "the victim's probe state is untouched")
        }
    }

    @Test func aBrokerThatCannotRegisterTheDeviceMeansNoToken() async throws {
        // Nothing listens there: the device's client cannot be made, so neither is the token.
        try await withServer(.sqlite, mqtt: "mqtt://triad-admin:secret@127.0.0.1:1", configure: { $0.mqttAuth = .dynsec }) { server in
            let resource = TelemetryTests.name("meter")
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(resource)))
            let reply = try await server.admin.send(
                .POST, "/api/v1/tokens",
                body: JSONCoding.encode(
                    JSONValue.object(
                        ["name": .string("orphan"), "role": .string("device"), "resource": .string(resource)])))
            #expect(reply.status == 503)
            #expect(reply.json?["detail"]?.stringValue?.contains("no token was made") == true)
            let names = try await server.admin.call(.GET, "/api/v1/tokens").json?["items"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []
            #expect(!names.contains("orphan"))
            // Other roles need no broker client.
            _ = try await server.token(.operator)
        }
    }

    @Test func dynsecNeedsTheBrokersAdminCredentials() throws {
        var config = ServerConfiguration()
        config.mqttAuth = .dynsec
        #expect(throws: ServerConfiguration.Invalid.self) { try config.checkMQTTAuth() }
        config.mqtt = "mqtt://127.0.0.1:1883"
        #expect(throws: ServerConfiguration.Invalid.self) { try config.checkMQTTAuth() }
        config.mqtt = "mqtt://admin:pw@127.0.0.1:1883"
        try config.checkMQTTAuth()
    }
}
