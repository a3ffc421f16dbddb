import Synchronization
import Testing
import TriadTesting

@testable import TriadServer

/// The loop that announces the `invoked` events of calls still waiting for their upstream.
@Suite("Late announcements")
struct LateAnnouncementsTests {
    @Test func aCallStillWaitingIsAnnouncedAndAnAnsweredOneIsNot() async throws {
        let announced = Mutex(0)
        let late = LateAnnouncements(after: .milliseconds(20)) { announced.withLock { $0 += 1 } }
        let loop = Task { await late.run() }

        // Answered at once, long before it would be late: nothing to announce. A call that
        // then waits is announced once, and so is the next one after it.
        late.began("answered")
        late.ended("answered")
        late.began("slow")
        try await eventually("the waiting call is announced") { announced.withLock { $0 } == 1 }
        late.ended("slow")
        late.began("slower")
        try await eventually("the next waiting call is announced") { announced.withLock { $0 } == 2 }

        late.finish()
        await loop.value
        #expect(announced.withLock { $0 } == 2, "each waiting call is announced once")
    }

    @Test func finishingEndsAnIdleLoop() async {
        let late = LateAnnouncements(after: .seconds(3600)) {}
        let loop = Task { await late.run() }
        late.finish()
        await loop.value
    }
}

/// Who an event write wakes.
@Suite("Event wake-ups")
struct EventNotifierTests {
    static func wakeUps(_ stream: AsyncStream<Void>) async -> Int {
        var count = 0
        for await _ in stream { count += 1 }
        return count
    }

    @Test func aLedgerOnlyWriteWakesOnlyTheFollowersOfTheLedger() async {
        let notifier = EventNotifier()
        let controller = notifier.subscribe(ledger: false)
        let tail = notifier.subscribe()
        notifier.notify(.ledgerOnly)
        notifier.finishAll()
        #expect(await Self.wakeUps(controller) == 0, "an invocation's record does not wake the controller")
        #expect(await Self.wakeUps(tail) == 1)

        let later = EventNotifier()
        let woken = later.subscribe(ledger: false)
        later.notify()
        later.finishAll()
        #expect(await Self.wakeUps(woken) == 1, "any other write does")
    }
}
