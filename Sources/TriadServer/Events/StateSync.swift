import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import TriadAMQP
import TriadCore

/// State sync into the registry (docs/events.md): agents publish partial statuses to the topic
/// exchange `triad.state` with routing key `<name>` and their token in the `authorization`
/// header. Each message is applied as a status merge and acked only after the write; one
/// that is malformed, too large, unauthorised, names a missing resource or carries an invalid status goes
/// to the queue `triad.state.dead` with header `x-triad-reason` and is then acked, so it
/// never blocks the messages behind it. A failing database is not the message's fault: it is
/// left unacked and redelivered after reconnecting.
public final class StateSync: Service, Sendable {
    public static let exchange = "triad.state"

    let endpoint: AMQPEndpoint
    /// `triad.state` (docs/events.md); dead letters go to `<queue>.dead`. Only tests that run several
    /// independent registries against one broker name another.
    let queue: String
    /// The largest body applied (the REST body limit); a larger one is dead-lettered `too-large`.
    let maxBodyBytes: Int
    var deadQueue: String { queue + ".dead" }
    let registry: Registry
    let authority: TokenAuthority
    let written: @Sendable () -> Void
    let logger: Logger
    private let problem = Mutex<String?>("not connected yet")

    public init(
        url: String, queue: String = "triad.state", maxBodyBytes: Int = 1 << 20, registry: Registry, authority: TokenAuthority,
        written: @escaping @Sendable () -> Void, logger: Logger
    ) throws {
        endpoint = try AMQPEndpoint(url: url)
        self.queue = queue
        self.maxBodyBytes = maxBodyBytes
        self.registry = registry
        self.authority = authority
        self.written = written
        self.logger = logger
    }

    /// nil while consuming; otherwise why not (for `/readyz`).
    public var health: String? { problem.withLock { $0 } }

    /// How much of a rejected message's headers its dead letter keeps, and of the reason's text:
    /// together far below RabbitMQ's smallest frame (128 KiB).
    static let copiedHeaderBytes = 32 * 1024
    static let reasonCharacters = 2048

    /// Why a message was dead-lettered: the `x-triad-reason` header.
    struct Rejection: Error {
        var reason: String
    }

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            var backoff = ReconnectBackoff()
            while !Task.isCancelled {
                let consumer = AMQPConsumer(endpoint: self.endpoint)
                let deadLetters = AMQPPublisher(endpoint: self.endpoint)
                do {
                    try await consumer.connect()
                    try await deadLetters.connect()
                    try await consumer.declareTopicExchange(Self.exchange)
                    try await consumer.declareQueue(self.deadQueue, durable: true)
                    try await consumer.declareQueue(self.queue, durable: true)
                    try await consumer.bind(exchange: Self.exchange, routingKey: "#")
                    try await consumer.startConsuming()
                    self.problem.withLock { $0 = nil }
                    backoff.succeeded()
                    self.logger.info("state sync consuming", metadata: ["queue": "\(self.queue)"])
                    while !Task.isCancelled {
                        guard let delivery = try await consumer.next(timeout: .seconds(1), autoAck: false) else { continue }
                        try await self.handle(delivery, deadLetters: deadLetters)
                        try await consumer.ack(delivery)
                    }
                } catch is CancellationError {
                    consumer.close()
                    deadLetters.close()
                    break
                } catch {
                    consumer.close()
                    deadLetters.close()
                    self.problem.withLock { $0 = "state sync cannot consume \(self.queue): \(error)" }
                    self.logger.warning("state sync failed; retrying", metadata: ["error": "\(error)", "retry.in": "\(backoff.delay)"])
                    try await backoff.sleep()
                }
            }
        }
    }

    /// Applies one message, or dead-letters it; throws only for what a retry may cure.
    func handle(_ delivery: AMQPDelivery, deadLetters: AMQPPublisher) async throws {
        do {
            try await apply(delivery)
            Counter(label: "triad_state_messages_total", dimensions: [("result", "applied")]).increment()
        } catch let rejection as Rejection {
            // The publisher's headers, minus the secret, within a bound: a dead letter must always fit
            // in a frame, or it would fail to publish, be redelivered and block the queue forever.
            var headers: [String: String] = [:]
            var kept = 0
            for (key, value) in delivery.headers.sorted(by: { $0.key < $1.key }) where key.lowercased() != "authorization" {
                kept += key.utf8.count + value.utf8.count
                if kept > Self.copiedHeaderBytes { break }
                headers[key] = value
            }
            headers["x-triad-reason"] = String(rejection.reason.prefix(Self.reasonCharacters))
            headers["x-triad-routing-key"] = delivery.routingKey
            try await deadLetters.publishConfirmed([
                AMQPMessage(
                    exchange: "", routingKey: self.deadQueue, body: delivery.body, contentType: delivery.contentType ?? "application/octet-stream",
                    messageID: delivery.messageID ?? UUID().uuidString, persistent: true, headers: headers)
            ])
            Counter(label: "triad_state_messages_total", dimensions: [("result", "dead")]).increment()
            logger.info("state message dead-lettered", metadata: ["routingKey": "\(delivery.routingKey)", "reason": "\(rejection.reason)"])
        }
    }

    private func apply(_ delivery: AMQPDelivery) async throws {
        let name = delivery.routingKey
        guard ResourceValidator.isValidName(name) else {
            throw Rejection(reason: "malformed: the routing key must be a resource name")
        }
        let header = delivery.headers.first { $0.key.lowercased() == "authorization" }?.value ?? ""
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            throw Rejection(reason: "unauthorised: the authorization header must be 'Bearer <token>'")
        }
        guard let principal = try await authority.authenticate(String(parts[1])) else {
            throw Rejection(reason: "unauthorised: unknown or revoked token")
        }
        guard principal.may(.writeStatus(resource: name)) else {
            throw Rejection(reason: "unauthorised: role \(principal.role.rawValue) may not write the status of \(name)")
        }
        guard delivery.body.count <= maxBodyBytes else {
            throw Rejection(reason: "too-large: the body has \(delivery.body.count) bytes; at most \(maxBodyBytes) are applied")
        }
        let status: JSONValue
        do { status = try JSONCoding.parse(Data(delivery.body)) } catch {
            throw Rejection(reason: "malformed: \(error.message)")
        }
        guard case .object = status else { throw Rejection(reason: "malformed: the body must be a JSON object (a partial ResourceStatus)") }
        do {
            _ = try await registry.writeStatus(name, .merge(status), precondition: nil)
            written()
        } catch RegistryError.notFound {
            throw Rejection(reason: "not-found: resource \(name) does not exist")
        } catch RegistryError.invalid(let violations) {
            throw Rejection(reason: "invalid: " + violations.map(\.description).joined(separator: "; "))
        }
    }
}
