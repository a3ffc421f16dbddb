import ArgumentParser
import Foundation
import TriadClient

@main
struct Triad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "triad",
        abstract: "A backend for human-machine-thing resource platforms.",
        subcommands: [ServerCommand.self, ApplyCommand.self, GetCommand.self, DescribeCommand.self, DeleteCommand.self,
                      EventsCommand.self, TokenCommand.self, ProbeCommand.self, MeshCommand.self, UpgradeCommand.self])
}

/// Prints a failure as one line on stderr and exits non-zero, for every client verb.
func runClientVerb(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let failure as TriadClient.Failure {
        FileHandle.standardError.write(Data("error: \(failure.description)\n".utf8))
        throw ExitCode(1)
    } catch let error as CLIError {
        FileHandle.standardError.write(Data("error: \(error.message)\n".utf8))
        throw ExitCode(1)
    }
}

struct CLIError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}
