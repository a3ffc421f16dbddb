import Foundation

/// A test's set-up could not be made (a missing service, executable or variable): a failure,
/// never a skip.
public struct SetupError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Where tests find the repository, the built `triad`, and fresh directories.
public enum TestPaths {
    public static let repositoryRoot: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// The `triad` executable built next to the test bundle (`swift build --build-tests` builds it).
    public static func triadExecutable() throws -> String {
        let runner = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let candidates = [
            runner.appendingPathComponent("triad").path,
            runner.deletingLastPathComponent().appendingPathComponent("triad").path,
            repositoryRoot + "/.build/debug/triad",
        ]
        for path in candidates where FileManager.default.isExecutableFile(atPath: path) { return path }
        throw SetupError("cannot find the triad executable (looked in \(candidates.joined(separator: ", "))); run swift build first")
    }

    /// A new empty directory under the system's temporary directory.
    public static func temporaryDirectory(_ prefix: String = "triad-test") throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }
}
