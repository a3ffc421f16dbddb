/// A condition a test waited for in vain.
public struct TimedOut: Error, CustomStringConvertible {
    public var description: String
}

/// Waits until `probe` holds, looking again every `interval`; throws `TimedOut` after `seconds`.
/// Tests wait for what happens this way, never for a fixed time: a slow machine only waits longer.
public func eventually(
    _ what: String, within seconds: Double = 10, every interval: Duration = .milliseconds(100),
    _ probe: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while true {
        if try await probe() { return }
        guard ContinuousClock.now < deadline else { throw TimedOut(description: "timed out after \(seconds) s waiting until \(what)") }
        try await Task.sleep(for: interval)
    }
}
