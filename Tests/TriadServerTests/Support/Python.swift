import Foundation
import TriadTesting

/// Runs the repository's Python checkers (scripts/), which judge by the JSON Schemas in schemas/.
enum Python {
    static let repositoryRoot = URL(fileURLWithPath: TestPaths.repositoryRoot)

    struct Result {
        var status: Int32
        var output: String
    }

    static func run(_ script: String, _ arguments: [String]) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", repositoryRoot.appendingPathComponent("scripts/\(script)").path] + arguments
        process.currentDirectoryURL = repositoryRoot
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self))
    }
}
