/// The controller's work queue (controller-runtime's model; docs/mqtt.md), pure: the caller passes
/// the time in seconds, so tests drive it with a fake clock.
///
/// - De-duplicating: a key waits in the queue at most once, however often it is added.
/// - One worker per key: a key being processed is not handed out again; adding it meanwhile
///   marks it dirty, and `done` puts it back.
/// - Delayed requeue (`add(_:after:)`), and per-key exponential back-off for failures
///   (`addRateLimited`), reset by `forget` after a success.
public struct WorkQueue<Key: Hashable & Sendable>: Sendable {
    public let baseDelay: Double
    public let maxDelay: Double

    private var ready: [Key] = []
    private var queued: Set<Key> = []
    private var active: Set<Key> = []
    private var dirty: Set<Key> = []
    /// Earliest time each delayed key becomes ready.
    private var delayed: [Key: Double] = [:]
    private var failures: [Key: Int] = [:]

    public init(baseDelay: Double = 0.5, maxDelay: Double = 60) {
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    public var isEmpty: Bool { ready.isEmpty && delayed.isEmpty }
    public var count: Int { queued.count + delayed.keys.filter { !queued.contains($0) }.count }

    public mutating func add(_ key: Key) {
        delayed[key] = nil
        if active.contains(key) {
            dirty.insert(key)
            return
        }
        if queued.insert(key).inserted { ready.append(key) }
    }

    /// Adds `key` once `delay` seconds have passed (keeping an earlier pending time if any).
    public mutating func add(_ key: Key, after delay: Double, now: Double) {
        guard delay > 0 else { return add(key) }
        if queued.contains(key) { return }
        let at = now + delay
        if let existing = delayed[key], existing <= at { return }
        delayed[key] = at
    }

    /// Adds `key` after its back-off: `baseDelay · 2^failures`, at most `maxDelay`.
    public mutating func addRateLimited(_ key: Key, now: Double) {
        let n = failures[key, default: 0]
        failures[key] = n + 1
        add(key, after: backoff(failures: n), now: now)
    }

    public func backoff(failures n: Int) -> Double {
        min(maxDelay, baseDelay * Double(1 << min(n, 30)))
    }

    public func failureCount(_ key: Key) -> Int { failures[key, default: 0] }

    /// Clears the back-off of `key` (after a successful reconcile).
    public mutating func forget(_ key: Key) { failures[key] = nil }

    /// The next ready key, marked active; nil if none is ready at `now`.
    public mutating func next(now: Double) -> Key? {
        for (key, at) in delayed where at <= now {
            delayed[key] = nil
            add(key)
        }
        guard let i = ready.firstIndex(where: { !active.contains($0) }) else { return nil }
        let key = ready.remove(at: i)
        queued.remove(key)
        active.insert(key)
        return key
    }

    /// Marks the work on `key` finished; if it was added meanwhile, it is queued again.
    public mutating func done(_ key: Key) {
        active.remove(key)
        if dirty.remove(key) != nil { add(key) }
    }

    /// When the earliest delayed key becomes ready (for the runner's sleep).
    public var nextDeadline: Double? { delayed.values.min() }
}
