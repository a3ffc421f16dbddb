import Foundation
import Synchronization

/// Wakes event streams when this server writes, and once a second anyway (for writes made by
/// other replicas and for keep-alives). A wake-up only says "look again"; the event log is the truth.
public final class EventNotifier: Sendable {
    /// What a write changed.
    public enum Written: Sendable {
        /// Resources, tokens or projects (or unknown: another replica, the fallback tick).
        case anything
        /// Only the ledger: an invocation's record and its event, which change no resource.
        case ledgerOnly
    }

    private struct Subscriber {
        var continuation: AsyncStream<Void>.Continuation
        var wantsLedger: Bool
    }
    private let subscribers = Mutex<[UUID: Subscriber]?>([:])

    public init() {}

    /// `ledger: false`: not woken by writes that only recorded invocations (the controller, which
    /// has nothing to do for them, reads their events with the next write's; a wake-up per call
    /// cost the call a thread switch).
    public func subscribe(ledger: Bool = true) -> AsyncStream<Void> {
        let id = UUID()
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        continuation.onTermination = { [weak self] _ in
            _ = self?.subscribers.withLock { $0?.removeValue(forKey: id) }
        }
        let open = subscribers.withLock { table -> Bool in
            guard table != nil else { return false }
            table?[id] = Subscriber(continuation: continuation, wantsLedger: ledger)
            return true
        }
        // After `finishAll` (shutdown), a new stream ends at once instead of waiting forever.
        if !open { continuation.finish() }
        return stream
    }

    public func notify(_ written: Written = .anything) {
        let woken = subscribers.withLock { table in
            (table ?? [:]).values.compactMap { written == .anything || $0.wantsLedger ? $0.continuation : nil }
        }
        for continuation in woken { continuation.yield() }
    }

    /// Ends every stream, now and later: the server is shutting down.
    public func finishAll() {
        let all = subscribers.withLock { table -> [AsyncStream<Void>.Continuation] in
            defer { table = nil }
            return (table ?? [:]).values.map(\.continuation)
        }
        for continuation in all { continuation.finish() }
    }
}
