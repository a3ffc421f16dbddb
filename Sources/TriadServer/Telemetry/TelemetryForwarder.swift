import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import TriadAMQP
import TriadCore

/// Sends telemetry events to `triad.events` as they come (docs/events.md, docs/mqtt.md): whatever queued up
/// while the last batch was being confirmed goes out as the next batch. Samples are not in the
/// outbox, so while RabbitMQ is down they wait in a queue bounded in bytes and, past it, are
/// dropped and counted (`triad_telemetry_dropped_total{stage="amqp"}`); registry events never are.
public final class TelemetryForwarder: TelemetryPublisher, Service, Sendable {
    let publisher: AMQPPublisher
    let logger: Logger
    /// The most bytes of message bodies the queue holds.
    let byteBudget: Int
    private let queue = Mutex<(messages: [AMQPMessage], bytes: Int)>(([], 0))
    private let wake: AsyncStream<Void>
    private let wakeContinuation: AsyncStream<Void>.Continuation
    private let problem = Mutex<String?>("not connected yet")

    /// One message per resource per publication instead of one per sample.
    let batched: Bool

    public init(url: String, byteBudget: Int = 64 << 20, batched: Bool = false, logger: Logger) throws {
        publisher = AMQPPublisher(endpoint: try AMQPEndpoint(url: url))
        self.byteBudget = byteBudget
        self.batched = batched
        self.logger = logger
        (wake, wakeContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// nil while forwarding; otherwise why not (for `/readyz`).
    public var health: String? { problem.withLock { $0 } }

    public func forward(routingKey: String, body: Data, messageID: String) {
        let message = AMQPMessage(
            exchange: AMQPEventPublisher.exchange, routingKey: routingKey, body: Array(body),
            contentType: "application/cloudevents+json", messageID: messageID, persistent: true)
        let accepted = queue.withLock { q in
            guard q.bytes + message.body.count <= byteBudget else { return false }
            q.messages.append(message)
            q.bytes += message.body.count
            return true
        }
        if accepted {
            wakeContinuation.yield()
        } else {
            Counter(label: "triad_telemetry_dropped_total", dimensions: [("stage", "amqp")]).increment()
        }
    }

    static let batchContentType = "application/cloudevents-batch+json"

    /// The samples of each routing key (so of each resource) as one message, in the order they
    /// came: a JSON array of their events, joined as bytes (each is already a whole event).
    /// `message_id` is the first event's id; consumers de-duplicate by the events' own ids.
    static func perResource(_ messages: [AMQPMessage]) -> [AMQPMessage] {
        var order: [String] = []
        var groups: [String: [AMQPMessage]] = [:]
        for message in messages {
            if groups[message.routingKey] == nil { order.append(message.routingKey) }
            groups[message.routingKey, default: []].append(message)
        }
        return order.map { key in
            let group = groups[key]!
            var body: [UInt8] = [UInt8(ascii: "[")]
            body.reserveCapacity(group.reduce(2) { $0 + $1.body.count + 1 })
            for (i, message) in group.enumerated() {
                if i > 0 { body.append(UInt8(ascii: ",")) }
                body.append(contentsOf: message.body)
            }
            body.append(UInt8(ascii: "]"))
            return AMQPMessage(
                exchange: group[0].exchange, routingKey: key, body: body, contentType: batchContentType,
                messageID: group[0].messageID, persistent: true)
        }
    }

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            var wakeups = self.wake.makeAsyncIterator()
            var connected = false
            var backoff = ReconnectBackoff()
            while !Task.isCancelled {
                do {
                    if !connected {
                        try await self.publisher.connect()
                        try await self.publisher.declareTopicExchange(AMQPEventPublisher.exchange)
                        connected = true
                        backoff.succeeded()
                        self.problem.withLock { $0 = nil }
                    }
                    let batch = self.queue.withLock { q in
                        let n = min(q.messages.count, 1000)
                        let batch = Array(q.messages.prefix(n))
                        q.messages.removeFirst(n)
                        q.bytes -= batch.reduce(0) { $0 + $1.body.count }
                        return batch
                    }
                    if batch.isEmpty {
                        if await wakeups.next() == nil { break }
                        continue
                    }
                    do {
                        try await self.publisher.publishConfirmed(self.batched ? Self.perResource(batch) : batch)
                        Counter(label: "triad_telemetry_forwarded_total").increment(by: batch.count)
                    } catch {
                        // Samples are not replayed (docs/events.md): count the unconfirmed batch as dropped.
                        Counter(label: "triad_telemetry_dropped_total", dimensions: [("stage", "amqp")]).increment(by: batch.count)
                        throw error
                    }
                } catch is CancellationError {
                    break
                } catch {
                    self.publisher.close()
                    connected = false
                    self.problem.withLock { $0 = "cannot forward telemetry to RabbitMQ: \(error)" }
                    self.logger.warning("telemetry forwarding failed; retrying", metadata: ["error": "\(error)", "retry.in": "\(backoff.delay)"])
                    try await backoff.sleep()
                }
            }
            self.publisher.close()
        }
    }
}
