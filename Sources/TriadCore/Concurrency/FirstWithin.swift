/// What `body` returns, or `fallback` if `timeout` passes first; `body` is cancelled then (and
/// the wait for the time limit as soon as `body` returns). For waits woken by events, not polls.
public func first<T: Sendable>(within timeout: Duration, otherwise fallback: T, _ body: @escaping @Sendable () async -> T) async -> T {
    await withTaskGroup(of: T.self) { group in
        group.addTask { await body() }
        group.addTask {
            try? await Task.sleep(for: timeout)
            return fallback
        }
        let result = await group.next() ?? fallback
        group.cancelAll()
        return result
    }
}
