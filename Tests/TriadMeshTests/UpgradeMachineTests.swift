import Testing
import TriadMesh

/// The update controller's procedure without a mesh: which actions, in which order, for each
/// strategy and each way a drain can end (a pure state machine, tested without sockets).
@Suite("Upgrade state machine")
struct UpgradeMachineTests {
    typealias A = UpgradeMachine.Action

    /// Runs the machine to its end; `drains` answers the drains in order (left transactions).
    static func run(
        _ strategy: UpgradeMachine.Strategy, force: Bool = false, startsNewVersion: Bool = true,
        drains: [Int] = [], failAt: Int? = nil
    ) -> [A] {
        var machine = UpgradeMachine(strategy: strategy, service: "auth", from: "v1", to: "v2", startsNewVersion: startsNewVersion, force: force)
        var actions: [A] = []
        var drains = drains
        var outcome = UpgradeMachine.Outcome.done
        while let action = machine.next(outcome) {
            actions.append(action)
            if actions.count == failAt {
                outcome = .failed("boom")
            } else if case .drain = action {
                outcome = .drained(left: drains.isEmpty ? 0 : drains.removeFirst())
            } else {
                outcome = .done
            }
            #expect(actions.count < 50, "the machine ends")
            if actions.count >= 50 { break }
        }
        #expect(machine.isFinished)
        return actions
    }

    @Test func cvSwitchesBlocksLocksDrainsAndRetires() {
        #expect(
            Self.run(.cv, drains: [0]) == [
                .startVersion, .pushPinRoutes, .switchDefault(to: "v2"), .block(version: "v1", true), .lockTraceSet,
                .drain(version: "v1", fromStart: true), .retire, .finish(.completed, "auth runs v2 only"),
            ])
    }

    @Test func cvAtTheDeadlineRollsBackTheSameWayOrForces() {
        #expect(
            Self.run(.cv, drains: [3, 1]) == [
                .startVersion, .pushPinRoutes, .switchDefault(to: "v2"), .block(version: "v1", true), .lockTraceSet,
                .drain(version: "v1", fromStart: true),
                .note(step: "drain-deadline", detail: "3 transactions still ran on v1; rolling back"),
                .block(version: "v1", false), .switchDefault(to: "v1"), .block(version: "v2", true),
                .drain(version: "v2", fromStart: false), .block(version: "v2", false), .removeNewVersion,
                .finish(.rolledBack, "the drain deadline passed with 3 transactions on auth v1; v1 is the default again"),
            ])
        let declared = Self.run(.cv, startsNewVersion: false, drains: [3, 0])
        #expect(!declared.contains(.removeNewVersion), "a version of the mesh file stays")
        #expect(
            Self.run(.cv, force: true, drains: [3]).suffix(3) == [
                .markMayBreak(3), .retire, .finish(.forced, "auth runs v2 only; 3 transactions may have broken"),
            ])
    }

    @Test func bfHoldsThenSwitchesAndReleasesOntoTheNewVersion() {
        #expect(
            Self.run(.bf, drains: [0]) == [
                .startVersion, .pushPinRoutes, .hold, .drain(version: "v1", fromStart: true),
                .switchDefault(to: "v2"), .release(to: "v2"), .retire, .finish(.completed, "auth runs v2 only"),
            ])
        #expect(
            Self.run(.bf, drains: [2]).suffix(3) == [
                .release(to: nil), .removeNewVersion,
                .finish(.rolledBack, "auth v1 was not free before the drain deadline (2 transactions); released the held requests, v1 stays"),
            ])
        #expect(
            Self.run(.bf, force: true, drains: [2]).suffix(5) == [
                .switchDefault(to: "v2"), .release(to: "v2"), .markMayBreak(2), .retire,
                .finish(.forced, "auth runs v2 only; 2 transactions may have broken"),
            ])
    }

    @Test func wfWaitsUntilFreeThenDrainsTheLateOnes() {
        #expect(
            Self.run(.wf, drains: [0, 0]) == [
                .startVersion, .pushPinRoutes, .note(step: "waiting", detail: "waiting for auth v1 to be free"),
                .drain(version: "v1", fromStart: true), .switchDefault(to: "v2"), .drain(version: "v1", fromStart: false),
                .retire, .finish(.completed, "auth runs v2 only"),
            ])
        #expect(
            Self.run(.wf, drains: [5]).suffix(2) == [
                .removeNewVersion,
                .finish(
                    .rolledBack, "WF time-out: auth v1 was never free within the drain deadline under load (5 transactions on it at the end); nothing changed"),
            ])
        // Late transactions (begun on v1 between "free" and the switch) that do not end in time:
        // back to v1 without --force, retired anyway with it.
        #expect(
            Self.run(.wf, drains: [0, 4, 0]).suffix(7) == [
                .note(step: "drain-deadline", detail: "4 transactions still ran on v1; rolling back"),
                .switchDefault(to: "v1"), .block(version: "v2", true), .drain(version: "v2", fromStart: false), .block(version: "v2", false),
                .removeNewVersion, .finish(.rolledBack, "the drain deadline passed with 4 transactions on auth v1; v1 is the default again"),
            ])
        #expect(
            Self.run(.wf, force: true, drains: [0, 4]).suffix(3) == [
                .markMayBreak(4), .retire, .finish(.forced, "auth runs v2 only; 4 transactions may have broken"),
            ])
    }

    @Test func rollingReplacesAtOnceWithoutPins() {
        #expect(
            Self.run(.rolling) == [
                .startVersion, .setPinRoutes(false), .switchDefault(to: "v2"), .retireAtOnce, .setPinRoutes(true),
                .finish(.completed, "auth runs v2 only"),
            ])
    }

    @Test func aFailedHealthCheckRollsBackAndAnyOtherFailureAborts() {
        for strategy in UpgradeMachine.Strategy.allCases {
            #expect(
                Self.run(strategy, failAt: 1) == [.startVersion, .finish(.rolledBack, "auth v2 failed its health check; rolled back, nothing changed: boom")])
            #expect(Self.run(strategy, failAt: 3).last == .abort("boom"), "\(strategy)")
        }
    }
}
