import Foundation
import Hummingbird
import TriadCore
import TriadDevops

/// `/api/v1/projects` (docs/projects.md): project documents with the resources' rules. A write
/// that changes a project's spec is answered once its repositories and refs have been checked
/// where they live (`git ls-remote`, in parallel), the outcome in `status.execResult`.
struct ProjectRoutes {
    let registry: Registry
    let reader: RequestReader
    let check: ProjectCheck
    /// Called after every successful write (wakes event streams).
    let written: @Sendable () -> Void

    func register(_ routes: RouteTable) {
        routes.on(.get, "/api/v1/projects", list)
        routes.on(.post, "/api/v1/projects", create)
        routes.on(.get, "/api/v1/projects/{name}", get)
        routes.on(.put, "/api/v1/projects/{name}", replace)
        routes.on(.delete, "/api/v1/projects/{name}", delete)
        routes.on(.post, "/api/v1/projects/{name}/updates", recordUpdate)
    }

    @Sendable func list(_ request: Request, context: TriadRequestContext) async throws -> Response {
        _ = try context.require(.readProjects)
        let revision = try await registry.log.latestRevision()
        let items = try await registry.projects()
        var out = Data(#"{"apiVersion":"triad.io/v1alpha1","items":["#.utf8)
        for (i, item) in items.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.append(item.document)
        }
        out.append(contentsOf: Array(#"],"kind":"ProjectList","metadata":"#.utf8))
        out.append(JSONCoding.encode(["resourceVersion": String(revision)]))
        out.append(UInt8(ascii: "}"))
        return .json(.ok, out)
    }

    @Sendable func get(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let name = try context.parameters.name()
        _ = try context.require(.readProjects)
        return .project(try await named(name) { try await registry.project(name) })
    }

    @Sendable func create(_ request: Request, context: TriadRequestContext) async throws -> Response {
        _ = try context.require(.writeProjects)
        let tree = try await reader.tree(request, kind: .document)
        let (record, _) = try await write { try await registry.applyProject(tree, precondition: nil, onlyCreate: true) }
        return .project(try await checked(record), status: .created, location: true)
    }

    @Sendable func replace(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let name = try context.parameters.name()
        _ = try context.require(.writeProjects)
        let tree = try await reader.tree(request, kind: .document)
        if let bodyName = tree["metadata"]?["name"]?.stringValue, bodyName != name {
            throw Problem.invalid([Violation(pointer: "/metadata/name", message: "must match the name in the URL (\(name))")])
        }
        let precondition = try reader.precondition(request, bodyVersion: try reader.bodyVersion(tree))
        let (record, created) = try await write { try await registry.applyProject(tree, precondition: precondition) }
        return .project(try await checked(record), status: created ? .created : .ok, location: created)
    }

    @Sendable func delete(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let name = try context.parameters.name()
        _ = try context.require(.writeProjects)
        let precondition = try reader.precondition(request, bodyVersion: nil)
        return .project(try await named(name) { try await write { try await registry.deleteProject(name, precondition: precondition) } })
    }

    /// An update of one service (`triad project update`, which runs it where the project's mesh
    /// runs): appended to `status.history` with who recorded it and when; one that put its
    /// version live becomes the service's `status.current`.
    @Sendable func recordUpdate(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let name = try context.parameters.name()
        let principal = try context.require(.writeProjects)
        let body = try await reader.tree(request, kind: .document)
        let project = try await named(name) { try await registry.project(name) }
        let services = (try? ProjectManifest.parse(JSONCoding.parse(project.document)))?.services.map(\.name) ?? []
        var entry = try ProjectUpdateRecord.validate(body, services: services)
        entry["by"] = .string(principal.name)
        let live = ["Succeeded", "Forced"].contains(entry["outcome"]?.stringValue ?? "")
        let service = entry["service"]?.stringValue ?? ""
        let record = try await named(name) {
            try await write { try await registry.recordProjectUpdate(name, service: service, entry: entry, current: live ? entry["to"]?.objectValue : nil) }
        }
        return .project(record, status: .created)
    }

    /// The project once its repositories have been checked, if its spec changed since the last check.
    private func checked(_ record: StoredProject) async throws -> StoredProject {
        let document = try JSONCoding.parse(record.document)
        let generation = document["metadata"]?["generation"]
        guard document["status"]?["observedGeneration"] != generation, let manifest = try? ProjectManifest.parse(document) else { return record }
        var status = await check.run(manifest)
        status["observedGeneration"] = generation
        do {
            let updated = try await registry.writeProjectStatus(record.name, status, ifRevision: record.revision)
            written()
            return updated
        } catch RegistryError.conflict(_, _), RegistryError.notFound(_) {
            // Written again (or deleted) meanwhile: that write's own check records what it found.
            return try await registry.project(record.name)
        }
    }

    private func write<T>(_ body: () async throws -> T) async throws -> T {
        let result = try await body()
        written()
        return result
    }

    /// A missing project is named as one (the registry's error speaks of resources).
    private func named<T>(_ name: String, _ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch RegistryError.notFound(_) {
            throw Problem.notFound("project \"\(name)\" does not exist")
        }
    }
}

/// Checks every service's repository and ref where it lives (`git ls-remote`), all at once, each
/// within the git client's time limit; the outcome is a project status (docs/projects.md). An
/// https or ssh repository's host must be on the server's allowed hosts, as an operation's URL
/// must: the server is never made to reach elsewhere.
struct ProjectCheck: Sendable {
    let git: GitRepositories
    let addressing: UpstreamAddressing
    let clock: @Sendable () -> Date

    func resolve(_ service: ProjectManifest.Service) async throws(GitRepositories.Failure) -> String {
        if service.repository.contains("://"), !service.repository.hasPrefix("file://") {
            guard let host = URLComponents(string: service.repository)?.host, !host.isEmpty else {
                throw GitRepositories.Failure("repository \(service.repository) names no host")
            }
            do { _ = try await addressing.target(host: host) } catch {
                throw GitRepositories.Failure("repository \(service.repository): \(error.reason)")
            }
        }
        return try await git.resolve(service.repository, ref: service.ref)
    }

    func run(_ manifest: ProjectManifest) async -> [String: JSONValue] {
        let outcomes = await withTaskGroup(of: (String, String, Result<String, GitRepositories.Failure>).self) { group in
            for service in manifest.services {
                group.addTask {
                    do throws(GitRepositories.Failure) {
                        return (service.name, service.ref, .success(try await resolve(service)))
                    } catch {
                        return (service.name, service.ref, .failure(error))
                    }
                }
            }
            var all: [(String, String, Result<String, GitRepositories.Failure>)] = []
            for await outcome in group { all.append(outcome) }
            return all.sorted { $0.0 < $1.0 }
        }
        var services: [String: JSONValue] = [:]
        var failures: [String] = []
        for (name, ref, outcome) in outcomes {
            switch outcome {
            case .success(let commit): services[name] = .object(["ref": .string(ref), "commit": .string(commit)])
            case .failure(let failure): failures.append("\(name): \(failure.description)")
            }
        }
        var result: [String: JSONValue] = ["time": .string(Timestamp.format(clock()))]
        if failures.isEmpty {
            result["result"] = .string("Succeeded")
            result["reason"] = .string("RepositoriesChecked")
            result["message"] = .string(
                "every repository reachable and every ref found (\(manifest.services.count) service\(manifest.services.count == 1 ? "" : "s"))")
        } else {
            result["result"] = .string("Failed")
            result["reason"] = .string("RepositoryCheckFailed")
            result["message"] = .string(failures.map { String($0.split(separator: "\n").first ?? "") }.joined(separator: "; "))
            // The log tail: what git said, for each service that failed.
            result["log"] = .string(String(failures.joined(separator: "\n").suffix(4096)))
        }
        return ["execResult": .object(result), "services": .object(services)]
    }
}

/// The body of `POST /api/v1/projects/{name}/updates`: checked field by field, every problem at once.
enum ProjectUpdateRecord {
    static let outcomes = ["Succeeded", "Failed", "RolledBack", "Forced"]
    static let strategies = ["CV", "BF", "WF", "rolling"]

    static func validate(_ body: JSONValue, services: [String]) throws -> [String: JSONValue] {
        guard case .object(let fields) = body else {
            throw Problem.invalid([Violation(pointer: "", message: "must be an object {service, strategy, outcome, from, to, ...}")], what: "update")
        }
        var violations: [Violation] = []
        let known: Set = ["service", "strategy", "outcome", "reason", "from", "to", "drainedTransactions", "durationSeconds"]
        violations += fields.keys.filter { !known.contains($0) }.sorted().map {
            Violation(pointer: "/\($0)", message: "is not an update field (\(known.sorted().joined(separator: ", ")))")
        }
        func oneOf(_ key: String, _ allowed: [String]) {
            guard let value = fields[key]?.stringValue, allowed.contains(value) else {
                violations.append(Violation(pointer: "/\(key)", message: "must be one of \(allowed.joined(separator: ", "))"))
                return
            }
        }
        oneOf("service", services)
        oneOf("strategy", strategies)
        oneOf("outcome", outcomes)
        if let reason = fields["reason"], (reason.stringValue?.unicodeScalars.count ?? .max) > 4096 {
            violations.append(Violation(pointer: "/reason", message: "must be a string of at most 4096 characters"))
        }
        for key in ["from", "to"] {
            guard let value = fields[key] else {
                if key == "to" { violations.append(Violation(pointer: "/to", message: "is required: {ref, commit, version}")) }
                continue
            }
            guard case .object(let version) = value else {
                violations.append(Violation(pointer: "/\(key)", message: "must be an object {ref, commit, version}"))
                continue
            }
            violations += version.keys.filter { !["ref", "commit", "version"].contains($0) }.sorted().map {
                Violation(pointer: "/\(key)/\($0)", message: "is not a version field (ref, commit, version)")
            }
            if let ref = version["ref"]?.stringValue, (1...255).contains(ref.unicodeScalars.count) {
            } else {
                violations.append(Violation(pointer: "/\(key)/ref", message: "must be a string of 1 to 255 characters"))
            }
            if let commit = version["commit"] {
                let hex = commit.stringValue ?? ""
                if hex.count != 40 || !hex.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) {
                    violations.append(Violation(pointer: "/\(key)/commit", message: "must be a commit id (40 lower-case hex digits)"))
                }
            }
            if let v = version["version"], !(1...63).contains(v.stringValue?.unicodeScalars.count ?? 0) {
                violations.append(Violation(pointer: "/\(key)/version", message: "must be a string of 1 to 63 characters"))
            }
        }
        for key in ["drainedTransactions", "durationSeconds"] {
            guard let value = fields[key] else { continue }
            guard let n = value.numberValue, n >= 0, n <= 1e9, key == "durationSeconds" || n.rounded() == n else {
                violations.append(
                    Violation(
                        pointer: "/\(key)", message: key == "durationSeconds" ? "must be a number of seconds, 0 or more" : "must be an integer, 0 or more"))
                continue
            }
        }
        guard violations.isEmpty else { throw Problem.invalid(violations, what: "update") }
        return fields
    }
}

extension Response {
    static func project(_ record: StoredProject, status: HTTPResponse.Status = .ok, location: Bool = false) -> Response {
        var headers: HTTPFields = [.eTag: "\"\(record.revision)\""]
        if location { headers[.location] = "/api/v1/projects/\(record.name)" }
        return .json(status, record.document, headers: headers)
    }
}
