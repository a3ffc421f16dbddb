import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import TriadCore

/// Delivers the registry's event log to an `EventPublisher`, in log order, in batches, and moves
/// its cursor only after the publisher confirmed a batch (replicas on one PostgreSQL take turns
/// through the cursor row's lock, so one publishes at a time): an event is never skipped, and is sent
/// twice only if the server dies between a confirm and the cursor write. While the destination
/// is down the API keeps accepting writes; the events wait in the log (compaction stops at the
/// cursor) and go out when it returns.
public final class OutboxRelay: Service, Sendable {
    public static let cursorName = "amqp"
    let cursors: any RelayCursors
    let publisher: any EventPublisher
    let notifier: EventNotifier
    let logger: Logger
    let batchSize: Int
    /// nil while delivering; otherwise why not (for `/readyz`).
    private let problem = Mutex<String?>("not connected yet")

    public init(cursors: any RelayCursors, publisher: any EventPublisher, notifier: EventNotifier, logger: Logger, batchSize: Int = 200) {
        self.cursors = cursors
        self.publisher = publisher
        self.notifier = notifier
        self.logger = logger
        self.batchSize = batchSize
    }

    public var health: String? { problem.withLock { $0 } }

    public func run() async throws {
        let delivered = Counter(label: "triad_relay_events_total")
        let failures = Counter(label: "triad_relay_failures_total")
        try await cancelWhenGracefulShutdown {
            var iterator = self.notifier.subscribe().makeAsyncIterator()
            var backoff = ReconnectBackoff()
            var connected = false
            relaying: while !Task.isCancelled {
                do {
                    if !connected {
                        try await self.publisher.connect()
                        connected = true
                        self.problem.withLock { $0 = nil }
                        backoff.succeeded()
                        self.logger.info("event relay connected", metadata: ["destination": "\(self.publisher.destination)"])
                    }
                    let publisher = self.publisher
                    switch try await self.cursors.relayRound(Self.cursorName, limit: self.batchSize, deliver: { try await publisher.publish($0) }) {
                    case .delivered(let count, _):
                        delivered.increment(by: count)
                    case .idle, .busy:
                        // Woken by this server's writes, and every second for other replicas'
                        // (or to take over when the replica relaying now stops). No more
                        // wake-ups: the server is shutting down. (Looping on would spin without
                        // ever suspending once the log is read from memory, and starve the
                        // very tasks that shut down.)
                        guard await iterator.next() != nil else { break relaying }
                    }
                } catch is CancellationError {
                    break
                } catch {
                    failures.increment()
                    if connected { await self.publisher.disconnect() }
                    connected = false
                    let message = "cannot deliver events to \(self.publisher.destination): \(error)"
                    self.problem.withLock { $0 = message }
                    self.logger.warning("event relay failed; retrying", metadata: ["error": "\(error)", "retry.in": "\(backoff.delay)"])
                    try await backoff.sleep()
                }
            }
            if connected { await self.publisher.disconnect() }
        }
        // The server ends the notifier as its shutdown begins, possibly before this service is
        // told: returning earlier would count as failing.
        try? await gracefulShutdown()
    }
}
