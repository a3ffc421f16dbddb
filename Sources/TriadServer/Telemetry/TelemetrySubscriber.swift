import Logging
import ServiceLifecycle
import TriadCore
import TriadMQTT

/// Subscribes to the telemetry and probe topics at QoS 1 (shared among replicas when asked) and
/// hands every message to the ingest. libmosquitto's thread reconnects with back-off and
/// re-subscribes; this loop only reads.
public final class TelemetrySubscriber: Service, Sendable {
    let client: MQTTClient
    let ingest: TelemetryIngest
    let logger: Logger

    public init(url: String, shared: Bool, ingest: TelemetryIngest, logger: Logger) throws {
        let endpoint = try MQTTEndpoint(url: url)
        // A stable client id is not needed: sessions are clean, and replicas must not collide.
        // Samples wait in a byte budget; a payload too large to be a sample is never copied.
        client = try MQTTClient(
            endpoint: endpoint, subscriptions: Telemetry.subscriptions(shared: shared),
            byteBudget: 64 << 20, maxPayloadBytes: Telemetry.maxPayloadBytes)
        self.ingest = ingest
        self.logger = logger
    }

    /// nil when connected and subscribed; otherwise why not (for `/readyz`).
    public var health: String? {
        client.isReady ? nil : "MQTT broker \(client.endpoint): \(client.lastError ?? "connecting")"
    }

    public func run() async throws {
        try client.start()
        logger.info("telemetry subscriber started", metadata: ["broker": "\(client.endpoint)"])
        await withGracefulShutdownHandler {
            for await message in client.messages {
                if message.oversized {
                    ingest.reject(.tooLarge, source: "mqtt")
                    continue
                }
                await ingest.receive(topic: message.topic, payload: message.payload)
            }
        } onGracefulShutdown: { [client] in
            client.stop()
        }
    }
}
