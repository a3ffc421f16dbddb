import Foundation

/// Makes a pin check wait until the trace managers of a service have read every record its
/// sidecars logged before the check arrived. Pins are learned from the access-log stream,
/// asynchronously: under load a trace's admission to the old version can still be in the
/// stream when its next call is routed, and after a default switch that call would go to the
/// new version (seen at 200 tx/s on a loaded machine). During an upgrade, an unpinned call to
/// the service first waits for a marker round: a marker sent through each inbound sidecar of
/// the service after the check arrived, read back from the same ordered stream. Checks that
/// arrive together share one round, run by one of them (no task of its own outlives a check).
public actor RecordBarrier {
    /// Checks waiting for the next round; resumed with `true` by the one handed the next round.
    private var waiting: [CheckedContinuation<Bool, Never>] = []
    private var running = false
    private let round: @Sendable () async -> Void

    public init(round: @escaping @Sendable () async -> Void) { self.round = round }

    public func wait() async {
        if running {
            // A round is under way: its markers may have left before this check arrived, so
            // this check waits for the next round, which the current runner hands to one of us.
            let runsNext = await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in waiting.append(c) }
            guard runsNext else { return }
        } else {
            running = true
        }
        // Every check in this batch (this one included) arrived before the round's markers are sent.
        let batch = waiting
        waiting = []
        await round()
        for c in batch { c.resume(returning: false) }
        if waiting.isEmpty {
            running = false
        } else {
            waiting.removeFirst().resume(returning: true)
        }
    }
}
