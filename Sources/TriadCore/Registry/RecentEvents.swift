/// The newest events of the log that a server has seen, oldest first, with contiguous ids. Those
/// who follow the log (the event tail, the controller) read them here instead of querying the
/// database after every write. The backend decides what "seen" covers: SQLite's server is its
/// file's only writer, so its own commits are the whole log; a PostgreSQL replica adds what its
/// read cache has followed, and asks the database for anything newer.
public struct RecentEvents: Sendable {
    public static let capacity = 2048
    private var events: [RegistryEvent] = []
    /// The log's smallest id as far as this buffer knows (nil: none known): given at start, else
    /// the first event added, raised by compaction. Only grows: ids only grow and compaction
    /// removes the oldest.
    public private(set) var oldestRetained: Int64?

    public init(oldestRetained: Int64?) {
        self.oldestRetained = oldestRetained
    }

    /// Appends the next event; one that does not follow on starts the buffer again.
    public mutating func add(_ event: RegistryEvent) {
        if let last = events.last, event.id != last.id + 1 { events.removeAll() }
        events.append(event)
        // Trimmed in chunks, so that each write does not move the whole array.
        if events.count >= 2 * Self.capacity { events.removeFirst(events.count - Self.capacity) }
        if oldestRetained == nil { oldestRetained = event.id }
    }

    public mutating func compacted(oldestRetained oldest: Int64?) {
        guard let oldest else { return }
        oldestRetained = max(oldestRetained ?? oldest, oldest)
    }

    /// What `events(after:limit:)` answers from here: every event after `id` that this buffer
    /// holds (up to `limit`), or nil when some of them are older than it (ask the database).
    public func batch(after id: Int64, limit: Int) -> EventBatch? {
        // Behind the oldest retained event the database reports the gap: leave that to it.
        // `id >= first - 1`, not `id + 1 >= first`: an id of Int64.max must not trap.
        guard let first = events.first?.id, id >= first - 1, id >= (oldestRetained ?? 1) - 1 else { return nil }
        let start = Int(min(id - (first - 1), Int64(events.count)))
        let end = min(events.count, start + max(0, limit))
        return EventBatch(events: Array(events[start..<end]), oldestRetained: oldestRetained)
    }
}
