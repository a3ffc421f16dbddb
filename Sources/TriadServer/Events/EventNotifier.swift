import Foundation
import Synchronization

/// Wakes event streams when this server writes, and once a second anyway (for writes made by
/// other replicas and for keep-alives). A wake-up only says "look again"; the event log is the truth.
public final class EventNotifier: Sendable {
    private let subscribers = Mutex<[UUID: AsyncStream<Void>.Continuation]?>([:])

    public init() {}

    public func subscribe() -> AsyncStream<Void> {
        let id = UUID()
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        continuation.onTermination = { [weak self] _ in
            _ = self?.subscribers.withLock { $0?.removeValue(forKey: id) }
        }
        let open = subscribers.withLock { table -> Bool in
            guard table != nil else { return false }
            table?[id] = continuation
            return true
        }
        // After `finishAll` (shutdown), a new stream ends at once instead of waiting forever.
        if !open { continuation.finish() }
        return stream
    }

    public func notify() {
        for continuation in subscribers.withLock({ Array(($0 ?? [:]).values) }) { continuation.yield() }
    }

    /// Ends every stream, now and later: the server is shutting down.
    public func finishAll() {
        let all = subscribers.withLock { table -> [AsyncStream<Void>.Continuation] in
            defer { table = nil }
            return Array((table ?? [:]).values)
        }
        for continuation in all { continuation.finish() }
    }
}
