import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A child process started with posix_spawn, stdin from /dev/null and stdout+stderr appended
/// to a log file, reaped by a thread of its own. Not Foundation's Process: its waitUntilExit
/// was seen to hang for ever once a child had daemonised a grandchild (tests), and the
/// controller must never block a task thread on a child.
public final class ChildProcess: Sendable {
    public let pid: pid_t
    private let exit = ExitStatus()
    private let exited: AsyncStream<Int32>

    public struct SpawnError: Error, CustomStringConvertible {
        public var description: String
    }

    /// `onExit` runs on the reaper thread with the exit status (128+signal when signalled).
    public init(_ argv: [String], environment: [String: String], log: String,
                onExit: @escaping @Sendable (Int32) -> Void = { _ in }) throws {
        guard let program = argv.first, !program.isEmpty else { throw SpawnError(description: "no program to run") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Its own process group, so a stop reaches whatever it starts, and a terminal's ^C
        // reaches the server first.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in cArgs + cEnv { free(p) } }
        var pid: pid_t = 0
        // posix_spawnp searches PATH for a bare program name.
        let rc = posix_spawnp(&pid, program, &actions, &attributes, cArgs, cEnv)
        guard rc == 0 else { throw SpawnError(description: "cannot start \(program): \(String(cString: strerror(rc)))") }
        self.pid = pid
        let (stream, continuation) = AsyncStream.makeStream(of: Int32.self, bufferingPolicy: .bufferingNewest(1))
        exited = stream
        let exit = self.exit
        let child = pid
        Thread.detachNewThread {
            var status: Int32 = 0
            while waitpid(child, &status, 0) < 0 && errno == EINTR {}
            // WIFEXITED/WEXITSTATUS/WTERMSIG are macros Swift does not import.
            let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
            exit.code.withLock { $0 = code }
            continuation.yield(code)
            continuation.finish()
            onExit(code)
        }
    }

    public var exitStatus: Int32? { exit.code.withLock { $0 } }
    public var isRunning: Bool { exitStatus == nil }

    /// Waits for the exit; nil if `timeout` passes first.
    public func wait(timeout: Duration) async -> Int32? {
        if let code = exitStatus { return code }
        return await withTaskGroup(of: Int32?.self) { group in
            group.addTask { [exited] in
                for await code in exited { return code }
                return self.exitStatus
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? exitStatus
        }
    }

    /// SIGTERM to its process group, then SIGKILL after `grace`; returns the exit status.
    @discardableResult
    public func stop(grace: Duration = .seconds(5)) async -> Int32? {
        guard isRunning else { return exitStatus }
        kill(-pid, SIGTERM)
        if let code = await wait(timeout: grace) { return code }
        kill(-pid, SIGKILL)
        return await wait(timeout: .seconds(5))
    }
}

/// Shared with the reaper thread (a class: a Mutex cannot be captured by copy).
private final class ExitStatus: Sendable {
    let code = Mutex<Int32?>(nil)
}
