import Foundation
import NIOHTTP1
import Synchronization
import Testing
import TriadClient
import TriadCore
import TriadTesting

/// `triad` run as a separate process, as users run it: for restarts, kill -9 and the CLI.
final class ServerProcess: Sendable {
    let process: Process
    let baseURL: String
    private let output: Output

    final class Output: Sendable {
        let text = Mutex<String>("")
        func append(_ data: Data) { text.withLock { $0 += String(decoding: data, as: UTF8.self) } }
        var value: String { text.withLock { $0 } }
    }

    /// Starts `triad server` with `arguments` (listening on a free loopback port) and waits until it serves.
    /// `openFiles`: files the server inherits open (from a shell that opens them, then runs it),
    /// so that every descriptor it opens itself is numbered above them.
    static func start(
        _ arguments: [String], environment: [String: String] = [:], directory: String, openFiles: Int = 0
    ) async throws -> ServerProcess {
        let process = Process()
        let triad = try TestPaths.triadExecutable()
        let serverArguments = ["server", "--listen", "127.0.0.1:0"] + arguments
        if openFiles > 0 {
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            let script = "ulimit -n \(openFiles + 1024) && for _ in $(seq 1 \(openFiles)); do exec {fd}</dev/null; done && exec \"$0\" \"$@\""
            process.arguments = ["-c", script, triad] + serverArguments
        } else {
            process.executableURL = URL(fileURLWithPath: triad)
            process.arguments = serverArguments
        }
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "TRIAD_ADMIN_TOKEN")
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let output = Output()
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        pipe.fileHandleForReading.readabilityHandler = { handle in output.append(handle.availableData) }
        try process.run()
        let pattern = #/ listening address=127\.0\.0\.1:(\d+)/#
        for _ in 0..<300 {
            if let match = output.value.firstMatch(of: pattern) {
                return ServerProcess(process: process, baseURL: "http://127.0.0.1:\(match.1)", output: output)
            }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        process.terminate()
        throw SetupError("triad server did not start: \(output.value)")
    }

    private init(process: Process, baseURL: String, output: Output) {
        self.process = process
        self.baseURL = baseURL
        self.output = output
    }

    var log: String { output.value }

    /// Creates devices named `<prefix>-<n>` until at least `atLeast` are acknowledged, then
    /// kills the server with SIGKILL while the writer goes on. Returns what was acknowledged
    /// (name → resourceVersion): the only writes a server promises to keep.
    func killWhileWriting(token: String, prefix: String, atLeast: Int = 50) async throws -> [String: String] {
        let api = TriadClient(server: baseURL, token: token)
        let progress = Acknowledged()
        let writer = Task {
            for i in 0..<100_000 {
                let name = "\(prefix)-\(i)"
                do {
                    let reply = try await api.send(.POST, "/api/v1/resources", body: Docs.json(Docs.device(name)))
                    guard reply.status == 201 else {
                        await progress.stop(because: "\(name): HTTP \(reply.status) \(String(decoding: reply.body, as: UTF8.self))")
                        return
                    }
                    await progress.add(name, reply.json?["metadata"]?["resourceVersion"]?.stringValue ?? "")
                } catch {
                    await progress.stop(because: "\(name): \(error)")
                    return
                }
            }
        }
        while await progress.count < atLeast {
            // A writer that stopped before the kill would leave this loop waiting for ever.
            if let why = await progress.stopped {
                kill9()
                throw SetupError("the writer stopped after \(await progress.count) writes, before the kill: \(why)\n\(log)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        kill9()
        await writer.value
        return await progress.items
    }

    func kill9() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }
}

/// Runs the `triad` CLI and returns its exit code, stdout and stderr (see `ProgramRun.run`).
func runTriad(_ arguments: [String], stdin: String? = nil, directory: String? = nil, environment: [String: String] = [:]) async throws -> (
    status: Int32, stdout: String, stderr: String
) {
    var env = ProcessInfo.processInfo.environment
    for key in ["TRIAD_SERVER", "TRIAD_TOKEN", "TRIAD_ADMIN_TOKEN"] { env.removeValue(forKey: key) }
    for (k, v) in environment { env[k] = v }
    let run = try await ProgramRun.run(try TestPaths.triadExecutable(), arguments, directory: directory, environment: env, stdin: stdin)
    return (run.status, run.stdout, run.stderr)
}

/// Runs `body`, then `triad mesh down` in `directory` whatever `body` did.
func withMeshDownAfter(in directory: String, environment: [String: String], _ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch {
        _ = try? await runTriad(["mesh", "down"], directory: directory, environment: environment)
        throw error
    }
    _ = try? await runTriad(["mesh", "down"], directory: directory, environment: environment)
}

actor Acknowledged {
    var items: [String: String] = [:]
    /// Why the writer stopped, once it has.
    var stopped: String?
    var count: Int { items.count }
    func add(_ name: String, _ version: String) { items[name] = version }
    func stop(because reason: String) { stopped = reason }
}
