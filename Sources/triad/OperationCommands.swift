import ArgumentParser
import Foundation
import NIOHTTP1
import TriadClient
import TriadCore

struct InvokeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "invoke", abstract: "Invoke a resource's operation and print the upstream's answer.",
        discussion: "The call is recorded in the ledger (triad get invocations). An Exclusive resource must be bound by the caller first (triad bind).")

    @Argument(help: "The resource name.")
    var name: String
    @Argument(help: "The operation name.")
    var operation: String
    @Option(name: [.customShort("d"), .long], help: "JSON body, or @FILE to read it from a file.")
    var data: String?
    @Option(name: [.customShort("q"), .long], help: "Query parameter k=v for the upstream (repeatable; overrides the operation's own).")
    var query: [String] = []
    @Flag(help: "Return at once with the invocation (Prefer: respond-async); follow it with triad get invocations.")
    var async = false
    @Flag(help: "Invoke even when the resource is Failed (operators and admins).")
    var force = false
    @Option(name: .shortAndLong, help: "Output: the upstream's body (default), or json/yaml for the whole answer.")
    var output: InvokeOutput = .body
    @OptionGroup var client: ClientOptions

    enum InvokeOutput: String, ExpressibleByArgument, CaseIterable { case body, json, yaml }

    func run() async throws {
        try await runClientVerb {
            var body: Data?
            if let data {
                if data.hasPrefix("@") {
                    let path = String(data.dropFirst())
                    guard let contents = FileManager.default.contents(atPath: path) else { throw CLIError("cannot read \(path)") }
                    body = contents
                } else {
                    body = Data(data.utf8)
                }
                do { _ = try JSONCoding.parse(body!) } catch let error as DocumentSyntaxError { throw CLIError("--data is not JSON: \(error.message)") }
            }
            var parameters: [String] = []
            for pair in query {
                guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else { throw CLIError("--query takes k=v, not \(pair)") }
                parameters.append("\(percentEncode(String(pair[..<eq])))=\(percentEncode(String(pair[pair.index(after: eq)...])))")
            }
            if force { parameters.append("force=true") }
            let path =
                "/api/v1/resources/\(percentEncode(name))/operations/\(percentEncode(operation))"
                + (parameters.isEmpty ? "" : "?" + parameters.joined(separator: "&"))
            let reply = try await client.client().call(.POST, path, body: body, headers: async ? [("Prefer", "respond-async")] : [])
            guard let answer = reply.json else { throw CLIError("the server sent an unreadable answer") }
            switch output {
            case .json: print(Output.prettyJSON(answer))
            case .yaml: print(DocumentWriter.yaml(answer), terminator: "")
            case .body:
                if async {
                    let id = answer["invocation"]?["id"]?.stringValue ?? ""
                    print("invocation/\(id) \(answer["invocation"]?["state"]?.stringValue ?? "")")
                    return
                }
                switch answer["response"]?["body"] {
                case .string(let text)?: print(text)
                case .null?, nil: break
                case let value?: print(Output.prettyJSON(value))
                }
            }
        }
    }
}

struct BindCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bind", abstract: "Take (or renew) the exclusive binding of a resource for yourself.")

    @Argument(help: "The resource name.")
    var name: String
    @Option(help: "How long the binding lasts: seconds, or with a unit (90s, 5m, 2h). Default 300s.")
    var ttl: String?
    @Option(help: "Bind on behalf of this holder (operators and admins).")
    var holder: String?
    @OptionGroup var client: ClientOptions

    func run() async throws {
        try await runClientVerb {
            var body: [String: JSONValue] = [:]
            if let ttl {
                guard let seconds = Self.seconds(ttl) else { throw CLIError("--ttl must be a number of seconds or end in s, m or h, not \(ttl)") }
                body["ttlSeconds"] = .number(Double(seconds))
            }
            if let holder { body["holder"] = .string(holder) }
            let reply = try await client.client().call(
                .POST, "/api/v1/resources/\(percentEncode(name))/binding",
                body: JSONCoding.encode(JSONValue.object(body)))
            let answer = reply.json
            print("resource/\(name) bound by \(answer?["holder"]?.stringValue ?? "?") until \(answer?["expiresAt"]?.stringValue ?? "?")")
        }
    }

    static func seconds(_ text: String) -> Int? {
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600]
        if let unit = text.last, let factor = units[unit], let n = Int(text.dropLast()), n > 0, n <= 86_400 { return n * factor }
        if let n = Int(text), n > 0 { return n }
        return nil
    }
}

struct UnbindCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unbind", abstract: "Give back a resource's binding (yours; operators and admins: anyone's).")

    @Argument(help: "The resource name.")
    var name: String
    @OptionGroup var client: ClientOptions

    func run() async throws {
        try await runClientVerb {
            _ = try await client.client().call(.DELETE, "/api/v1/resources/\(percentEncode(name))/binding")
            print("resource/\(name) unbound")
        }
    }
}

/// `triad get invocations`: the ledger, newest first, with the total price of what it lists.
enum InvocationListing {
    static func run(resource: String?, caller: String?, output: OutputFormat, client: ClientOptions) async throws {
        let api = try client.client()
        var items: [JSONValue] = []
        var total = 0.0
        var continueToken: String?
        repeat {
            var query = ["limit=1000"]
            if let resource { query.append("resource=\(percentEncode(resource))") }
            if let caller { query.append("caller=\(percentEncode(caller))") }
            if let continueToken { query.append("continue=\(percentEncode(continueToken))") }
            let reply = try await api.call(.GET, "/api/v1/invocations?" + query.joined(separator: "&"))
            guard let list = reply.json else { throw CLIError("the server sent an unreadable list") }
            items += list["items"]?.arrayValue ?? []
            if continueToken == nil, case .number(let sum)? = list["metadata"]?["totalPrice"] { total = sum }
            continueToken = list["metadata"]?["continue"]?.stringValue
        } while continueToken != nil
        switch output {
        case .json:
            print(
                Output.prettyJSON(
                    .object([
                        "apiVersion": .string(Resource.apiVersion), "kind": .string("InvocationList"), "items": .array(items),
                        "metadata": .object(["totalPrice": .number(total)]),
                    ])))
        case .yaml:
            print(items.map { DocumentWriter.yaml($0) }.joined(separator: "---\n"), terminator: "")
        case .table, .wide:
            if items.isEmpty {
                print("No invocations found.")
                return
            }
            var rows = [["ID", "RESOURCE", "OPERATION", "CALLER", "STATE", "HTTP", "PRICE", "CHARGED", "AGE"]]
            for i in items {
                rows.append([
                    String((i["id"]?.stringValue ?? "").prefix(8)), i["resource"]?.stringValue ?? "", i["operation"]?.stringValue ?? "",
                    i["caller"]?.stringValue ?? "", i["state"]?.stringValue ?? "",
                    i["httpStatus"]?.numberValue.map { String(Int($0)) } ?? "-",
                    price(i["price"]?.numberValue ?? 0), price(i["charged"]?.numberValue ?? 0), Output.age(i["startedAt"]?.stringValue),
                ])
            }
            print(Output.table(rows), terminator: "")
            print("TOTAL CHARGED: \(price(total)) over \(items.count) invocation\(items.count == 1 ? "" : "s")")
        }
    }

    static func price(_ value: Double) -> String { String(format: "%.2f", value) }
}
