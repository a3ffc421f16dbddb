/// Agent heartbeats (docs/mqtt.md): an agent keeps its resource's condition `AgentReady` fresh by
/// writing its `lastHeartbeatTime` (a status patch, over REST or `triad.state`). When that
/// time is older than the timeout, the controller marks the resource `Failed` with `AgentReady`
/// False, reason `HeartbeatMissed`. The agent's next heartbeat is its own to report (it sets
/// `phase` and `AgentReady` again). Pure: times are seconds on the caller's clock.
public enum HeartbeatReconciler {
    public static let conditionType = "AgentReady"
    public static let missedReason = "HeartbeatMissed"

    public struct Decision: Sendable, Equatable {
        /// Write `phase: Failed` and `AgentReady` False / HeartbeatMissed.
        public var markFailed: Bool
        public var requeueAfter: Double?
    }

    /// `lastHeartbeat` nil: the resource has no heartbeating agent, nothing to judge.
    public static func decide(
        lastHeartbeat: Double?, phase: ResourcePhase?, alreadyMissed: Bool,
        now: Double, timeout: Double
    ) -> Decision {
        guard let lastHeartbeat else { return Decision(markFailed: false, requeueAfter: nil) }
        let quiet = now - lastHeartbeat
        if quiet > timeout {
            return Decision(markFailed: !(phase == .failed && alreadyMissed), requeueAfter: nil)
        }
        return Decision(markFailed: false, requeueAfter: max(0.1, timeout - quiet + 0.1))
    }
}
