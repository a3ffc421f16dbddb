import Foundation
import Synchronization
import TriadCore

#if canImport(Glibc)
    import Glibc
#endif

/// A process Triad starts (a mesh instance or Envoy, a probe), stdin from /dev/null and its
/// output appended to a log file, reaped by a thread of its own that reports the exit.
///
/// Spawned with posix_spawn rather than Foundation's Process: the spawning thread (a
/// concurrency or Dispatch thread) blocks nearly every signal and a child inherits that mask,
/// so a child started that way would never see SIGTERM; here it gets an empty mask and default
/// handlers, and none of our descriptors. (Process's waitUntilExit was also seen to hang for
/// ever once a child had daemonised a grandchild.)
public final class ChildProcess: Sendable {
    public let id: String
    public let kind: String
    public let logPath: String
    public let pid: Int32
    private let status = ExitStatus()
    /// Signals go to the child's own process group (and so to what it starts).
    private let signalsGroup: Bool

    public var isRunning: Bool { exitStatus == nil }

    /// The exit status once the process has ended: its code, or 128 + the signal, like a shell.
    public var exitStatus: Int32? { status.code }

    /// `id` and `kind` label it in messages. Its stderr goes to `logPath` too, or to `errorPath`
    /// when given; its stdin is `inputPath`. `newProcessGroup`: the child leads a group of its
    /// own, and `stop` signals the whole group. `onExit` runs on the reaper thread.
    public init(
        id: String, kind: String, executable: String, arguments: [String], environment: [String: String],
        directory: String, logPath: String, errorPath: String? = nil, inputPath: String = "/dev/null",
        newProcessGroup: Bool = false, onExit: @escaping @Sendable (Int32) -> Void = { _ in }
    ) throws {
        self.id = id
        self.kind = kind
        self.logPath = logPath
        self.signalsGroup = newProcessGroup
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, inputPath, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0o600)
        if let errorPath {
            posix_spawn_file_actions_addopen(&actions, 2, errorPath, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0o600)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        guard let chdir = Self.addChdir, let closeFrom = Self.addCloseFrom else { throw POSIXError(.ENOSYS) }
        _ = chdir(&actions, directory)
        // Nothing else of ours leaks into the child: not our listening sockets, and not the
        // descriptor by which a parent's Foundation.Process learns that *we* exited.
        _ = closeFrom(&actions, 3)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        var all = sigset_t()
        sigemptyset(&empty)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setsigdefault(&attr, &all)
        var flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
        if newProcessGroup {
            flags |= POSIX_SPAWN_SETPGROUP
            posix_spawnattr_setpgroup(&attr, 0)
        }
        posix_spawnattr_setflags(&attr, Int16(flags))
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for a in argv { free(a) }
            for e in envp { free(e) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attr, argv, envp)
        guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO) }
        self.pid = pid
        let status = self.status
        let child = pid
        Thread.detachNewThread {
            var raw: Int32 = 0
            while waitpid(child, &raw, 0) < 0 && errno == EINTR {}
            // WIFEXITED → WEXITSTATUS, else 128 + signal (the macros are not imported).
            let code = (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
            status.exited(code)
            onExit(code)
        }
    }

    /// glibc has these (≥ 2.29, ≥ 2.34), but Swift's Glibc module does not export them (_GNU_SOURCE names).
    private typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32
    private static let addChdir: AddChdir? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addchdir_np") else { return nil }
        return unsafeBitCast(symbol, to: AddChdir.self)
    }()

    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private static let addCloseFrom: AddCloseFrom? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: AddCloseFrom.self)
    }()

    /// Sends SIGTERM (to its group, see `newProcessGroup`) and returns at once; `stop` waits.
    public func terminate() {
        guard isRunning else { return }
        kill(signalsGroup ? -pid : pid, SIGTERM)
    }

    /// SIGTERM, then SIGKILL after `grace` (at once if the caller is cancelled); returns once the
    /// process is gone, or once it was killed if the caller is cancelled (the reaper collects it).
    public func stop(grace: Duration = .seconds(5)) async {
        guard isRunning else { return }
        let target = signalsGroup ? -pid : pid
        kill(target, SIGTERM)
        if await waitForExit(within: grace) == nil && isRunning {
            kill(target, SIGKILL)
            _ = await status.wait()
        }
    }

    /// Waits until the process has exited; its status, or nil if the caller was cancelled first.
    public func waitForExit() async -> Int32? {
        await status.wait()
    }

    /// Waits until the process has exited, for at most `timeout`; its status, or nil if it still
    /// runs then (or the caller was cancelled).
    public func waitForExit(within timeout: Duration) async -> Int32? {
        await first(within: timeout, otherwise: nil) { await self.status.wait() }
    }

    /// The last `bytes` of the log, for an error message.
    public func logTail(_ bytes: Int = 2000) -> String { Self.tail(of: logPath, bytes: bytes) }

    public static func tail(of path: String, bytes: Int) -> String {
        guard let data = FileManager.default.contents(atPath: path) else { return "" }
        return String(decoding: data.suffix(bytes), as: UTF8.self)
    }

    /// Resolves a program name the way a shell would: a path as is (relative to `directory`),
    /// a bare name through PATH.
    public static func resolve(_ program: String, directory: String) -> String? {
        if program.contains("/") {
            let path = program.hasPrefix("/") ? program : directory + "/" + program
            return FileManager.default.isExecutableFile(atPath: path) ? path : nil
        }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(program)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Whether a pid still runs (for `mesh down` when the control process is gone). A zombie
    /// does not: once `mesh up` exits, nobody may reap the control process but init.
    public static func alive(_ pid: Int32) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return true }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).prefix(1)
        return state != "Z" && state != "X"
    }
}

/// A loopback TCP port free at the time of asking, not handed out before by this process, nor in
/// the last ten minutes by another Triad process on the machine.
public func freeLoopbackPort() throws -> Int {
    // Below the kernel's ephemeral range: a port handed out here and bound a moment later is
    // never meanwhile given to a socket bound to port 0 or to an outgoing connection (a mesh's
    // own control server once took its gateway's admin port that way).
    if ephemeralStart > 11_000 {
        for _ in 0..<200 {
            let port = Int.random(in: 10_000..<ephemeralStart)
            // A port handed out is free until its user binds it: without this memory, two
            // Envoys started together were once given the same one.
            guard handedOut.withLock({ $0.insert(port).inserted }) else { continue }
            // Other Triad processes (`triad mesh up` and `triad upgrade` side by side) draw from
            // the same range: a lock on the port's file keeps them from handing it out too.
            guard PortReservations.shared.reserve(port) else { continue }
            if let bound = bindLoopback(port: port) { return bound }
        }
    }
    guard let port = bindLoopback(port: 0) else { throw POSIXError(.EADDRINUSE) }
    return port
}

/// Ports `freeLoopbackPort` returned (or found taken) in this process.
private let handedOut = Mutex<Set<Int>>([])

/// Ports this process handed out, each held by an exclusive `flock` on a file of its own in a
/// directory every Triad process on the machine shares. A lock outlives the hand-out for
/// `holdFor`, long enough for the port's user to bind it; the kernel drops every lock of a
/// process that ends, so a killed process leaves nothing to clean.
private final class PortReservations: Sendable {
    static let shared = PortReservations()
    private static let directory = "/tmp/triad-ports"
    private static let holdFor: Duration = .seconds(600)
    private let held = Mutex<[(fd: Int32, since: ContinuousClock.Instant)]>([])

    /// Whether `port` is now reserved by this process (false: another process holds it).
    func reserve(_ port: Int) -> Bool {
        release(olderThan: Self.holdFor)
        mkdir(Self.directory, 0o1777)
        chmod(Self.directory, 0o1777)  // whoever creates it first: every user may reserve
        let fd = open("\(Self.directory)/\(port)", O_CREAT | O_RDONLY | O_CLOEXEC, 0o644)  // flock needs no write access
        // Without the directory (a read-only /tmp) the process-wide memory is all there is.
        guard fd >= 0 else { return true }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            return false
        }
        held.withLock { $0.append((fd, .now)) }
        return true
    }

    private func release(olderThan age: Duration) {
        let now = ContinuousClock.now
        held.withLock { held in
            held.removeAll { entry in
                guard now - entry.since > age else { return false }
                close(entry.fd)
                return true
            }
        }
    }
}

/// The first port of `net.ipv4.ip_local_port_range` (read once).
private let ephemeralStart: Int = {
    guard let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8) else { return 32768 }
    return text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first.flatMap { Int($0) } ?? 32768
}()

/// Binds 127.0.0.1:`port` (0: any) for a moment; the port it got, or nil when taken.
private func bindLoopback(port: Int) -> Int? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { return nil }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// Shared with the reaper thread (a class: a Mutex cannot be captured by copy).
/// The exit code once the reaper has it, and the tasks waiting for it.
private final class ExitStatus: Sendable {
    private struct State {
        var code: Int32?
        var waiters: [Int: CheckedContinuation<Int32?, Never>] = [:]
        var nextWaiter = 0
    }
    private let state = Mutex(State())

    var code: Int32? { state.withLock { $0.code } }

    func exited(_ code: Int32) {
        let waiters = state.withLock { s in
            s.code = code
            defer { s.waiters = [:] }
            return s.waiters.values
        }
        for w in waiters { w.resume(returning: code) }
    }

    /// The exit code, or nil when the waiting task is cancelled first.
    func wait() async -> Int32? {
        let id = state.withLock { s in
            defer { s.nextWaiter += 1 }
            return s.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Int32?, Never>) in
                let now: Int32?? = state.withLock { s in
                    if let code = s.code { return .some(code) }
                    if Task.isCancelled { return .some(nil) }
                    s.waiters[id] = c
                    return .none
                }
                if let now { c.resume(returning: now) }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume(returning: nil)
        }
    }
}
