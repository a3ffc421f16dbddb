import Foundation
import Synchronization

/// Wakes event streams when this server writes, and once a second anyway (for writes made by
/// other replicas and for keep-alives). A wake-up only says "look again"; the event log is the truth.
public final class EventNotifier: Sendable {
    private let subscribers = Mutex<[UUID: AsyncStream<Void>.Continuation]>([:])

    public init() {}

    public func subscribe() -> AsyncStream<Void> {
        let id = UUID()
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        continuation.onTermination = { [weak self] _ in
            _ = self?.subscribers.withLock { $0.removeValue(forKey: id) }
        }
        subscribers.withLock { $0[id] = continuation }
        return stream
    }

    public func notify() {
        for continuation in subscribers.withLock({ Array($0.values) }) { continuation.yield() }
    }

    public func finishAll() {
        for continuation in subscribers.withLock({ Array($0.values) }) { continuation.finish() }
    }
}
