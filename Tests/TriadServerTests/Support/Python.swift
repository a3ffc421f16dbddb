import Foundation
import TriadTesting

/// Runs the repository's Python checkers (scripts/), which judge by the JSON Schemas in schemas/.
enum Python {
    static let repositoryRoot = URL(fileURLWithPath: TestPaths.repositoryRoot)

    struct Result {
        var status: Int32
        var output: String
    }

    static func run(_ script: String, _ arguments: [String]) async throws -> Result {
        let run = try await ProgramRun.run(
            "/usr/bin/env", ["python3", repositoryRoot.appendingPathComponent("scripts/\(script)").path] + arguments,
            directory: repositoryRoot.path, environment: ProcessInfo.processInfo.environment)
        return Result(status: run.status, output: run.stdout + run.stderr)
    }
}
