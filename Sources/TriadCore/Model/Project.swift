import Foundation

/// A project manifest (`kind: Project`, schemas/project.schema.json): the services a team builds
/// from git and runs in its mesh, each at a ref. The build manager turns a service's ref into an
/// artifact; the update controller puts that artifact live.
public struct ProjectManifest: Sendable, Equatable {
    public struct Build: Sendable, Equatable {
        /// Run in a clean checkout of the commit, as an argument vector (no shell unless named).
        public var command: [String]
        /// Where the build leaves its artifact, relative to the checkout.
        public var artifact: String
        /// Added to the build's otherwise empty environment (PATH and HOME aside).
        public var env: [String: String]
        public var timeoutSeconds: Double

        public init(command: [String], artifact: String, env: [String: String] = [:], timeoutSeconds: Double = ProjectManifest.defaultBuildTimeoutSeconds) {
            self.command = command
            self.artifact = artifact
            self.env = env
            self.timeoutSeconds = timeoutSeconds
        }
    }

    public struct Service: Sendable, Equatable {
        public var name: String
        /// A path, or a `file://`, `https://` or `ssh://` URL.
        public var repository: String
        /// A tag, a branch or a commit.
        public var ref: String
        public var build: Build
        /// How the artifact runs; `{artifact}` in an argument is the artifact's path.
        public var run: [String]
        public var health: String
        /// The mesh service this is.
        public var meshService: String

        public init(name: String, repository: String, ref: String, build: Build, run: [String], health: String, meshService: String) {
            self.name = name
            self.repository = repository
            self.ref = ref
            self.build = build
            self.run = run
            self.health = health
            self.meshService = meshService
        }
    }

    /// How the project's services run together (`triad project up`): the mesh's gateway and how
    /// pins travel.
    public struct Mesh: Sendable, Equatable {
        /// `HOST:PORT` where requests enter.
        public var listen: String
        /// The mesh service behind the gateway (one of the services' `meshService`).
        public var entryService: String
        /// `mesh` (the default) or `application`.
        public var pinPropagation: String
        /// Paths the gateway sends to other mesh services than the entry service.
        public var routes: [Route]
        /// The gateway's bound on requests in progress at each version (the mesh file's
        /// `gateway.maxInFlight`); nil: Envoy's own limits.
        public var maxInFlight: Int?
        /// The largest `maxInFlight`, here and in the mesh file.
        public static let maxInFlightLimit = 100_000

        public struct Route: Sendable, Equatable {
            public var prefix: String
            public var service: String
        }

        public init(listen: String, entryService: String, pinPropagation: String = "mesh", routes: [Route] = [], maxInFlight: Int? = nil) {
            self.listen = listen
            self.entryService = entryService
            self.pinPropagation = pinPropagation
            self.routes = routes
            self.maxInFlight = maxInFlight
        }
    }

    public static let kindName = "Project"
    public static let defaultBuildTimeoutSeconds = 600.0
    public static let maxBuildTimeoutSeconds = 7200.0

    public var name: String
    public var description: String?
    public var services: [Service]
    public var mesh: Mesh?

    public init(name: String, description: String? = nil, services: [Service], mesh: Mesh? = nil) {
        self.name = name
        self.description = description
        self.services = services
        self.mesh = mesh
    }

    /// `HOST:PORT` as the schema has it: a host name or IPv4 address, and a port from 1 to 65535.
    public static func isListenAddress(_ s: String) -> Bool {
        guard let colon = s.lastIndex(of: ":") else { return false }
        let host = s[..<colon].utf8
        let port = s[s.index(after: colon)...]
        let alnum: (UInt8) -> Bool = { (48...57).contains($0) || (65...90).contains($0) || (97...122).contains($0) }
        guard let first = host.first, let last = host.last, alnum(first), alnum(last),
            host.allSatisfy({ alnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }),
            (1...5).contains(port.count), port.first != "0", port.utf8.allSatisfy({ (48...57).contains($0) }), let n = Int(port)
        else { return false }
        return (1...65535).contains(n)
    }

    public func service(_ name: String) -> Service? { services.first { $0.name == name } }

    /// Every problem of a document at once.
    public struct Invalid: Error, Sendable, CustomStringConvertible {
        public var violations: [Violation]
        public var description: String {
            "the project is invalid (\(violations.count) problem\(violations.count == 1 ? "" : "s")):\n" + violations.map { "  \($0)" }.joined(separator: "\n")
        }
    }

    public static func parse(_ document: JSONValue) throws(Invalid) -> ProjectManifest {
        var w = Walker()
        w.object(document, at: "", required: ["apiVersion", "kind", "metadata", "spec"], allowed: ["apiVersion", "kind", "metadata", "spec", "status"]) {
            m, w in
            if let api = m["apiVersion"] { w.constant(api, Resource.apiVersion, at: "/apiVersion") }
            if let kind = m["kind"] { w.constant(kind, kindName, at: "/kind") }
            if let meta = m["metadata"] { w.metadata(meta, at: "/metadata") }
            if let spec = m["spec"] { w.projectSpec(spec, at: "/spec") }
            // The server's; ignored on input, but it must be what the schema says it is.
            if let status = m["status"], status.objectValue == nil { w.fail("/status", "must be an object, not \(status.typeName)") }
        }
        guard w.violations.isEmpty, case .object(let root) = document, let name = root["metadata"]?["name"]?.stringValue, let spec = root["spec"] else {
            throw Invalid(violations: w.violations)
        }
        let services = (spec["services"]?.arrayValue ?? []).map { s in
            let build = s["build"]
            return Service(
                name: s["name"]?.stringValue ?? "",
                repository: s["repository"]?.stringValue ?? "",
                ref: s["ref"]?.stringValue ?? "",
                build: Build(
                    command: build?["command"]?.arrayValue?.compactMap(\.stringValue) ?? [],
                    artifact: build?["artifact"]?.stringValue ?? "",
                    env: build?["env"]?.objectValue?.compactMapValues(\.stringValue) ?? [:],
                    timeoutSeconds: build?["timeout"]?.stringValue.flatMap(DurationText.seconds) ?? defaultBuildTimeoutSeconds),
                run: s["run"]?.arrayValue?.compactMap(\.stringValue) ?? [],
                health: s["health"]?.stringValue ?? "",
                meshService: s["meshService"]?.stringValue ?? "")
        }
        let mesh = spec["mesh"].map { m in
            Mesh(
                listen: m["gateway"]?["listen"]?.stringValue ?? "", entryService: m["gateway"]?["service"]?.stringValue ?? "",
                pinPropagation: m["pinPropagation"]?.stringValue ?? "mesh",
                routes: (m["gateway"]?["routes"]?.arrayValue ?? []).map {
                    Mesh.Route(prefix: $0["prefix"]?.stringValue ?? "", service: $0["service"]?.stringValue ?? "")
                },
                maxInFlight: m["gateway"]?["maxInFlight"]?.numberValue.map { Int($0) })
        }
        return ProjectManifest(name: name, description: spec["description"]?.stringValue, services: services, mesh: mesh)
    }
}

/// What git accepts as a repository and a ref from a manifest. Both reach `git` as arguments, so
/// neither may look like an option, and only the four transports the manifest documents pass
/// (not `ext::`, which runs a command).
public enum GitSyntax {
    public static func repositoryProblem(_ text: String) -> String? {
        if text.hasPrefix("-") { return "must not start with '-'" }
        if text.contains(where: { $0.isNewline || $0 == "\0" }) { return "must be one line" }
        for scheme in ["file://", "https://", "ssh://"] where text.hasPrefix(scheme) {
            return text.count > scheme.count ? nil : "names no repository after \(scheme)"
        }
        if text.contains("://") || text.contains("::") { return "must be a path or a file://, https:// or ssh:// URL" }
        return nil
    }

    /// Roughly `git check-ref-format`, plus no leading '-'.
    public static func refProblem(_ text: String) -> String? {
        if text.isEmpty { return "must not be empty" }
        if text.hasPrefix("-") { return "must not start with '-'" }
        if text.unicodeScalars.count > 255 { return "must be at most 255 characters" }
        let forbidden: Set<Character> = [" ", "~", "^", ":", "?", "*", "[", "\\"]
        if text.contains(where: { forbidden.contains($0) || $0.isNewline || ($0.asciiValue ?? 32) < 32 }) || text.contains("..") || text.contains("@{")
            || text.hasSuffix(".lock") || text.hasSuffix("/") || text.hasSuffix(".")
        {
            return "is not a valid git ref (a tag, a branch or a commit)"
        }
        return nil
    }
}

extension Walker {
    mutating func projectSpec(_ value: JSONValue, at p: String) {
        object(value, at: p, required: ["services"], allowed: ["description", "services", "mesh"]) { m, w in
            if let d = m["description"] { w.string(d, at: "\(p)/description", maxLength: 4096) }
            guard let services = m["services"] else { return }
            guard case .array(let items) = services, !items.isEmpty else { return w.fail("\(p)/services", "must be a non-empty array") }
            var seen: [String: Int] = [:]
            for (i, item) in items.enumerated() {
                let sp = "\(p)/services/\(i)"
                w.projectService(item, at: sp)
                guard let name = item["name"]?.stringValue else { continue }
                if let first = seen[name] {
                    w.fail("\(sp)/name", "duplicates the name of \(p)/services/\(first): each service needs its own")
                } else {
                    seen[name] = i
                }
            }
            if let mesh = m["mesh"] {
                let meshServices = items.compactMap { $0["meshService"]?.stringValue }
                w.projectMesh(mesh, at: "\(p)/mesh", services: meshServices)
            }
        }
    }

    mutating func projectService(_ value: JSONValue, at p: String) {
        object(
            value, at: p, required: ["name", "repository", "ref", "build", "run", "health", "meshService"],
            allowed: ["name", "repository", "ref", "build", "run", "health", "meshService"]
        ) { m, w in
            if let n = m["name"] { w.name(n, at: "\(p)/name") }
            if let n = m["meshService"] { w.name(n, at: "\(p)/meshService") }
            if let r = m["repository"], let s = w.string(r, at: "\(p)/repository", maxLength: 2048), let problem = GitSyntax.repositoryProblem(s) {
                w.fail("\(p)/repository", problem)
            }
            if let r = m["ref"], let s = w.string(r, at: "\(p)/ref"), let problem = GitSyntax.refProblem(s) { w.fail("\(p)/ref", problem) }
            if let h = m["health"], let s = w.string(h, at: "\(p)/health", maxLength: 2048), !s.hasPrefix("/") {
                w.fail("\(p)/health", "must be a path starting with '/'")
            }
            if let run = m["run"] { w.argumentVector(run, at: "\(p)/run") }
            if let build = m["build"] {
                w.object(build, at: "\(p)/build", required: ["command", "artifact"], allowed: ["command", "artifact", "env", "timeout"]) { b, w in
                    if let c = b["command"] { w.argumentVector(c, at: "\(p)/build/command") }
                    if let a = b["artifact"], let s = w.string(a, at: "\(p)/build/artifact", maxLength: 1024) {
                        let parts = s.split(separator: "/", omittingEmptySubsequences: false)
                        if s.isEmpty || s.hasPrefix("/") || parts.contains("..") {
                            w.fail("\(p)/build/artifact", "must be a path inside the checkout (relative, without '..')")
                        }
                    }
                    if let env = b["env"] {
                        w.stringMap(
                            env, at: "\(p)/build/env", maxEntries: 128, valueMaxLength: 4096,
                            keyRule: { key in
                                key.first.map { $0 == "_" || $0.isLetter } == true && key.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
                                    ? nil : "must be an environment variable name (letters, digits and '_', not starting with a digit)"
                            })
                    }
                    if let t = b["timeout"], let s = w.string(t, at: "\(p)/build/timeout") {
                        let limit = ProjectManifest.maxBuildTimeoutSeconds
                        if !(DurationText.seconds(s).map { $0 >= 1 && $0 <= limit } ?? false) {
                            w.fail("\(p)/build/timeout", "must be a duration from 1s to \(Int(limit / 3600))h (90s, 10m, 1h), not \"\(s)\"")
                        }
                    }
                }
            }
        }
    }

    mutating func projectMesh(_ value: JSONValue, at p: String, services: [String]) {
        object(value, at: p, required: ["gateway"], allowed: ["gateway", "pinPropagation"]) { m, w in
            if let g = m["gateway"] {
                w.object(g, at: "\(p)/gateway", required: ["listen", "service"], allowed: ["listen", "service", "routes", "maxInFlight"]) { gm, w in
                    if let routes = gm["routes"] { w.gatewayRoutes(routes, at: "\(p)/gateway/routes", services: services) }
                    let limit = ProjectManifest.Mesh.maxInFlightLimit
                    if let m = gm["maxInFlight"], !(m.numberValue.map { $0.rounded() == $0 && $0 >= 1 && $0 <= Double(limit) } ?? false) {
                        w.fail("\(p)/gateway/maxInFlight", "must be an integer from 1 to \(limit)")
                    }
                    if let l = gm["listen"], let s = w.string(l, at: "\(p)/gateway/listen"), !ProjectManifest.isListenAddress(s) {
                        w.fail("\(p)/gateway/listen", "must be HOST:PORT with a port from 1 to 65535, such as 127.0.0.1:8000")
                    }
                    if let sv = gm["service"] {
                        w.name(sv, at: "\(p)/gateway/service")
                        if let name = sv.stringValue, ResourceValidator.isValidName(name), !services.contains(name) {
                            w.fail("\(p)/gateway/service", "must be one of the services' meshService (\(services.joined(separator: ", ")))")
                        }
                    }
                }
            }
            if let pins = m["pinPropagation"], let s = w.string(pins, at: "\(p)/pinPropagation"), s != "mesh", s != "application" {
                w.fail("\(p)/pinPropagation", "must be mesh or application, not \"\(s)\"")
            }
        }
    }

    mutating func gatewayRoutes(_ value: JSONValue, at p: String, services: [String]) {
        guard case .array(let items) = value else { return fail(p, "must be an array of {prefix, service}") }
        var seen: [String: Int] = [:]
        for (i, item) in items.enumerated() {
            object(item, at: "\(p)/\(i)", required: ["prefix", "service"], allowed: ["prefix", "service"]) { r, w in
                if let v = r["prefix"], let prefix = w.string(v, at: "\(p)/\(i)/prefix", maxLength: 1024) {
                    let bad = prefix.unicodeScalars.contains { $0.properties.isWhitespace || $0 == "?" || $0 == "#" || $0.value < 0x20 || $0.value == 0x7F }
                    if !prefix.hasPrefix("/") || prefix.unicodeScalars.count < 2 || bad {
                        w.fail("\(p)/\(i)/prefix", "must be an HTTP path prefix other than / (no spaces, '?' or '#')")
                    } else if let first = seen[prefix] {
                        w.fail("\(p)/\(i)/prefix", "duplicates routes/\(first)")
                    } else {
                        seen[prefix] = i
                    }
                }
                if let sv = r["service"] {
                    w.name(sv, at: "\(p)/\(i)/service")
                    if let name = sv.stringValue, ResourceValidator.isValidName(name), !services.contains(name) {
                        w.fail("\(p)/\(i)/service", "must be one of the services' meshService (\(services.joined(separator: ", ")))")
                    }
                }
            }
        }
    }

    mutating func argumentVector(_ value: JSONValue, at p: String) {
        guard case .array(let items) = value, !items.isEmpty else { return fail(p, "must be a non-empty array of strings (the program, then its arguments)") }
        for (i, item) in items.enumerated() {
            if let s = string(item, at: "\(p)/\(i)", maxLength: 4096), i == 0, s.isEmpty { fail("\(p)/0", "must name a program") }
        }
    }
}
