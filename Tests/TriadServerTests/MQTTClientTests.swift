import Foundation
import NIOHTTP1
import Testing
import TriadClient
import TriadCore
import TriadMQTT
import TriadTesting

@Suite("MQTT client")
struct MQTTClientTests {
    /// `select()`, which libmosquitto's own network loop uses, cannot watch a descriptor numbered
    /// 1024 or more: a client created while its process had that many files open sent its
    /// CONNECT, then its network thread quit, and it never heard the broker's answer (a busy
    /// server has that many open). The client's own loop polls, so descriptor numbers do not
    /// matter. Run in a server process of its own: Foundation's `Process` watches with
    /// `select()` too, so this test process must not be the one with that many files open.
    @Test func aServerWithOver1024FilesOpenTakesTelemetryOverMQTT() async throws {
        let url = try TestEnvironment.mqttURL()
        let token = "mqtt-files-\(UUID().uuidString)"
        let directory = try TestPaths.temporaryDirectory()
        let server = try await ServerProcess.start(
            ["--data-dir", directory + "/data", "--mqtt", url], environment: ["TRIAD_ADMIN_TOKEN": token], directory: directory,
            openFiles: 1100)
        defer { server.stop() }
        let api = TriadClient(server: server.baseURL, token: token)
        try await eventually("the server is subscribed", within: 20) {
            try await api.send(.GET, "/readyz").json?["checks"]?["mqtt"]?["ok"] == .bool(true)
        }
        let meter = TelemetryTests.name("many-files")
        _ = try await api.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(meter)))
        let probe = try MQTTClient(endpoint: try MQTTEndpoint(url: url))
        try probe.start()
        defer { probe.stop() }
        #expect(await probe.waitUntilReady(timeout: .seconds(10)))
        try await eventually("the sample is stored", within: 20) {
            // Sent again until stored: the server learns of the new resource by following the log.
            try probe.publish(topic: Telemetry.topic(meter, .telemetry), payload: Array(#"{"values":{"kwh":1}}"#.utf8))
            return try await api.call(.GET, "/api/v1/resources/\(meter)/telemetry").json?["items"]?.arrayValue?.isEmpty == false
        }
    }
}
