import TriadCore

/// Publishes registry events to RabbitMQ as docs/events.md says: durable topic exchange
/// `triad.events`, routing key `<kind>.<name>.<event>`, CloudEvents JSON, persistent,
/// `message_id` = event id, publisher confirms.
public final class AMQPEventPublisher: EventPublisher {
    public static let exchange = "triad.events"
    let endpoint: AMQPEndpoint
    let publisher: AMQPPublisher

    public init(url: String) throws {
        endpoint = try AMQPEndpoint(url: url)
        publisher = AMQPPublisher(endpoint: endpoint)
    }

    public var destination: String { "amqp://\(endpoint.host):\(endpoint.port)" }

    public func connect() async throws {
        try await publisher.connect()
        try await publisher.declareTopicExchange(Self.exchange)
    }

    public func publish(_ events: [RegistryEvent]) async throws {
        try await publisher.publishConfirmed(
            events.map { event in
                AMQPMessage(
                    exchange: Self.exchange, routingKey: CloudEventRenderer.routingKey(event),
                    body: Array(CloudEventRenderer.render(HeaderRedaction.redacted(event))), contentType: "application/cloudevents+json",
                    messageID: String(event.id), persistent: true)
            })
    }

    public func disconnect() async {
        publisher.close()
    }
}
