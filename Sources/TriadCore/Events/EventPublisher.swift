import Foundation

/// Where the outbox relay delivers registry events (docs/events.md): the AMQP adapter implements it.
public protocol EventPublisher: Sendable {
    /// A readable name of the destination for logs and `/readyz`, without credentials.
    var destination: String { get }
    func connect() async throws
    /// Returns only when the destination has confirmed every event (at-least-once).
    func publish(_ events: [RegistryEvent]) async throws
    func disconnect() async
}

/// Where accepted telemetry samples go as events (docs/events.md): the AMQP adapter implements
/// it. Samples are not in the outbox, so `forward` must not block: an adapter that cannot keep
/// up drops and counts.
public protocol TelemetryPublisher: Sendable {
    /// Hands one sample's CloudEvent over for sending.
    func forward(routingKey: String, body: Data, messageID: String)
}
