import Foundation
import TriadCore

/// Reads a mesh file (YAML or JSON) and checks it against schemas/mesh.schema.json plus the
/// rules the schema cannot say (names that must refer to something, no duplicates). Reports
/// every problem at once, so an operator fixes the file in one pass.
public enum MeshConfigParser {
    static let apiVersion = "triad.io/v1alpha1"
    // The schema's patterns (schemas/mesh.schema.json $defs), as predicates.
    static func isLower(_ c: Character) -> Bool { c.isASCII && c.isLowercase && c.isLetter }
    static func isDigit(_ c: Character) -> Bool { c.isASCII && c.isNumber }
    /// `^[a-z]([-a-z0-9]*[a-z0-9])?$`, at most 63 characters.
    static func dnsLabel(_ s: String) -> Bool {
        guard let first = s.first, let last = s.last, s.count <= 63 else { return false }
        return isLower(first) && (isLower(last) || isDigit(last)) && s.allSatisfy { isLower($0) || isDigit($0) || $0 == "-" }
    }
    /// `^[a-z0-9]([a-z0-9.]*[a-z0-9])?$`, at most 63 characters: no '-', so a pin splits at its last '-'.
    public static func versionName(_ s: String) -> Bool {
        guard let first = s.first, let last = s.last, s.count <= 63 else { return false }
        let ok: (Character) -> Bool = { isLower($0) || isDigit($0) }
        return ok(first) && ok(last) && s.allSatisfy { ok($0) || $0 == "." }
    }
    /// `HOST:PORT`: a host name or IPv4 address, or a bracketed IPv6 address.
    static func hostPortSyntax(_ s: String) -> Bool {
        guard let colon = s.lastIndex(of: ":") else { return false }
        let host = s[..<colon]
        let port = s[s.index(after: colon)...]
        guard !port.isEmpty, port.count <= 5, port.allSatisfy(isDigit), !host.isEmpty else { return false }
        if host.hasPrefix("[") {
            return host.hasSuffix("]") && host.count > 2 && host.dropFirst().dropLast().allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
        }
        let alnum: (Character) -> Bool = { $0.isASCII && ($0.isLetter || $0.isNumber) }
        return alnum(host.first!) && alnum(host.last!) && host.allSatisfy { alnum($0) || $0 == "-" || $0 == "." }
    }
    /// `^/[^\s?#]*(\?[^\s#]*)?$`
    /// A gateway route's prefix: a path longer than "/", nothing Envoy or a URL would read otherwise.
    static func routePrefix(_ s: String) -> Bool {
        s.hasPrefix("/") && s.count > 1 && s.count <= 1024
            && !s.contains(where: { $0.isWhitespace || $0 == "#" || $0 == "?" || $0.asciiValue.map { $0 < 0x20 || $0 == 0x7F } ?? false })
    }

    static func healthPath(_ s: String) -> Bool {
        s.hasPrefix("/") && !s.contains(where: { $0.isWhitespace || $0 == "#" }) && s.filter { $0 == "?" }.count <= 1
    }

    /// Reads `path`; commands will run in its directory.
    public static func load(path: String) throws -> MeshConfig {
        let url = URL(fileURLWithPath: path)
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw MeshConfigError(file: path, problems: [.init(path: "", message: "cannot read the file")])
        }
        return try parse(data, file: path, baseDirectory: url.deletingLastPathComponent().standardizedFileURL.path)
    }

    public static func parse(_ data: Data, file: String = "mesh.yaml", baseDirectory: String) throws -> MeshConfig {
        let document: JSONValue
        do { document = try DocumentReader.read(data, format: DocumentReader.sniff(data)) } catch {
            throw MeshConfigError(file: file, problems: [.init(path: "", message: error.message)])
        }
        var checker = Checker()
        let config = checker.mesh(document, baseDirectory: baseDirectory)
        guard checker.problems.isEmpty, let config else {
            throw MeshConfigError(file: file, problems: checker.problems)
        }
        return config
    }

    struct Checker {
        var problems: [MeshConfigError.Problem] = []

        mutating func fail(_ path: String, _ message: String) { problems.append(.init(path: path, message: message)) }

        mutating func object(_ value: JSONValue?, _ path: String, allowed: Set<String>, required: [String]) -> [String: JSONValue]? {
            guard let value else {
                fail(path, "is required")
                return nil
            }
            guard let members = value.objectValue else {
                fail(path, "must be an object, not \(value.typeName)")
                return nil
            }
            for key in members.keys.sorted() where !allowed.contains(key) {
                fail(join(path, key), "unknown field (allowed: \(allowed.sorted().joined(separator: ", ")))")
            }
            for key in required where members[key] == nil { fail(join(path, key), "is required") }
            return members
        }

        mutating func string(_ value: JSONValue?, _ path: String, matching pattern: ((String) -> Bool)? = nil, what: String = "") -> String? {
            guard let value else { return nil }
            guard let s = value.stringValue else {
                fail(path, "must be a string, not \(value.typeName)")
                return nil
            }
            if let pattern, !pattern(s) {
                fail(path, "\"\(s)\" is not \(what)")
                return nil
            }
            return s
        }

        func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

        mutating func hostPort(_ value: JSONValue?, _ path: String) -> HostPort? {
            guard let s = string(value, path) else { return nil }
            guard MeshConfigParser.hostPortSyntax(s), let hp = HostPort(s) else {
                fail(path, "\"\(s)\" is not HOST:PORT with a port from 1 to 65535")
                return nil
            }
            return hp
        }

        mutating func mesh(_ root: JSONValue, baseDirectory: String) -> MeshConfig? {
            guard let top = object(root, "", allowed: ["apiVersion", "kind", "metadata", "spec"], required: ["apiVersion", "kind", "metadata", "spec"]) else {
                return nil
            }
            if let v = top["apiVersion"], v.stringValue != MeshConfigParser.apiVersion {
                fail("apiVersion", "must be \(MeshConfigParser.apiVersion)")
            }
            if let v = top["kind"], v.stringValue != "Mesh" { fail("kind", "must be Mesh") }
            var name: String?
            if let metadata = top["metadata"], let m = object(metadata, "metadata", allowed: ["name"], required: ["name"]) {
                name = string(m["name"], "metadata.name", matching: MeshConfigParser.dnsLabel, what: "a DNS label (lower case letters, digits, '-')")
            }
            guard let specValue = top["spec"],
                let spec = object(specValue, "spec", allowed: ["gateway", "pinPropagation", "services"], required: ["gateway", "services"])
            else { return nil }

            var gateway: MeshConfig.Gateway?
            if let g = spec["gateway"],
                let gw = object(g, "spec.gateway", allowed: ["listen", "service", "routes", "maxInFlight"], required: ["listen", "service"])
            {
                let listen = hostPort(gw["listen"], "spec.gateway.listen")
                let service = string(gw["service"], "spec.gateway.service", matching: MeshConfigParser.dnsLabel, what: "a DNS label")
                let routes = gatewayRoutes(gw["routes"])
                var maxInFlight: Int?
                if let m = gw["maxInFlight"] {
                    if case .number(let d) = m, d.rounded() == d, d >= 1, d <= Double(MeshConfig.Gateway.maxInFlightLimit) {
                        maxInFlight = Int(d)
                    } else {
                        fail("spec.gateway.maxInFlight", "must be an integer from 1 to \(MeshConfig.Gateway.maxInFlightLimit)")
                    }
                }
                if let listen, let service { gateway = .init(listen: listen, service: service, routes: routes, maxInFlight: maxInFlight) }
            }

            var propagation = MeshConfig.PinPropagation.mesh
            if let p = spec["pinPropagation"] {
                if let s = p.stringValue, let mode = MeshConfig.PinPropagation(rawValue: s) {
                    propagation = mode
                } else {
                    fail("spec.pinPropagation", "must be mesh or application")
                }
            }

            var services: [MeshConfig.Service] = []
            if let list = spec["services"] {
                if let items = list.arrayValue {
                    if items.isEmpty { fail("spec.services", "must list at least one service") }
                    var seen: [String: Int] = [:]
                    for (i, item) in items.enumerated() {
                        let path = "spec.services[\(i)]"
                        guard let service = self.service(item, path) else { continue }
                        if let first = seen[service.name] {
                            fail("\(path).name", "duplicate service \"\(service.name)\" (also spec.services[\(first)])")
                            continue
                        }
                        seen[service.name] = i
                        services.append(service)
                    }
                } else {
                    fail("spec.services", "must be an array, not \(list.typeName)")
                }
            }

            // Judged against every name written, valid or not, so one mistake is reported once.
            let names = (spec["services"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue }
            if let gateway, !names.isEmpty, !names.contains(gateway.service) {
                fail("spec.gateway.service", "\"\(gateway.service)\" is not a service of this mesh (services: \(names.joined(separator: ", ")))")
            }
            for (i, route) in (gateway?.routes ?? []).enumerated() where !names.isEmpty && !names.contains(route.service) {
                fail("spec.gateway.routes[\(i)].service", "\"\(route.service)\" is not a service of this mesh (services: \(names.joined(separator: ", ")))")
            }
            guard problems.isEmpty, let name, let gateway else { return nil }
            return MeshConfig(name: name, gateway: gateway, pinPropagation: propagation, services: services, baseDirectory: baseDirectory)
        }

        mutating func gatewayRoutes(_ value: JSONValue?) -> [MeshConfig.Gateway.Route] {
            guard let value else { return [] }
            guard let items = value.arrayValue else {
                fail("spec.gateway.routes", "must be an array of {prefix, service}, not \(value.typeName)")
                return []
            }
            var routes: [MeshConfig.Gateway.Route] = []
            var seen: [String: Int] = [:]
            for (i, item) in items.enumerated() {
                let path = "spec.gateway.routes[\(i)]"
                guard let r = object(item, path, allowed: ["prefix", "service"], required: ["prefix", "service"]) else { continue }
                let prefix = string(
                    r["prefix"], "\(path).prefix", matching: MeshConfigParser.routePrefix, what: "an HTTP path prefix other than / (no spaces, '?' or '#')")
                let service = string(r["service"], "\(path).service", matching: MeshConfigParser.dnsLabel, what: "a DNS label")
                guard let prefix, let service else { continue }
                if let first = seen[prefix] {
                    fail("\(path).prefix", "duplicate prefix \"\(prefix)\" (also spec.gateway.routes[\(first)])")
                    continue
                }
                seen[prefix] = i
                routes.append(.init(prefix: prefix, service: service))
            }
            return routes
        }

        mutating func service(_ value: JSONValue, _ path: String) -> MeshConfig.Service? {
            guard let s = object(value, path, allowed: ["name", "default", "versions"], required: ["name", "default", "versions"]) else { return nil }
            let before = problems.count
            let name = string(s["name"], "\(path).name", matching: MeshConfigParser.dnsLabel, what: "a DNS label (lower case letters, digits, '-')")
            let def = string(s["default"], "\(path).default", matching: MeshConfigParser.versionName, what: "a version name (lower case letters, digits, '.')")
            var versions: [MeshConfig.Version] = []
            if let list = s["versions"] {
                if let items = list.arrayValue {
                    if items.isEmpty { fail("\(path).versions", "must list at least one version") }
                    var seen: [String: Int] = [:]
                    for (i, item) in items.enumerated() {
                        let vpath = "\(path).versions[\(i)]"
                        guard let v = version(item, vpath) else { continue }
                        if let first = seen[v.version] {
                            fail("\(vpath).version", "duplicate version \"\(v.version)\" of service \"\(name ?? "?")\" (also versions[\(first)])")
                            continue
                        }
                        seen[v.version] = i
                        versions.append(v)
                    }
                } else {
                    fail("\(path).versions", "must be an array, not \(list.typeName)")
                }
            }
            let written = (s["versions"]?.arrayValue ?? []).compactMap { $0["version"]?.stringValue }
            if let def, !written.isEmpty, !written.contains(def) {
                fail("\(path).default", "\"\(def)\" is not one of the service's versions (\(written.joined(separator: ", ")))")
            }
            guard problems.count == before, let name, let def else { return nil }
            return .init(name: name, defaultVersion: def, versions: versions)
        }

        mutating func version(_ value: JSONValue, _ path: String) -> MeshConfig.Version? {
            guard let v = object(value, path, allowed: ["version", "command", "upstream", "health", "replicas"], required: ["version"]) else { return nil }
            let before = problems.count
            let name = string(
                v["version"], "\(path).version", matching: MeshConfigParser.versionName, what: "a version name (lower case letters, digits, '.'; no '-')")
            var source: MeshConfig.Version.Source?
            switch (v["command"], v["upstream"]) {
            case (nil, nil):
                fail(path, "needs exactly one of command (Triad starts the instances) or upstream (already running); it has neither")
            case (.some, .some):
                fail(path, "needs exactly one of command or upstream; it has both")
            case (let command?, nil):
                if let items = command.arrayValue, !items.isEmpty {
                    let args = items.compactMap(\.stringValue)
                    if args.count != items.count {
                        fail("\(path).command", "must be an array of strings")
                    } else if args[0].isEmpty {
                        fail("\(path).command[0]", "the program must not be empty")
                    } else {
                        source = .command(args)
                    }
                } else {
                    fail("\(path).command", "must be a non-empty array of strings (program and arguments, no shell)")
                }
            case (nil, let upstream?):
                if let hp = hostPort(upstream, "\(path).upstream") { source = .upstream(hp) }
            }
            var health = "/healthz"
            if let h = v["health"] {
                if let s = string(h, "\(path).health"), s.count <= 1024, MeshConfigParser.healthPath(s) {
                    health = s
                } else if h.stringValue != nil {
                    fail("\(path).health", "must be an HTTP path starting with /")
                }
            }
            var replicas = 1
            if let r = v["replicas"] {
                if case .number(let d) = r, d.rounded() == d, d >= 1, d <= 1000 {
                    replicas = Int(d)
                } else {
                    fail("\(path).replicas", "must be an integer from 1 to 1000")
                }
                if case .upstream = source, replicas != 1 { fail("\(path).replicas", "must be 1 with upstream (Triad starts no instances)") }
            }
            guard problems.count == before, let name, let source else { return nil }
            return .init(version: name, source: source, health: health, replicas: replicas)
        }
    }
}
