import Foundation
import Logging
import Synchronization
import TriadAMQP
import TriadCore

/// State messages from RabbitMQ (docs/events.md): the durable queue bound to the topic exchange
/// `triad.state`, consumed with manual acks. A message is acked only once it is settled; a
/// rejected one first goes to `<queue>.dead` with header `x-triad-reason`, so it never blocks the
/// messages behind it. A failure (the broker, or the handler's error) reconnects after a backoff
/// and the unacked message comes again.
final class AMQPStateSource: StateMessageSource {
    let endpoint: AMQPEndpoint
    /// `triad.state`; only tests that run several registries against one broker name another.
    let queue: String
    var deadQueue: String { queue + ".dead" }
    let logger: Logger
    private let problem = Mutex<String?>("not connected yet")

    /// How much of a rejected message's headers its dead letter keeps, and of the reason's text:
    /// together far below RabbitMQ's smallest frame (128 KiB).
    static let copiedHeaderBytes = 32 * 1024
    static let reasonCharacters = 2048

    init(url: String, queue: String, logger: Logger) throws {
        endpoint = try AMQPEndpoint(url: url)
        self.queue = queue
        self.logger = logger
    }

    var health: String? { problem.withLock { $0 } }

    func consume(_ handle: @escaping @Sendable (StateMessage) async throws -> StateMessageOutcome) async throws {
        var backoff = ReconnectBackoff()
        while !Task.isCancelled {
            let consumer = AMQPConsumer(endpoint: endpoint)
            let deadLetters = AMQPPublisher(endpoint: endpoint)
            do {
                try await consumer.connect()
                try await deadLetters.connect()
                try await consumer.declareTopicExchange(StateSync.exchange)
                try await consumer.declareQueue(deadQueue, durable: true)
                try await consumer.declareQueue(queue, durable: true)
                try await consumer.bind(exchange: StateSync.exchange, routingKey: "#")
                try await consumer.startConsuming()
                problem.withLock { $0 = nil }
                backoff.succeeded()
                logger.info("state sync consuming", metadata: ["queue": "\(queue)"])
                while !Task.isCancelled {
                    guard let delivery = try await consumer.next(timeout: .seconds(1), autoAck: false) else { continue }
                    let outcome = try await handle(StateMessage(routingKey: delivery.routingKey, headers: delivery.headers, body: delivery.body))
                    if case .rejected(let reason) = outcome { try await deadLetter(delivery, reason: reason, via: deadLetters) }
                    try await consumer.ack(delivery)
                }
            } catch is CancellationError {
                consumer.close()
                deadLetters.close()
                break
            } catch {
                consumer.close()
                deadLetters.close()
                problem.withLock { $0 = "state sync cannot consume \(queue): \(error)" }
                logger.warning("state sync failed; retrying", metadata: ["error": "\(error)", "retry.in": "\(backoff.delay)"])
                try await backoff.sleep()
            }
        }
    }

    private func deadLetter(_ delivery: AMQPDelivery, reason: String, via deadLetters: AMQPPublisher) async throws {
        // The publisher's headers, minus the secret, within a bound: a dead letter must always fit
        // in a frame, or it would fail to publish, be redelivered and block the queue forever.
        var headers: [String: String] = [:]
        var kept = 0
        for (key, value) in delivery.headers.sorted(by: { $0.key < $1.key }) where key.lowercased() != "authorization" {
            kept += key.utf8.count + value.utf8.count
            if kept > Self.copiedHeaderBytes { break }
            headers[key] = value
        }
        headers["x-triad-reason"] = String(reason.prefix(Self.reasonCharacters))
        headers["x-triad-routing-key"] = delivery.routingKey
        try await deadLetters.publishConfirmed([
            AMQPMessage(
                exchange: "", routingKey: deadQueue, body: delivery.body, contentType: delivery.contentType ?? "application/octet-stream",
                messageID: delivery.messageID ?? UUID().uuidString, persistent: true, headers: headers)
        ])
        logger.info("state message dead-lettered", metadata: ["routingKey": "\(delivery.routingKey)", "reason": "\(reason)"])
    }
}
