import ArgumentParser
import Foundation
import NIOHTTP1
import TriadClient
import TriadCore

struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events", abstract: "Print registry events (CloudEvents); --follow keeps streaming.")

    @Flag(name: .shortAndLong, help: "Keep the stream open and print new events as they happen.")
    var follow = false
    @Option(help: "Comma-separated CloudEvent types, e.g. io.triad.resource.created,io.triad.resource.status.")
    var types: String?
    @Option(name: [.customShort("l"), .long], help: "Label selector of the resources whose events to show.")
    var selector: String?
    @Option(help: "Start after this event id (default: all retained events; with --follow and no --since, from now).")
    var since: String?
    @Option(name: .shortAndLong, help: "Output: table or json (one CloudEvent per line).")
    var output: OutputFormat = .table
    @OptionGroup var client: ClientOptions

    func run() async throws {
        try await runClientVerb {
            var query = ["follow=\(follow)"]
            if let types { query.append("types=\(percentEncode(types))") }
            if let selector { query.append("labelSelector=\(percentEncode(selector))") }
            let start = since ?? (follow ? nil : "0")
            let json = output == .json
            try await client.client().streamEvents(query: "?" + query.joined(separator: "&"), lastEventID: start) { id, type, data in
                // Written unbuffered so `--follow` shows each event as it arrives.
                if json {
                    FileHandle.standardOutput.write(data + Data("\n".utf8))
                } else {
                    let e = try? JSONCoding.parse(data)
                    FileHandle.standardOutput.write(Data("\(id)\t\(type)\t\(e?["subject"]?.stringValue ?? "")\t\(e?["time"]?.stringValue ?? "")\n".utf8))
                }
            }
        }
    }
}

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Create, list and revoke API tokens (admin).",
        subcommands: [Create.self, Revoke.self, List.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a token and print it (alone, on stdout; a device's MQTT client, when the server manages the broker, on stderr).")
        @Option(help: "admin, operator, app, device or integrator.")
        var role: String
        @Option(help: "A name for the token (used to revoke it).")
        var name: String
        @Option(help: "For --role device: the one resource it may report for.")
        var resource: String?
        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await runClientVerb {
                var body: [String: JSONValue] = ["name": .string(name), "role": .string(role)]
                if let resource { body["resource"] = .string(resource) }
                let reply = try await client.client().call(.POST, "/api/v1/tokens", body: JSONCoding.encode(JSONValue.object(body)))
                guard let token = reply.json?["token"]?.stringValue else { throw CLIError("the server sent no token") }
                print(token)
                // A device's own MQTT client (a broker managed with --mqtt-auth dynsec): shown once,
                // on stderr, so stdout stays the token alone.
                if let user = reply.json?["mqtt"]?["username"]?.stringValue, let password = reply.json?["mqtt"]?["password"]?.stringValue {
                    FileHandle.standardError.write(Data("MQTT client: username \(user), password \(password)\n".utf8))
                }
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token by name.")
        @Argument(help: "The token's name.")
        var name: String
        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await runClientVerb {
                _ = try await client.client().call(.DELETE, "/api/v1/tokens/\(percentEncode(name))")
                print("token/\(name) revoked")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tokens (never their secrets).")
        @OptionGroup var client: ClientOptions

        func run() async throws {
            try await runClientVerb {
                let reply = try await client.client().call(.GET, "/api/v1/tokens")
                var rows = [["NAME", "ROLE", "RESOURCE", "CREATED", "REVOKED"]]
                for t in reply.json?["items"]?.arrayValue ?? [] {
                    rows.append(["name", "role", "resource", "createdAt", "revokedAt"].map { t[$0]?.stringValue ?? "" })
                }
                print(Output.table(rows), terminator: "")
            }
        }
    }
}
