import ArgumentParser
import Foundation
import NIOHTTP1
import TriadClient
import TriadCore

struct ApplyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply", abstract: "Create or replace resources from a file (multi-document YAML or JSON; - for stdin).")

    @Option(name: .shortAndLong, help: "File to apply, or - for standard input.")
    var filename: String
    @OptionGroup var client: ClientOptions

    func run() async throws {
        try await runClientVerb {
            let docs = try Self.documents(of: filename)
            let api = try client.client()
            var failed = 0
            for (index, doc) in docs.enumerated() {
                guard let name = doc["metadata"]?["name"]?.stringValue, ResourceValidator.isValidName(name) else {
                    FileHandle.standardError.write(Data("error: \(filename) document \(index + 1): metadata.name is missing or not a valid name\n".utf8))
                    failed += 1
                    continue
                }
                do {
                    let reply = try await api.call(.PUT, "/api/v1/resources/\(name)", body: JSONCoding.encode(doc))
                    print("resource/\(name) \(reply.status == 201 ? "created" : "configured")")
                } catch let failure as TriadClient.Failure {
                    FileHandle.standardError.write(Data("error: resource/\(name): \(failure.description)\n".utf8))
                    failed += 1
                }
            }
            if failed > 0 { throw ExitCode(1) }
        }
    }

    /// The documents of `filename` (- for standard input), unpacked; a file that cannot be read
    /// or parsed is an error naming it.
    static func documents(of filename: String) throws -> [JSONValue] {
        let data: Data
        if filename == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            guard let d = FileManager.default.contents(atPath: filename) else { throw CLIError("cannot read \(filename)") }
            data = d
        }
        do { return unpack(try DocumentReader.readAll(data, format: DocumentReader.sniff(data))) } catch {
            throw CLIError("\(filename): \(error.message)")
        }
    }

    /// Documents of a file: YAML documents, or JSON arrays and `List` objects unpacked; empty ones skipped.
    static func unpack(_ docs: [JSONValue]) -> [JSONValue] {
        docs.flatMap { doc -> [JSONValue] in
            switch doc {
            case .null: return []
            case .array(let items): return items
            case .object(let m) where (m["kind"]?.stringValue ?? "").hasSuffix("List"): return m["items"]?.arrayValue ?? []
            default: return [doc]
            }
        }
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, wide, yaml, json
}

struct GetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "get", abstract: "List resources or show one.")

    @Argument(help: "What to get: resources or invocations.")
    var type: String
    @Argument(help: "A resource name (omit to list).")
    var name: String?
    @Option(help: "invocations: only those of this resource.")
    var resource: String?
    @Option(help: "invocations: only those of this caller (a token name).")
    var caller: String?
    @Option(name: [.customShort("l"), .long], help: "Label selector, e.g. triad.io/space=pantry-3f.")
    var selector: String?
    @Option(help: "Only this kind: Device, Person or Space.")
    var kind: String?
    @Option(name: .shortAndLong, help: "Output: table, wide, yaml or json.")
    var output: OutputFormat = .table
    @OptionGroup var client: ClientOptions

    func validate() throws {
        guard ["resources", "resource", "res", "invocations", "invocation"].contains(type) else {
            throw ValidationError("unknown type \(type); use: triad get resources, or triad get invocations")
        }
    }

    func run() async throws {
        try await runClientVerb {
            if type.hasPrefix("invocation") {
                guard name == nil else { throw CLIError("triad get invocations takes --resource and --caller, not a name") }
                try await InvocationListing.run(resource: resource, caller: caller, output: output, client: client)
                return
            }
            let api = try client.client()
            if let name {
                let reply = try await api.call(.GET, "/api/v1/resources/\(percentEncode(name))")
                guard let doc = reply.json else { throw CLIError("the server sent an unreadable document") }
                print(Output.render([doc], as: output, single: true), terminator: "")
                return
            }
            var items: [JSONValue] = []
            var continueToken: String?
            repeat {
                var query = ["limit=500"]
                if let selector { query.append("labelSelector=\(percentEncode(selector))") }
                if let kind { query.append("kind=\(percentEncode(kind))") }
                if let continueToken { query.append("continue=\(percentEncode(continueToken))") }
                let reply = try await api.call(.GET, "/api/v1/resources?" + query.joined(separator: "&"))
                guard let list = reply.json else { throw CLIError("the server sent an unreadable list") }
                items += list["items"]?.arrayValue ?? []
                continueToken = list["metadata"]?["continue"]?.stringValue
            } while continueToken != nil
            print(Output.render(items, as: output, single: false), terminator: "")
        }
    }
}

struct DescribeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "describe", abstract: "Show a resource: spec, status, conditions and recent events.")

    @Argument(help: "What to describe: resource.")
    var type: String
    @Argument(help: "The resource name.")
    var name: String
    @OptionGroup var client: ClientOptions

    func validate() throws {
        guard ["resources", "resource", "res"].contains(type) else { throw ValidationError("unknown type \(type); use: triad describe resource NAME") }
    }

    func run() async throws {
        try await runClientVerb {
            let api = try client.client()
            let reply = try await api.call(.GET, "/api/v1/resources/\(percentEncode(name))")
            guard let doc = reply.json else { throw CLIError("the server sent an unreadable document") }
            print(Output.describe(doc), terminator: "")
            // Recent events: the retained log's tail, filtered to this resource.
            let revision = Int64(doc["metadata"]?["resourceVersion"]?.stringValue ?? "0") ?? 0
            let since = max(0, revision - 1000)
            let lines = EventLines()
            let target = name
            do {
                try await api.streamEvents(query: "?follow=false&since=\(since)", lastEventID: nil) { id, type, data in
                    let event = try? JSONCoding.parse(data)
                    // A project may share the name: only this resource's events.
                    if event?["subject"]?.stringValue == target, event?["source"]?.stringValue == "/triad/resources/\(target)" {
                        await lines.add("  \(id)\t\(type)\t\(event?["time"]?.stringValue ?? "")")
                    }
                }
            } catch let failure as TriadClient.Failure where failure.status == 403 || failure.status == 410 {
                await lines.add("  (not available: \(failure.description))")
            }
            print("Events:")
            let recent = await lines.lines.suffix(10)
            print(recent.isEmpty ? "  <none>" : recent.joined(separator: "\n"))
            // The last invocations, as far as the caller may read the ledger.
            print("Invocations:")
            do {
                let ledger = try await api.call(.GET, "/api/v1/invocations?resource=\(percentEncode(name))&limit=5").json
                let items = ledger?["items"]?.arrayValue ?? []
                if items.isEmpty { print("  <none>") }
                for i in items {
                    let status = i["httpStatus"]?.numberValue.map { " HTTP \(Int($0))" } ?? ""
                    print(
                        "  \(i["startedAt"]?.stringValue ?? "")\t\(i["operation"]?.stringValue ?? "")\t\(i["caller"]?.stringValue ?? "")\t\(i["state"]?.stringValue ?? "")\(status)\tcharged \(InvocationListing.price(i["charged"]?.numberValue ?? 0))"
                    )
                }
            } catch let failure as TriadClient.Failure where failure.status == 403 {
                print("  (not available: \(failure.description))")
            }
        }
    }
}

actor EventLines {
    var lines: [String] = []
    func add(_ line: String) { lines.append(line) }
}

struct DeleteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a resource.")

    @Argument(help: "What to delete: resource.")
    var type: String
    @Argument(help: "The resource name.")
    var name: String
    @OptionGroup var client: ClientOptions

    func validate() throws {
        guard ["resources", "resource", "res"].contains(type) else { throw ValidationError("unknown type \(type); use: triad delete resource NAME") }
    }

    func run() async throws {
        try await runClientVerb {
            _ = try await client.client().call(.DELETE, "/api/v1/resources/\(percentEncode(name))")
            print("resource/\(name) deleted")
        }
    }
}
