import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import TriadCore

/// The newest registry events, read from the log by one reader for every open event stream:
/// each wake-up (a write here, another replica's write, the 1 s tick) is one database read,
/// however many streams are open. Streams that are behind what it holds (a resume from long
/// ago) page through the database themselves until they catch up.
public final class EventTail: Service, Sendable {
    private struct Window {
        /// Events with ids in `(coveredAfter, newest]`, every one of them, in id order.
        var events: [RegistryEvent] = []
        var coveredAfter: Int64?
        var newest: Int64 = 0
    }

    let log: any EventLog
    let wakeups: EventNotifier
    /// Told after each read: the streams look again (and send keep-alives, and check their tokens).
    let streams = EventNotifier()
    let capacity: Int
    let logger: Logger
    private let window = Mutex(Window())
    private let tailReadCount = Atomic<Int>(0)
    private let streamReadCount = Atomic<Int>(0)
    static let pageSize = 1000

    /// Database reads of the event log so far: by this tail, and by streams that were behind it.
    public var logReads: (tail: Int, streams: Int) { (tailReadCount.load(ordering: .relaxed), streamReadCount.load(ordering: .relaxed)) }

    /// A stream read the log itself (it was behind the tail).
    func countStreamRead() {
        streamReadCount.add(1, ordering: .relaxed)
        Self.streamReads.increment()
    }

    static let streamReads = Counter(label: "triad_event_log_reads_total", dimensions: [("reader", "stream")])
    static let tailReads = Counter(label: "triad_event_log_reads_total", dimensions: [("reader", "tail")])

    init(log: any EventLog, wakeups: EventNotifier, capacity: Int = 10_000, logger: Logger) {
        self.log = log
        self.wakeups = wakeups
        self.capacity = capacity
        self.logger = logger
    }

    /// Up to `limit` events after `cursor`, from memory; nil when memory does not hold all of
    /// them (the caller reads the database).
    func events(after cursor: Int64, limit: Int) -> [RegistryEvent]? {
        window.withLock { w in
            guard let covered = w.coveredAfter, cursor >= covered else { return nil }
            // In id order: a binary search finds the first one after `cursor`.
            var low = 0
            var high = w.events.count
            while low < high {
                let mid = (low + high) / 2
                if w.events[mid].id <= cursor { low = mid + 1 } else { high = mid }
            }
            return Array(w.events[low..<min(w.events.count, low + max(0, limit))])
        }
    }

    public func run() async throws {
        let start = try await log.latestRevision()
        window.withLock { $0 = Window(events: [], coveredAfter: start, newest: start) }
        defer { streams.finishAll() }
        await cancelWhenGracefulShutdown {
            for await _ in self.wakeups.subscribe() {
                do {
                    while true {
                        let after = self.window.withLock { $0.newest }
                        let page = try await self.log.events(after: after, limit: Self.pageSize)
                        self.tailReadCount.add(1, ordering: .relaxed)
                        Self.tailReads.increment()
                        guard !page.events.isEmpty else { break }
                        self.append(page.events)
                        if page.events.count < Self.pageSize { break }
                    }
                } catch {
                    // The streams keep what they have; the next wake-up tries again.
                    self.logger.warning("cannot read the event log", metadata: ["error.type": "\(type(of: error))"])
                }
                self.streams.notify()
            }
        }
        // The server ends the notifier (and so this loop) as its shutdown begins, possibly before
        // this service is told: returning earlier would count as failing. The streams end now,
        // though: the HTTP server, told first, waits for them.
        streams.finishAll()
        try? await gracefulShutdown()
    }

    private func append(_ events: [RegistryEvent]) {
        window.withLock { w in
            w.events.append(contentsOf: events)
            w.newest = events.last?.id ?? w.newest
            // Trimmed back to `capacity` once a quarter over it: trimming at every append moved
            // the whole window each time.
            if w.events.count > capacity + capacity / 4 {
                let drop = w.events.count - capacity
                w.coveredAfter = w.events[drop - 1].id
                w.events.removeFirst(drop)
            }
        }
    }
}
