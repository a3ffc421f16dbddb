import ArgumentParser
import Foundation
import NIOHTTP1
import TriadClient
import TriadCore

/// `triad project`: project manifests in the registry (docs/projects.md).
struct ProjectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "project",
        abstract: "Projects: the services a team builds from git. The server checks every repository and ref when a project is applied.",
        subcommands: [ProjectApply.self, ProjectGet.self, ProjectDescribe.self, ProjectDelete.self])
}

struct ProjectApply: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Create or replace projects from a file (YAML or JSON; - for stdin), and show what the server's check of their repositories found.",
        discussion: "Exits 1 when a project is refused or its check failed (the project is stored, with the failure in status.execResult).")

    @Option(name: .shortAndLong, help: "File to apply, or - for standard input.")
    var filename: String
    @OptionGroup var client: ClientOptions

    func run() async throws {
        try await runClientVerb {
            let data: Data
            if filename == "-" {
                data = FileHandle.standardInput.readDataToEndOfFile()
            } else {
                guard let d = FileManager.default.contents(atPath: filename) else { throw CLIError("cannot read \(filename)") }
                data = d
            }
            let docs: [JSONValue]
            do { docs = ApplyCommand.unpack(try DocumentReader.readAll(data, format: DocumentReader.sniff(data))) } catch {
                throw CLIError("\(filename): \((error as? DocumentSyntaxError)?.message ?? "\(error)")")
            }
            guard !docs.isEmpty else { throw CLIError("\(filename) holds no document") }
            let api = try client.client()
            var failed = 0
            for (index, doc) in docs.enumerated() {
                func fail(_ message: String) {
                    FileHandle.standardError.write(Data("error: \(filename) document \(index + 1): \(message)\n".utf8))
                    failed += 1
                }
                // Every problem at once, with the file and a pointer each, before anything is sent.
                do { _ = try ProjectManifest.parse(doc) } catch let invalid as ProjectManifest.Invalid {
                    fail(invalid.description)
                    continue
                }
                let name = doc["metadata"]?["name"]?.stringValue ?? ""
                do {
                    let reply = try await api.call(.PUT, "/api/v1/projects/\(name)", body: JSONCoding.encode(doc))
                    print("project/\(name) \(reply.status == 201 ? "created" : "configured")")
                    let check = reply.json?["status"]?["execResult"]
                    let result = check?["result"]?.stringValue ?? "not checked"
                    print("  check: \(result)\(check?["message"]?.stringValue.map { " — \($0)" } ?? "")")
                    if result != "Succeeded" {
                        for line in (check?["log"]?.stringValue ?? "").split(separator: "\n") { print("    \(line)") }
                        failed += 1
                    }
                } catch let failure as TriadClient.Failure {
                    fail("project/\(name): \(failure.description)")
                }
            }
            if failed > 0 { throw ExitCode(1) }
        }
    }
}

struct ProjectGet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "get", abstract: "List projects or show one.")

    @Argument(help: "A project name (omit to list).")
    var name: String?
    @Option(name: .shortAndLong, help: "Output: table, yaml or json.")
    var output: OutputFormat = .table
    @OptionGroup var client: ClientOptions

    func run() async throws {
        try await runClientVerb {
            let api = try client.client()
            let items: [JSONValue]
            if let name {
                items = [try await api.call(.GET, "/api/v1/projects/\(percentEncode(name))").json ?? .null]
            } else {
                items = try await api.call(.GET, "/api/v1/projects").json?["items"]?.arrayValue ?? []
            }
            switch output {
            case .json: print(Output.prettyJSON(name == nil ? .object(["kind": .string("ProjectList"), "items": .array(items)]) : items[0]))
            case .yaml: print(items.map { DocumentWriter.yaml($0) }.joined(separator: "---\n"), terminator: "")
            case .table, .wide:
                if items.isEmpty {
                    print("No projects found.")
                    return
                }
                var rows = [["NAME", "SERVICES", "CHECK", "AGE"]]
                for p in items {
                    rows.append([
                        p["metadata"]?["name"]?.stringValue ?? "",
                        (p["spec"]?["services"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue }.joined(separator: ","),
                        p["status"]?["execResult"]?["result"]?.stringValue ?? "-",
                        Output.age(p["metadata"]?["creationTimestamp"]?.stringValue),
                    ])
                }
                print(Output.table(rows), terminator: "")
            }
        }
    }
}

struct ProjectDescribe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "describe", abstract: "Show a project: its services, their refs and commits, and the last check.")

    @Argument(help: "The project name.")
    var name: String
    @OptionGroup var client: ClientOptions

    func run() async throws {
        try await runClientVerb {
            let p = try await client.client().call(.GET, "/api/v1/projects/\(percentEncode(name))").json ?? .null
            func line(_ key: String, _ value: String?) { print("\(key + ":")".padding(toLength: 20, withPad: " ", startingAt: 0) + (value ?? "<none>")) }
            line("Name", p["metadata"]?["name"]?.stringValue)
            line("Description", p["spec"]?["description"]?.stringValue)
            line("Generation", p["metadata"]?["generation"]?.numberValue.map { String(Int($0)) })
            line("Created", p["metadata"]?["creationTimestamp"]?.stringValue)
            print("Services:")
            var rows = [["  NAME", "REF", "COMMIT", "MESH SERVICE", "REPOSITORY"]]
            for s in p["spec"]?["services"]?.arrayValue ?? [] {
                let service = s["name"]?.stringValue ?? ""
                let checked = p["status"]?["services"]?[service]
                let commit = checked?["ref"] == s["ref"] ? checked?["commit"]?.stringValue.map { String($0.prefix(12)) } : nil
                rows.append([
                    "  " + service, s["ref"]?.stringValue ?? "", commit ?? "-", s["meshService"]?.stringValue ?? "", s["repository"]?.stringValue ?? "",
                ])
            }
            print(Output.table(rows), terminator: "")
            let check = p["status"]?["execResult"]
            print("Check:")
            line("  Result", check?["result"]?.stringValue)
            line("  Reason", check?["reason"]?.stringValue)
            line("  Message", check?["message"]?.stringValue)
            line("  Time", check?["time"]?.stringValue)
            if let log = check?["log"]?.stringValue {
                print("  Log:")
                for l in log.split(separator: "\n") { print("    \(l)") }
            }
        }
    }
}

struct ProjectDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a project.")

    @Argument(help: "The project name.")
    var name: String
    @OptionGroup var client: ClientOptions

    func run() async throws {
        try await runClientVerb {
            _ = try await client.client().call(.DELETE, "/api/v1/projects/\(percentEncode(name))")
            print("project/\(name) deleted")
        }
    }
}
