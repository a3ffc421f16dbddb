import Foundation
import TriadProcess

/// What a program run by a test said and how it ended.
public struct ProgramRun: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String

    /// Runs `executable` to its end without holding a thread while it runs: a test that blocked
    /// on a child would take one of the few threads every other test's tasks share, and a child
    /// that needs one of those tasks (a test's upstream, a load it drives) would then never end.
    /// Output goes to files, not pipes, so a grandchild that keeps them (`mesh up` leaves its
    /// control process running) cannot hold the test. A run past `timeout` is killed and thrown
    /// as a failure naming the command, so a hang fails its test instead of the whole run.
    public static func run(
        _ executable: String, _ arguments: [String], directory: String? = nil, environment: [String: String],
        stdin: String? = nil, timeout: Duration = .seconds(300)
    ) async throws -> ProgramRun {
        let files = try TestPaths.temporaryDirectory("triad-run")
        defer { try? FileManager.default.removeItem(atPath: files) }
        var inputPath = "/dev/null"
        if let stdin {
            inputPath = files + "/stdin"
            try Data(stdin.utf8).write(to: URL(fileURLWithPath: inputPath))
        }
        let child = try ChildProcess(
            id: URL(fileURLWithPath: executable).lastPathComponent, kind: "test program", executable: executable,
            arguments: arguments, environment: environment, directory: directory ?? files,
            logPath: files + "/stdout", errorPath: files + "/stderr", inputPath: inputPath)
        let exited = await child.waitForExit(within: timeout)
        let read = { (name: String) in (try? String(contentsOfFile: files + "/" + name, encoding: .utf8)) ?? "" }
        guard let status = exited else {
            await child.stop(grace: .seconds(2))
            throw SetupError(
                "\(executable) \(arguments.joined(separator: " ")) did not end within \(timeout); killed. stdout: \(read("stdout").suffix(2000)) stderr: \(read("stderr").suffix(2000))"
            )
        }
        return ProgramRun(status: status, stdout: read("stdout"), stderr: read("stderr"))
    }
}
