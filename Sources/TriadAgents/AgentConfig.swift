import Foundation
import TriadAMQP
import TriadCore

/// What `triad agent --config FILE` hosts (schemas/agent.schema.json, docs/agents.md): where
/// Triad is, where the host listens and is reached, Home Assistant, and the agents.
public struct AgentConfig: Sendable, Equatable {
    public struct Triad: Sendable, Equatable {
        public var url: String
        /// The host's own token (operator or admin): it upserts the agents' resources and
        /// reports their status.
        public var token: String
        /// The RabbitMQ the server consumes `triad.state` from: status goes there, not over REST.
        public var amqp: String?
    }

    public struct HomeAssistant: Sendable, Equatable {
        public var url: String
        /// A long-lived access token, read from a file or the environment, never a flag.
        public var token: String
    }

    public enum DeviceType: String, Sendable, CaseIterable {
        case fan, `switch`, light
    }

    public struct Device: Sendable, Equatable {
        public var type: DeviceType
        /// The entity id when the host starts; the agent then follows its registry `unique_id`.
        public var entity: String
    }

    public struct Person: Sendable, Equatable {
        /// The person's own app token: their invocations are theirs in the ledger.
        public var token: String
        public var location: String?
    }

    public enum Kind: Sendable, Equatable {
        case device(Device)
        case person(Person)
    }

    public struct Agent: Sendable, Equatable {
        public var name: String
        public var kind: Kind
        public var labels: [String: String]
        /// Operation name → price; an operation not named costs 0.
        public var prices: [String: Double]
        public var accessMode: String
    }

    public var triad: Triad
    public var listenHost: String
    public var listenPort: Int
    /// The base URL the agents' `httpAction`s point at (a mesh gateway may sit there); by
    /// default the listener's own address, known once it listens.
    public var advertiseURL: String?
    public var heartbeatSeconds: Double
    public var homeAssistant: HomeAssistant?
    public var agents: [Agent]

    /// One thing wrong with the file: where (a JSON pointer) and why.
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public var file: String
        public var pointer: String
        public var reason: String
        public var description: String { "\(file): \(pointer.isEmpty ? "/" : pointer): \(reason)" }
    }

    /// Every problem of a file, not only the first.
    public struct Invalid: Error, Sendable, CustomStringConvertible {
        public var problems: [Problem]
        public var description: String {
            "the agent configuration is invalid (\(problems.count) problem\(problems.count == 1 ? "" : "s")):\n"
                + problems.map { "  \($0)" }.joined(separator: "\n")
        }
    }

    /// Reads and checks `path`; token files are read relative to the file's directory.
    /// `environment` supplies `TRIAD_TOKEN` and `HA_TOKEN` when no file is named.
    public static func load(path: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws(Invalid) -> AgentConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Invalid(problems: [Problem(file: path, pointer: "", reason: "cannot read the file")])
        }
        let tree: JSONValue
        do { tree = try DocumentReader.read(data, format: .yaml) } catch {
            throw Invalid(problems: [Problem(file: path, pointer: "", reason: error.message)])
        }
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        return try parse(tree, file: path, directory: directory, environment: environment)
    }

    static func parse(_ tree: JSONValue, file: String, directory: String, environment: [String: String]) throws(Invalid) -> AgentConfig {
        var problems: [Problem] = []
        func problem(_ pointer: String, _ reason: String) { problems.append(Problem(file: file, pointer: pointer, reason: reason)) }
        func object(_ value: JSONValue?, _ pointer: String, allowed: Set<String>) -> [String: JSONValue]? {
            guard let value else { return nil }
            guard case .object(let members) = value else {
                problem(pointer, "must be a map")
                return nil
            }
            for key in members.keys.sorted() where !allowed.contains(key) {
                problem(pointer + "/" + key, "is not a known key; known: \(allowed.sorted().joined(separator: ", "))")
            }
            return members
        }
        func string(_ members: [String: JSONValue]?, _ key: String, _ pointer: String, required: Bool = false) -> String? {
            guard let value = members?[key] else {
                if required && members != nil { problem(pointer + "/" + key, "is required") }
                return nil
            }
            guard case .string(let s) = value, !s.isEmpty else {
                problem(pointer + "/" + key, "must be a non-empty string")
                return nil
            }
            return s
        }
        func url(_ members: [String: JSONValue]?, _ key: String, _ pointer: String, required: Bool = false) -> String? {
            guard let text = string(members, key, pointer, required: required) else { return nil }
            guard let c = URLComponents(string: text), ["http", "https"].contains(c.scheme ?? ""), c.host?.isEmpty == false else {
                problem(pointer + "/" + key, "must be an http(s) URL with a host, not \(text)")
                return nil
            }
            return text.hasSuffix("/") ? String(text.dropLast()) : text
        }
        /// A secret from `tokenFile` (relative to the config file) or an environment variable.
        func secret(_ members: [String: JSONValue]?, _ pointer: String, environmentKey: String, what: String) -> String? {
            if let path = string(members, "tokenFile", pointer) {
                let full = path.hasPrefix("/") ? path : directory + "/" + path
                guard let data = FileManager.default.contents(atPath: full) else {
                    problem(pointer + "/tokenFile", "cannot read the token file \(full)")
                    return nil
                }
                let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                guard !token.isEmpty else {
                    problem(pointer + "/tokenFile", "the token file \(full) is empty")
                    return nil
                }
                return token
            }
            let key = string(members, "tokenEnv", pointer) ?? environmentKey
            guard let token = environment[key], !token.isEmpty else {
                problem(pointer, "needs \(what): tokenFile, or the environment variable \(key)")
                return nil
            }
            return token
        }

        let root = object(tree, "", allowed: ["triad", "listen", "advertiseURL", "heartbeatSeconds", "homeAssistant", "agents"]) ?? [:]
        if case .object = tree {} else { try fail(problems) }

        let triadMembers = object(root["triad"], "/triad", allowed: ["url", "tokenFile", "tokenEnv", "amqp"])
        if triadMembers == nil && root["triad"] == nil { problem("/triad", "is required (url and token of the Triad server)") }
        let triadURL = url(triadMembers, "url", "/triad", required: true)
        let triadToken = triadMembers == nil ? nil : secret(triadMembers, "/triad", environmentKey: "TRIAD_TOKEN", what: "a Triad token")
        let amqp = string(triadMembers, "amqp", "/triad")
        if let amqp {
            do { _ = try AMQPEndpoint(url: amqp) } catch { problem("/triad/amqp", "must be an amqp:// URL: \(error.description)") }
        }

        var listenHost = "127.0.0.1"
        var listenPort = 8090
        if let listen = string(root, "listen", "") {
            if let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port),
                colon > listen.startIndex
            {
                var host = String(listen[..<colon])
                if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
                (listenHost, listenPort) = (host, port)
            } else {
                problem("/listen", "must be HOST:PORT, e.g. 127.0.0.1:8090")
            }
        }
        let advertise = url(root, "advertiseURL", "")
        var heartbeat = 10.0
        if let value = root["heartbeatSeconds"] {
            if let n = value.numberValue, n >= 1, n <= 300 { heartbeat = n } else { problem("/heartbeatSeconds", "must be a number from 1 to 300") }
        }

        let haMembers = object(root["homeAssistant"], "/homeAssistant", allowed: ["url", "tokenFile", "tokenEnv"])
        let haURL = url(haMembers, "url", "/homeAssistant", required: true)
        let haToken = haMembers == nil ? nil : secret(haMembers, "/homeAssistant", environmentKey: "HA_TOKEN", what: "a Home Assistant long-lived token")

        var agents: [Agent] = []
        var seen: [String: Int] = [:]
        var needsHomeAssistant = false
        if let list = root["agents"] {
            if case .array(let items) = list, !items.isEmpty {
                for (i, item) in items.enumerated() {
                    let at = "/agents/\(i)"
                    guard let m = object(item, at, allowed: ["name", "device", "person", "labels", "prices", "accessMode"]) else { continue }
                    let name = string(m, "name", at, required: true)
                    if let name {
                        if !ResourceValidator.isValidName(name) { problem(at + "/name", "must be a DNS-1123 label of at most 63 characters") }
                        if let first = seen[name] { problem(at + "/name", "\"\(name)\" is already the name of /agents/\(first)") } else { seen[name] = i }
                    }
                    var kind: Kind?
                    switch (m["device"], m["person"]) {
                    case (nil, nil), (.some, .some): problem(at, "must have exactly one of device and person")
                    case (.some(let d), nil):
                        needsHomeAssistant = true
                        let dm = object(d, at + "/device", allowed: ["type", "entity"])
                        let typeText = string(dm, "type", at + "/device", required: true)
                        let type = typeText.flatMap(DeviceType.init(rawValue:))
                        if let typeText, type == nil {
                            problem(
                                at + "/device/type",
                                "unknown device type \"\(typeText)\"; known: \(DeviceType.allCases.map(\.rawValue).joined(separator: ", "))")
                        }
                        let entity = string(dm, "entity", at + "/device", required: true)
                        if let entity, let type, !entity.hasPrefix(type.rawValue + ".") || entity.count <= type.rawValue.count + 1 {
                            problem(at + "/device/entity", "a \(type.rawValue) is an entity \(type.rawValue).<id>, not \(entity)")
                        }
                        if let type, let entity { kind = .device(Device(type: type, entity: entity)) }
                    case (nil, .some(let p)):
                        let pm = object(p, at + "/person", allowed: ["tokenFile", "tokenEnv", "location"])
                        let token = pm == nil ? nil : secret(pm, at + "/person", environmentKey: "TRIAD_PERSON_TOKEN", what: "the person's app token")
                        let location = string(pm, "location", at + "/person")
                        if let location, !ResourceValidator.isValidName(location) { problem(at + "/person/location", "must name a space (a resource name)") }
                        if let token { kind = .person(Person(token: token, location: location)) }
                    }
                    var labels: [String: String] = [:]
                    if let l = m["labels"] {
                        if case .object(let members) = l {
                            for (k, v) in members { if case .string(let s) = v { labels[k] = s } else { problem(at + "/labels/" + k, "must be a string") } }
                        } else {
                            problem(at + "/labels", "must be a map of strings")
                        }
                    }
                    var prices: [String: Double] = [:]
                    if let p = m["prices"] {
                        if case .object(let members) = p {
                            for (k, v) in members {
                                if let n = v.numberValue, n >= 0, n <= 1e9 {
                                    prices[k] = n
                                } else {
                                    problem(at + "/prices/" + k, "must be a number from 0 to 1e9")
                                }
                            }
                        } else {
                            problem(at + "/prices", "must be a map of operation names to prices")
                        }
                    }
                    let accessMode = string(m, "accessMode", at) ?? "Exclusive"
                    if !["Exclusive", "Shared"].contains(accessMode) { problem(at + "/accessMode", "must be Exclusive or Shared") }
                    if m["person"] != nil, accessMode != "Exclusive" {
                        // The agent holds the person's lease with the person's token: only they invoke.
                        problem(at + "/accessMode", "a person is Exclusive: its agent holds the lease for the person, so only the person's token invokes it")
                    }
                    if let name, let kind { agents.append(Agent(name: name, kind: kind, labels: labels, prices: prices, accessMode: accessMode)) }
                }
            } else {
                problem("/agents", "must be a non-empty list")
            }
        } else {
            problem("/agents", "is required")
        }
        if needsHomeAssistant && root["homeAssistant"] == nil { problem("/homeAssistant", "is required: device agents talk to Home Assistant") }

        guard problems.isEmpty, let triadURL, let triadToken else { try fail(problems) }
        return AgentConfig(
            triad: Triad(url: triadURL, token: triadToken, amqp: amqp), listenHost: listenHost, listenPort: listenPort,
            advertiseURL: advertise,
            heartbeatSeconds: heartbeat,
            homeAssistant: haURL.flatMap { u in haToken.map { HomeAssistant(url: u, token: $0) } },
            agents: agents)
    }

    private static func fail(_ problems: [Problem]) throws(Invalid) -> Never {
        throw Invalid(problems: problems)
    }
}
