/// The update controller's procedure as a pure state machine: told how the last
/// action ended, it says what to do next. No I/O and no clock: `UpgradeController` performs the
/// actions on the mesh and records the steps. Strategies (docs/mesh.md):
///
/// - CV: start v2 → pin routes → switch the default → block unpinned requests at v1 → lock v1's
///   trace set → drain (DiffSet empty) → retire v1. At the drain deadline: roll back (default),
///   or with `force` retire anyway and say how many transactions may break.
/// - BF: start v2 → pin routes → hold calls of traces that never visited the service → drain →
///   switch and release the held calls onto v2 → retire. At the deadline: release onto v1.
/// - WF: start v2 → pin routes → wait until v1 is free → switch → drain the late ones → retire.
///   Under continuous load the deadline usually ends it (the documented time-out).
/// - rolling: switch at once without pins and retire v1 at once (the baseline, no guarantee).
///
/// A new version that fails its health check ends the upgrade rolled back; any other failure
/// ends it `failed` with both versions serving by their pins (`abort`).
public struct UpgradeMachine: Sendable {
    public enum Strategy: String, Sendable, CaseIterable {
        case cv = "CV"
        case bf = "BF"
        case wf = "WF"
        case rolling
    }

    public enum Action: Sendable, Equatable {
        /// Start the new version (or check a declared one) and wait for its health.
        case startVersion
        /// Pin routes to both versions at every caller; the default stays.
        case pushPinRoutes
        /// rolling: callers route by the default alone while the service is replaced.
        case setPinRoutes(Bool)
        case switchDefault(to: String)
        /// Whether a version refuses requests not pinned to it (callers re-route them).
        case block(version: String, Bool)
        /// CV: read every record logged before, then snapshot the old version's trace set.
        case lockTraceSet
        /// BF: calls of traces with no past visit wait in the pin check.
        case hold
        /// BF: the held calls go on, to `to` (nil: by the default route).
        case release(to: String?)
        /// Only a step for `triad upgrade status`.
        case note(step: String, detail: String)
        /// Wait until every trace that ran on `version` completed; answered with `.drained(left:)`.
        /// The deadline runs from the upgrade's start (`fromStart`) or from now.
        case drain(version: String, fromStart: Bool)
        /// Stop the old version; the routes go back to one version.
        case retire
        /// rolling: the same, at once.
        case retireAtOnce
        /// --force at the deadline: how many transactions the retirement may break.
        case markMayBreak(Int)
        /// Undo the start of the new version (it was not declared in the mesh file).
        case removeNewVersion
        case finish(UpgradeStatus.Phase, String)
        /// A step failed: leave both versions serving by their pins; ends `failed`.
        case abort(String)
    }

    public enum Outcome: Sendable, Equatable {
        case done
        case drained(left: Int)
        case failed(String)
    }

    /// What a drain's result decides.
    enum Decision: Equatable {
        case cvDrained, bfDrained, wfFree
        case wfLate(left: Int)
    }

    enum Item: Equatable {
        case act(Action)
        case decide(Decision)
    }

    public let strategy: Strategy
    public let service: String
    public let from: String
    public let to: String
    /// The upgrade starts a process for the new version (so a rollback stops it again).
    public let startsNewVersion: Bool
    public let force: Bool
    private var items: [Item]
    private var last: Action?
    public private(set) var isFinished = false

    public init(strategy: Strategy, service: String, from: String, to: String, startsNewVersion: Bool, force: Bool) {
        self.strategy = strategy
        self.service = service
        self.from = from
        self.to = to
        self.startsNewVersion = startsNewVersion
        self.force = force
        switch strategy {
        case .cv:
            items = [
                .act(.startVersion), .act(.pushPinRoutes), .act(.switchDefault(to: to)), .act(.block(version: from, true)),
                .act(.lockTraceSet), .act(.drain(version: from, fromStart: true)), .decide(.cvDrained),
            ]
        case .bf:
            items = [.act(.startVersion), .act(.pushPinRoutes), .act(.hold), .act(.drain(version: from, fromStart: true)), .decide(.bfDrained)]
        case .wf:
            items = [
                .act(.startVersion), .act(.pushPinRoutes), .act(.note(step: "waiting", detail: "waiting for \(service) \(from) to be free")),
                .act(.drain(version: from, fromStart: true)), .decide(.wfFree),
            ]
        case .rolling:
            items = [
                .act(.startVersion), .act(.setPinRoutes(false)), .act(.switchDefault(to: to)), .act(.retireAtOnce),
                .act(.setPinRoutes(true)), Self.completedFinish(service, to),
            ]
        }
    }

    /// The next action, given how the last one ended (`.done` to begin).
    public mutating func next(_ outcome: Outcome) -> Action? {
        guard !isFinished else { return nil }
        if case .failed(let why) = outcome {
            isFinished = true
            if last == .startVersion {
                return .finish(.rolledBack, "\(service) \(to) failed its health check; rolled back, nothing changed: \(why)")
            }
            return .abort(why)
        }
        var left = 0
        if case .drained(let n) = outcome { left = n }
        while !items.isEmpty {
            switch items.removeFirst() {
            case .act(let action):
                last = action
                switch action {
                case .finish, .abort: isFinished = true
                default: break
                }
                return action
            case .decide(let decision):
                items = continuation(decision, left: left) + items
            }
        }
        isFinished = true
        return nil
    }

    private static func completedFinish(_ service: String, _ to: String) -> Item { .act(.finish(.completed, "\(service) runs \(to) only")) }
    private var completed: [Item] { [.act(.retire), Self.completedFinish(service, to)] }
    private var undoStart: [Item] { startsNewVersion ? [.act(.removeNewVersion)] : [] }

    /// --force at the deadline (the default is the new version by then).
    private func forced(_ left: Int) -> [Item] {
        [.act(.markMayBreak(left)), .act(.retire), .act(.finish(.forced, "\(service) runs \(to) only; \(left) transactions may have broken"))]
    }

    /// Back to the old version after the switch: the new one blocked until its traces end.
    private func rollBack(_ left: Int, unblockingOld: Bool) -> [Item] {
        [.act(.note(step: "drain-deadline", detail: "\(left) transactions still ran on \(from); rolling back"))]
            + (unblockingOld ? [.act(.block(version: from, false))] : [])
            + [
                .act(.switchDefault(to: from)), .act(.block(version: to, true)),
                .act(.drain(version: to, fromStart: false)), .act(.block(version: to, false)),
            ]
            + undoStart
            + [.act(.finish(.rolledBack, "the drain deadline passed with \(left) transactions on \(service) \(from); \(from) is the default again"))]
    }

    private func continuation(_ decision: Decision, left: Int) -> [Item] {
        switch decision {
        case .cvDrained:
            if left == 0 { return completed }
            if force { return forced(left) }
            return rollBack(left, unblockingOld: true)
        case .bfDrained:
            if left == 0 || force {
                return [.act(.switchDefault(to: to)), .act(.release(to: to))] + (left == 0 ? completed : forced(left))
            }
            return [.act(.release(to: nil))] + undoStart
                + [
                    .act(
                        .finish(
                            .rolledBack,
                            "\(service) \(from) was not free before the drain deadline (\(left) transactions); released the held requests, \(from) stays"))
                ]
        case .wfFree:
            if left == 0 || force {
                // Transactions that began on the old version between "free" and the switch keep
                // their pins; they end before the retirement.
                return [.act(.switchDefault(to: to)), .act(.drain(version: from, fromStart: false)), .decide(.wfLate(left: left))]
            }
            return undoStart
                + [
                    .act(
                        .finish(
                            .rolledBack,
                            "WF time-out: \(service) \(from) was never free within the drain deadline under load (\(left) transactions on it at the end); nothing changed"
                        ))
                ]
        case .wfLate(let before):
            if force { return before == 0 && left == 0 ? completed : forced(before == 0 ? left : before) }
            if left == 0 { return completed }
            // Late transactions still on the old version: without --force, back to it as CV does.
            return rollBack(left, unblockingOld: false)
        }
    }
}
