/// The broker loops' reconnect back-off (relay, state sync, telemetry forwarding): 0.2 s,
/// doubling up to 10 s, back to 0.2 s after a success.
struct ReconnectBackoff {
    static let first: Duration = .milliseconds(200)
    static let longest: Duration = .seconds(10)
    private(set) var delay = first

    mutating func succeeded() { delay = Self.first }

    /// Sleeps the current delay, then doubles it.
    mutating func sleep() async throws {
        try await Task.sleep(for: delay)
        delay = min(delay * 2, Self.longest)
    }
}
