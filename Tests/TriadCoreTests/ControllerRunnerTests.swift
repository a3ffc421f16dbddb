import Logging
import Synchronization
import Testing
import TriadCore
import TriadTesting

/// The controller runner on a manual clock: no processes, no sleeps of real time to wait out.
@Suite("Controller runner")
struct ControllerRunnerTests {
    /// What the reconciles saw: calls per key, how many ran at once, reconcile ids.
    final class Journal: Sendable {
        struct State {
            var calls: [String: Int] = [:]
            var running: [String: Int] = [:]
            var mostAtOnceOnOneKey = 0
            var mostAtOnce = 0
            var ids: [String] = []
        }
        let state = Mutex(State())
        func calls(_ key: String) -> Int { state.withLock { $0.calls[key, default: 0] } }
        var total: Int { state.withLock { $0.calls.values.reduce(0, +) } }

        func begin(_ key: String, _ logger: Logger) {
            state.withLock { s in
                s.calls[key, default: 0] += 1
                s.running[key, default: 0] += 1
                s.mostAtOnceOnOneKey = max(s.mostAtOnceOnOneKey, s.running[key]!)
                s.mostAtOnce = max(s.mostAtOnce, s.running.values.reduce(0, +))
                if case .string(let id)? = logger[metadataKey: "reconcileID"] { s.ids.append(id) }
            }
        }
        func end(_ key: String) { state.withLock { $0.running[key, default: 0] -= 1 } }

        /// Runs one reconcile's `work`, noted from its start to its end.
        func record<T>(_ key: String, _ logger: Logger, _ work: () async throws -> T) async rethrows -> T {
            begin(key, logger)
            defer { end(key) }
            return try await work()
        }
    }

    /// Holds reconciles until the test opens it.
    final class Gate: Sendable {
        private let open = Mutex<(Bool, [CheckedContinuation<Void, Never>])>((false, []))
        func pass() async {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let go = open.withLock { s -> Bool in
                    if s.0 { return true }
                    s.1.append(c)
                    return false
                }
                if go { c.resume() }
            }
        }
        func openUp() {
            for c in open.withLock({ s -> [CheckedContinuation<Void, Never>] in
                s.0 = true
                defer { s.1 = [] }
                return s.1
            }) { c.resume() }
        }
    }

    static func withRunner(
        clock: ManualClock, workers: Int = 4,
        _ reconcile: @escaping ControllerRunner<String, ManualClock>.Reconcile,
        _ body: (ControllerRunner<String, ManualClock>) async throws -> Void
    ) async throws {
        let runner = ControllerRunner(
            clock: clock, workers: workers, queue: WorkQueue(baseDelay: 1, maxDelay: 8),
            logger: Logger(label: "test"), reconcile: reconcile)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await runner.run() }
            try await body(runner)
            group.cancelAll()
        }
    }

    @Test func aReconcileAsksToBeLookedAtAgainAfterItsDelayOnTheClock() async throws {
        let clock = ManualClock()
        let journal = Journal()
        try await Self.withRunner(
            clock: clock,
            { key, logger in try await journal.record(key, logger) { .seconds(30) } }
        ) { runner in
            runner.add("fan")
            try await eventually("fan is reconciled", every: .milliseconds(1)) { journal.calls("fan") == 1 }
            try await eventually("the runner sleeps until fan's deadline", every: .milliseconds(1)) { clock.sleeping == 1 }
            clock.advance(by: .seconds(29))
            // Nothing woke: the runner sleeps until 30 s, so no reconcile can have run.
            #expect(journal.calls("fan") == 1)
            clock.advance(by: .seconds(1))
            try await eventually("fan is reconciled again at 30 s", every: .milliseconds(1)) { journal.calls("fan") == 2 }
        }
    }

    @Test func aDelayBeyondADayIsCappedAtADay() async throws {
        let clock = ManualClock()
        let journal = Journal()
        try await Self.withRunner(
            clock: clock,
            // Ten thousand years: as seconds since the runner's start in nanoseconds, past Int64.
            { key, logger in try await journal.record(key, logger) { .seconds(Int64(10_000) * 365 * 86_400) } }
        ) { runner in
            runner.add("clock")
            try await eventually("clock is reconciled", every: .milliseconds(1)) { journal.calls("clock") == 1 }
            try await eventually("the runner sleeps until the capped deadline", every: .milliseconds(1)) { clock.sleeping == 1 }
            clock.advance(by: .seconds(86_400))
            try await eventually("clock is reconciled again after a day", every: .milliseconds(1)) { journal.calls("clock") == 2 }
        }
    }

    @Test func aFailedReconcileIsRetriedWithBackOff() async throws {
        struct Boom: Error {}
        let clock = ManualClock()
        let journal = Journal()
        try await Self.withRunner(
            clock: clock,
            { key, logger in try await journal.record(key, logger) { throw Boom() } }
        ) { runner in
            runner.add("lamp")
            try await eventually("the first attempt", every: .milliseconds(1)) { journal.calls("lamp") == 1 }
            try await eventually("the runner sleeps until the retry", every: .milliseconds(1)) { clock.sleeping == 1 }
            clock.advance(by: .seconds(1))  // base delay 1 s
            try await eventually("the second attempt", every: .milliseconds(1)) { journal.calls("lamp") == 2 }
            try await eventually("the runner sleeps until the next retry", every: .milliseconds(1)) { clock.sleeping == 1 }
            clock.advance(by: .seconds(1))
            #expect(journal.calls("lamp") == 2, "the second back-off is 2 s")
            clock.advance(by: .seconds(1))
            try await eventually("the third attempt", every: .milliseconds(1)) { journal.calls("lamp") == 3 }
        }
    }

    @Test func severalWorkersButNeverTwoOnOneKey() async throws {
        let clock = ManualClock()
        let journal = Journal()
        let gate = Gate()
        try await Self.withRunner(
            clock: clock, workers: 2,
            { key, logger in
                await journal.record(key, logger) { await gate.pass() }
                return nil
            }
        ) { runner in
            for key in ["a", "b", "c"] { runner.add(key) }
            try await eventually("two reconciles run", every: .milliseconds(1)) { journal.total == 2 }
            runner.add("a")
            runner.add("b")
            #expect(journal.state.withLock { $0.mostAtOnce } == 2, "no more than two workers")
            gate.openUp()
            // a and b were added while they ran: each runs once more; c runs once.
            try await eventually("every key is reconciled", every: .milliseconds(1)) {
                journal.calls("a") == 2 && journal.calls("b") == 2 && journal.calls("c") == 1
            }
            let state = journal.state.withLock { $0 }
            #expect(state.mostAtOnceOnOneKey == 1, "never two reconciles of one key at once")
            #expect(state.mostAtOnce <= 2)
            #expect(Set(state.ids).count == state.ids.count && state.ids.count == 5, "each reconcile has its own id in its log lines")
        }
    }
}
