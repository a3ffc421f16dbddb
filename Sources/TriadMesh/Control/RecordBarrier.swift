import Foundation

/// Makes a pin check wait until the trace managers of a service have read every record its
/// sidecars logged before the check arrived. Pins are learned from the access-log stream,
/// asynchronously: under load a trace's admission to the old version can still be in the
/// stream when its next call is routed, and after a default switch that call would go to the
/// new version (seen at 200 tx/s on a loaded machine). During an upgrade, an unpinned call to
/// the service first waits for a marker round: a marker sent through each inbound sidecar of
/// the service after the check arrived, read back from the same ordered stream. Checks that
/// arrive together share one round.
public actor RecordBarrier {
    private var waiting: [CheckedContinuation<Void, Never>] = []
    private var running = false
    private let round: @Sendable () async -> Void

    public init(round: @escaping @Sendable () async -> Void) { self.round = round }

    public func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            waiting.append(c)
            if !running {
                running = true
                Task { await self.loop() }
            }
        }
    }

    private func loop() async {
        while !waiting.isEmpty {
            // Every check in this batch arrived before the round's markers are sent.
            let batch = waiting
            waiting = []
            await round()
            for c in batch { c.resume() }
        }
        running = false
    }
}
