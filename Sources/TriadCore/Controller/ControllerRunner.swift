import Logging
import Synchronization

/// Runs a controller's reconciles off its `WorkQueue`, as controller-runtime does:
///
/// - up to `workers` reconciles at once, never two on one key (the queue hands a key to one
///   worker; adding it meanwhile runs it again after);
/// - idle, it sleeps until the queue's next deadline or until a key is added, on the clock it
///   was given (tests pass a manual one), never on a fixed poll;
/// - a reconcile that throws is retried with the queue's back-off; one that returns a delay is
///   looked at again after it, or after `longestDelay` if that is sooner (a delay computed from
///   user data, a heartbeat dated in year 9999, must not overflow the clock's arithmetic);
/// - every reconcile gets a logger whose lines carry `reconcileID` and the key.
public final class ControllerRunner<Key: Hashable & Sendable & CustomStringConvertible, C: Clock>: Sendable
where C.Duration == Duration {
    /// Converges `key`; returns when to look at it again, if that depends on time.
    public typealias Reconcile = @Sendable (_ key: Key, _ logger: Logger) async throws -> Duration?

    /// The longest a key waits for a delayed look: a day.
    public static var longestDelay: Duration { .seconds(86_400) }

    private struct State {
        var queue: WorkQueue<Key>
        var busy = 0
        var reconciles = 0
    }

    let clock: C
    let workers: Int
    let logger: Logger
    private let reconcile: Reconcile
    private let origin: C.Instant
    private let state: Mutex<State>
    private let wakeup = Wakeup()

    public init(clock: C, workers: Int = 4, queue: WorkQueue<Key> = WorkQueue(), logger: Logger, reconcile: @escaping Reconcile) {
        self.clock = clock
        self.workers = max(1, workers)
        self.logger = logger
        self.reconcile = reconcile
        self.origin = clock.now
        self.state = Mutex(State(queue: queue))
    }

    /// Looks at `key` as soon as a worker is free. Callable from any thread.
    public func add(_ key: Key) {
        state.withLock { $0.queue.add(key) }
        wakeup.signal()
    }

    /// Looks at `key` once `delay` has passed (an earlier pending time is kept).
    public func add(_ key: Key, after delay: Duration) {
        let now = self.now()
        state.withLock { $0.queue.add(key, after: Self.seconds(min(delay, Self.longestDelay)), now: now) }
        wakeup.signal()
    }

    /// Reconciles until cancelled; the reconciles running then are cancelled with it.
    public func run() async {
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                while let (key, id) = takeReady() {
                    group.addTask { await self.process(key, id: id) }
                }
                await waitForWork()
            }
            group.cancelAll()
        }
    }

    /// The next ready key and its reconcile id, if a worker is free.
    private func takeReady() -> (Key, Int)? {
        let now = self.now()
        return state.withLock { s in
            guard s.busy < workers, let key = s.queue.next(now: now) else { return nil }
            s.busy += 1
            s.reconciles += 1
            return (key, s.reconciles)
        }
    }

    private func process(_ key: Key, id: Int) async {
        var logger = self.logger
        logger[metadataKey: "reconcileID"] = "\(id)"
        logger[metadataKey: "key"] = "\(key)"
        let outcome: Result<Duration?, any Error>
        do { outcome = .success(try await reconcile(key, logger)) } catch { outcome = .failure(error) }
        let now = self.now()
        state.withLock { s in
            switch outcome {
            case .success(let requeue):
                s.queue.forget(key)
                s.queue.done(key)
                if let requeue { s.queue.add(key, after: Self.seconds(min(requeue, Self.longestDelay)), now: now) }
            case .failure:
                s.queue.done(key)
                s.queue.addRateLimited(key, now: now)
            }
            s.busy -= 1
        }
        if case .failure(let error) = outcome, !(error is CancellationError) {
            logger.warning("reconcile failed; retrying with back-off", metadata: ["error": "\(error)"])
        }
        wakeup.signal()  // a worker is free, and the key may be ready again
    }

    /// Until something is added or a worker finishes, or the queue's next deadline passes.
    private func waitForWork() async {
        let deadline = state.withLock { $0.queue.nextDeadline }.map { origin.advanced(by: .nanoseconds(Int64($0 * 1e9))) }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.wakeup.wait() }
            if let deadline {
                group.addTask { try? await self.clock.sleep(until: deadline, tolerance: nil) }
            }
            await group.next()
            group.cancelAll()
        }
    }

    /// Seconds since this runner was made, the queue's time.
    private func now() -> Double { Self.seconds(origin.duration(to: clock.now)) }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}

/// A wake-up for one waiter: a signal given while nobody waits is kept for the next wait.
final class Wakeup: Sendable {
    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
    }
    private let state = Mutex(State())

    func signal() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard let w = s.waiter else {
                s.pending = true
                return nil
            }
            s.waiter = nil
            return w
        }
        waiter?.resume()
    }

    /// Returns at the next signal (or at once if one is pending), or when the task is cancelled.
    func wait() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.pending {
                        s.pending = false
                        return true
                    }
                    if Task.isCancelled { return true }
                    s.waiter = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            state.withLock { s in
                defer { s.waiter = nil }
                return s.waiter
            }?.resume()
        }
    }
}
