import ArgumentParser
import Foundation
import TriadClient

@main
struct Triad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "triad",
        abstract: "A backend for human-machine-thing resource platforms.",
        subcommands: [
            ServerCommand.self, ApplyCommand.self, GetCommand.self, DescribeCommand.self, DeleteCommand.self,
            InvokeCommand.self, BindCommand.self, UnbindCommand.self, EventsCommand.self, TokenCommand.self, ProbeCommand.self, AgentCommand.self,
            MeshCommand.self, UpgradeCommand.self, ProjectCommand.self,
        ])
}

/// Prints a failure as one line on stderr and exits non-zero, for every client verb (registry,
/// probes, mesh). Errors that are not the user's to read (bugs) propagate as they are.
func runClientVerb(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as any UserFacingError {
        FileHandle.standardError.write(Data("error: \(error.description)\n".utf8))
        throw ExitCode(1)
    }
}

/// An error whose description is written for the person at the terminal.
protocol UserFacingError: Error, CustomStringConvertible {}

extension TriadClient.Failure: UserFacingError {}
extension CLIError: UserFacingError {
    var description: String { message }
}

struct CLIError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}
