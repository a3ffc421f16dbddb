import Foundation
import TriadProcess

/// Runs a program to its end within a time limit, its output (stdout and stderr) to a log file.
/// Git and builds run this way: in their own process group (a time limit stops what they
/// started too), with only the environment they are given.
struct CommandRunner: Sendable {
    enum Ending: Sendable, Equatable {
        case exited(Int32)
        case timedOut
        case cannotStart(String)
    }

    /// Every `interval` while the command runs: the seconds it has run and its last line of output.
    typealias Progress = @Sendable (_ elapsed: Double, _ lastLine: String) -> Void

    static func run(
        _ argv: [String], directory: String, environment: [String: String], log: String, timeoutSeconds: Double,
        progressInterval: Duration = .seconds(1), progress: Progress? = nil
    ) async -> Ending {
        guard let program = argv.first, let executable = ChildProcess.resolve(program, directory: directory) else {
            return .cannotStart("\(argv.first ?? "") is not an executable program here (looked on PATH and in the checkout)")
        }
        let child: ChildProcess
        do {
            child = try ChildProcess(
                id: program, kind: "command", executable: executable, arguments: Array(argv.dropFirst()), environment: environment,
                directory: directory, logPath: log, newProcessGroup: true)
        } catch {
            return .cannotStart("\(program) could not be started: \(error)")
        }
        let start = ContinuousClock.now
        let ending = await withTaskGroup(of: Ending?.self) { group in
            group.addTask { await child.waitForExit().map(Ending.exited) }
            group.addTask {
                try? await Task.sleep(for: .seconds(timeoutSeconds))
                return Task.isCancelled ? nil : .timedOut
            }
            if let progress {
                group.addTask {
                    while (try? await Task.sleep(for: progressInterval)) != nil {
                        let elapsed = start.duration(to: .now)
                        progress(Double(elapsed.components.seconds), lastLine(of: log))
                    }
                    return nil
                }
            }
            var first: Ending = .timedOut
            for await result in group {
                if let result {
                    first = result
                    break
                }
            }
            group.cancelAll()
            return first
        }
        if ending == .timedOut { await child.stop(grace: .seconds(5)) }
        return ending
    }

    static func lastLine(of path: String) -> String {
        ChildProcess.tail(of: path, bytes: 512).split(whereSeparator: \.isNewline).last.map(String.init) ?? ""
    }
}
