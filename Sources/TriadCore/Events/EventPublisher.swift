/// Where the outbox relay delivers registry events (docs/events.md): the AMQP adapter implements it.
public protocol EventPublisher: Sendable {
    /// A readable name of the destination for logs and `/readyz`, without credentials.
    var destination: String { get }
    func connect() async throws
    /// Returns only when the destination has confirmed every event (at-least-once).
    func publish(_ events: [RegistryEvent]) async throws
    func disconnect() async
}
