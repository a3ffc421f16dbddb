import ArgumentParser
import Foundation
import NIOHTTP1
import TriadClient
import TriadCore
import TriadDevops
import TriadMesh

/// `triad project`: project manifests in the registry (docs/projects.md).
struct ProjectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "project",
        abstract: "Projects: the services a team builds from git. The server checks every repository and ref when a project is applied.",
        subcommands: [
            ProjectApply.self, ProjectGet.self, ProjectDescribe.self, ProjectDelete.self, ProjectBuild.self, ProjectBuilds.self, ProjectUp.self,
            ProjectUpdate.self,
        ])
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
            let docs = try ApplyCommand.documents(of: filename)
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
            if let current = p["status"]?["current"]?.objectValue, !current.isEmpty {
                print("Running (put live by triad project update):")
                var live = [["  SERVICE", "REF", "COMMIT", "VERSION", "SINCE"]]
                for (service, v) in current.sorted(by: { $0.key < $1.key }) {
                    live.append([
                        "  " + service, v["ref"]?.stringValue ?? "", String((v["commit"]?.stringValue ?? "-").prefix(12)), v["version"]?.stringValue ?? "",
                        v["since"]?.stringValue ?? "",
                    ])
                }
                print(Output.table(live), terminator: "")
            }
            if let history = p["status"]?["history"]?.arrayValue, !history.isEmpty {
                print("Updates (newest last):")
                var rows = [["  TIME", "SERVICE", "FROM", "TO", "STRATEGY", "OUTCOME", "DRAINED", "BY"]]
                for u in history.suffix(20) {
                    rows.append([
                        "  " + (u["time"]?.stringValue ?? ""), u["service"]?.stringValue ?? "", u["from"]?["ref"]?.stringValue ?? "-",
                        u["to"]?["ref"]?.stringValue ?? "", u["strategy"]?.stringValue ?? "", u["outcome"]?.stringValue ?? "",
                        u["drainedTransactions"]?.numberValue.map { String(Int($0)) } ?? "-", u["by"]?.stringValue ?? "",
                    ])
                }
                print(Output.table(rows), terminator: "")
                if let reason = history.last?["reason"]?.stringValue { print("  last reason: \(reason.split(separator: "\n").first ?? "")") }
            }
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

extension ClientOptions {
    /// The project `name` as the server holds it.
    func project(_ name: String) async throws -> ProjectManifest { try await projectDocument(name).manifest }

    /// The project `name` as the server holds it, and its whole document (its status too).
    func projectDocument(_ name: String) async throws -> (manifest: ProjectManifest, document: JSONValue) {
        let document = try await client().call(.GET, "/api/v1/projects/\(percentEncode(name))").json ?? .null
        do { return (try ProjectManifest.parse(document), document) } catch {
            throw CLIError("project \(name) as the server holds it: \(error.description)")
        }
    }
}

/// Where `triad project build` keeps its work: git mirrors and builds under one directory of the
/// machine the CLI runs on (builds run there, as the person who runs them, never in the server).
struct BuildPlace: ParsableArguments {
    @Option(help: "Where builds and git mirrors are kept (builds/ and git/ inside).")
    var dataDir: String = ".triad"

    var manager: BuildManager {
        let root = URL(fileURLWithPath: dataDir)
        return BuildManager(directory: root.appendingPathComponent("builds").path, git: GitRepositories(directory: root.appendingPathComponent("git").path))
    }
}

struct ProjectBuild: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Build a project's service at a ref: resolve it to a commit, build it in a clean checkout, keep the log and the artifact.",
        discussion: """
            The project comes from the server; the build runs here, within the manifest's time limit. A commit built \
            before is not built again (a tag moved to another commit is built anew). Exits 1 when the build fails, \
            with the reason and the log's last lines.
            """)

    @Argument(help: "The project.")
    var project: String
    @Argument(help: "The service to build.")
    var service: String
    @Option(help: "The tag, branch or commit to build (default: the one the manifest names).")
    var ref: String?
    @OptionGroup var place: BuildPlace
    @OptionGroup var client: ClientOptions

    func run() async throws {
        try await runClientVerb {
            let manifest = try await client.project(project)
            guard let spec = manifest.service(service) else {
                throw CLIError("project \(project) has no service \(service) (it has \(manifest.services.map(\.name).joined(separator: ", ")))")
            }
            let label = "\(project)/\(service) at \(ref ?? spec.ref)"
            let line = ProgressLine()
            let record = await place.manager.build(project: project, service: spec, ref: ref) { progress in
                switch progress {
                case .resolved(let commit): line.say("\(label): commit \(commit.prefix(12))", keep: true)
                case .checkingOut: line.say("\(label): checking out")
                case .building(let seconds, let last): line.say("\(label): building, \(Int(seconds)) s\(last.isEmpty ? "" : " — \(last)")")
                }
            }
            line.end()
            switch record.outcome {
            case .succeeded:
                print("build \(label): Succeeded\(record.reused == true ? " (built before, reused)" : "")")
                print("  commit:   \(record.commit)")
                print("  artifact: \(record.artifact ?? "")")
                print("  sha256:   \(record.sha256 ?? "")")
                print("  log:      \(record.log ?? "")")
            case .failed:
                throw CLIError("build \(label) failed: \(record.reason ?? "no reason recorded")\(record.log.map { "\n(log: \($0))" } ?? "")")
            }
        }
    }
}

struct ProjectBuilds: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "builds", abstract: "List the builds kept here of a project (of one service, if named), newest first.")

    @Argument(help: "The project.")
    var project: String
    @Argument(help: "Only this service.")
    var service: String?
    @Option(name: .shortAndLong, help: "Output: table or json.")
    var output: OutputFormat = .table
    @OptionGroup var place: BuildPlace

    func validate() throws {
        guard ResourceValidator.isValidName(project), service.map(ResourceValidator.isValidName) ?? true else {
            throw ValidationError("project and service are DNS-1123 names (lower-case letters, digits and '-')")
        }
    }

    func run() async throws {
        let records = await place.manager.builds(project: project, service: service)
        if output == .json {
            print(String(decoding: (try? JSONEncoder().encode(records)) ?? Data("[]".utf8), as: UTF8.self))
            return
        }
        if records.isEmpty {
            print("No builds of \(project)\(service.map { "/\($0)" } ?? "") here (\(place.dataDir)).")
            return
        }
        var rows = [["SERVICE", "REF", "COMMIT", "OUTCOME", "FINISHED", "SHA256"]]
        for r in records {
            rows.append([r.service, r.ref, String(r.commit.prefix(12)), r.outcome.rawValue, r.finishedAt, String((r.sha256 ?? "-").prefix(12))])
        }
        print(Output.table(rows), terminator: "")
    }
}

struct ProjectUp: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Build every service of a project at its ref and run them here as a mesh (its spec.mesh names the gateway).",
        discussion: """
            Each service is built as triad project build does (a commit built before is reused), then runs as the \
            version its ref names (the ref itself when it is a version name: lower-case letters, digits and '.'; \
            else c<commit>) of its mesh service. The mesh file is written to <data-dir>/projects/<project>/mesh.json \
            and the mesh started as triad mesh up starts one: triad mesh status, audit and down work from this directory.
            """)

    @Argument(help: "The project.")
    var project: String
    @Option(help: "Envoy binary (default: TRIAD_ENVOY, else the one in ~/.cache/triad/envoy-venv).")
    var envoy: String?
    @Option(help: "Seconds to wait for the mesh to be up.")
    var timeout: Int = 120
    @OptionGroup var place: BuildPlace
    @OptionGroup var client: ClientOptions

    func run() async throws {
        try await runClientVerb {
            let manifest = try await client.project(project)
            guard let mesh = manifest.mesh else {
                throw CLIError("project \(project) has no spec.mesh: name its gateway (listen HOST:PORT, service) to run it as a mesh")
            }
            var byMeshService: [String: String] = [:]
            for service in manifest.services {
                if let other = byMeshService[service.meshService] {
                    throw CLIError("services \(other) and \(service.name) are both mesh service \(service.meshService); each needs its own")
                }
                byMeshService[service.meshService] = service.name
            }
            // Build everything first: nothing starts unless every service has its artifact.
            let manager = place.manager
            var services: [JSONValue] = []
            var summary: [String] = []
            for service in manifest.services {
                let line = ProgressLine()
                let record = await manager.build(project: project, service: service) { progress in
                    if case .building(let seconds, let last) = progress {
                        line.say("\(project)/\(service.name) at \(service.ref): building, \(Int(seconds)) s\(last.isEmpty ? "" : " — \(last)")")
                    }
                }
                line.end()
                guard record.outcome == .succeeded, let artifact = record.artifact else {
                    throw CLIError("build of \(project)/\(service.name) at \(service.ref) failed, nothing started: \(record.reason ?? "no reason recorded")")
                }
                let version = ProjectManifest.meshVersion(ref: service.ref, commit: record.commit)
                let command = service.run.map { $0.replacingOccurrences(of: "{artifact}", with: artifact) }
                services.append(
                    .object([
                        "name": .string(service.meshService), "default": .string(version),
                        "versions": .array([
                            .object([
                                "version": .string(version), "command": .array(command.map(JSONValue.string)), "health": .string(service.health),
                            ])
                        ]),
                    ]))
                summary.append("\(service.meshService) \(version) (\(service.name) at \(service.ref), commit \(record.commit.prefix(12)))")
            }
            var gateway: [String: JSONValue] = [
                "listen": .string(mesh.listen), "service": .string(mesh.entryService),
                "routes": .array(mesh.routes.map { .object(["prefix": .string($0.prefix), "service": .string($0.service)]) }),
            ]
            if let maxInFlight = mesh.maxInFlight { gateway["maxInFlight"] = .number(Double(maxInFlight)) }
            let meshDocument: JSONValue = .object([
                "apiVersion": .string("triad.io/v1alpha1"), "kind": .string("Mesh"), "metadata": .object(["name": .string(project)]),
                "spec": .object([
                    "gateway": .object(gateway),
                    "pinPropagation": .string(mesh.pinPropagation), "services": .array(services),
                ]),
            ])
            let directory = URL(fileURLWithPath: place.dataDir).appendingPathComponent("projects/\(project)").standardizedFileURL.path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let file = directory + "/mesh.json"
            guard FileManager.default.createFile(atPath: file, contents: JSONCoding.encode(meshDocument)) else { throw CLIError("cannot write \(file)") }
            let config = try MeshConfigParser.load(path: file)
            let state = try await MeshLauncher.up(
                executable: try selfExecutable(), meshFile: file, envoy: try EnvoyInstall.locate(explicit: envoy),
                workingDirectory: FileManager.default.currentDirectoryPath, timeout: .seconds(timeout))
            print("project \(project) up: gateway \(state.gateway) -> \(config.gateway.service)")
            for line in summary { print("  \(line)") }
        }
    }
}

extension ProjectManifest {
    /// The mesh version a service built at `ref` runs as: the ref itself when it is a version
    /// name (lower-case letters, digits and '.'), else `c` and the commit's first 12 digits.
    static func meshVersion(ref: String, commit: String) -> String {
        MeshConfigParser.versionName(ref) ? ref : "c" + commit.prefix(12)
    }
}

struct ProjectUpdate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "update",
        abstract: "Put a service of a running project at another ref: build it, start it beside the running version, upgrade the mesh consistently.",
        discussion: """
            Runs where triad project up ran (the mesh of this directory, or --mesh). The ref is built as triad project \
            build builds it, started as a new version of the service's mesh service, and the upgrade runs with the \
            strategy given; its steps and the DiffSet draining are printed. Every update is recorded in the \
            project's status.history (who, when, from, to, strategy, outcome, transactions drained); one that \
            completes makes the ref and its commit the service's status.current. A failed build, a failed health \
            check or a rollback leaves the running version as it was, and exits 1 with the reason.
            """)

    @Argument(help: "The project.")
    var project: String
    @Argument(help: "The service to update.")
    var service: String
    @Option(help: "The tag, branch or commit to put live.")
    var ref: String
    @Option(help: "CV (default), BF, WF or rolling.")
    var strategy: String = "CV"
    @Option(help: "How long the old version may take to drain (60s, 2m, 500ms).")
    var drainTimeout: String = "60s"
    @Flag(help: "At the drain deadline retire the old version anyway and report what may break (default: roll back).")
    var force = false
    @Option(help: "The mesh's control URL (default: the mesh of this directory).")
    var mesh: String?
    @OptionGroup var place: BuildPlace
    @OptionGroup var client: ClientOptions

    func validate() throws {
        guard ["CV", "BF", "WF", "ROLLING"].contains(strategy.uppercased()) else {
            throw ValidationError("--strategy \(strategy): one of CV, BF, WF, rolling")
        }
        guard let seconds = DurationText.seconds(drainTimeout), seconds > 0 else {
            throw ValidationError("--drain-timeout \(drainTimeout) is not a duration (60s, 2m, 500ms)")
        }
    }

    func run() async throws {
        try await runClientVerb {
            let strategy = strategy.uppercased() == "ROLLING" ? "rolling" : strategy.uppercased()
            let api = try client.client()
            let (manifest, document) = try await client.projectDocument(project)
            guard let spec = manifest.service(service) else {
                throw CLIError("project \(project) has no service \(service) (it has \(manifest.services.map(\.name).joined(separator: ", ")))")
            }
            let meshClient = try meshClient(mesh)
            guard let running = try await meshClient.status().services.first(where: { $0.name == spec.meshService }) else {
                throw CLIError("the mesh here runs no service \(spec.meshService); bring the project up first (triad project up \(project))")
            }
            // What runs now: the last update that put a version live, else what triad project up built.
            let status = document["status"]
            var from: [String: JSONValue] = ["version": .string(running.defaultVersion)]
            if let current = status?["current"]?[service]?.objectValue {
                from.merge(current.filter { ["ref", "commit"].contains($0.key) }) { _, new in new }
            } else {
                from["ref"] = .string(spec.ref)
                if status?["services"]?[service]?["ref"]?.stringValue == spec.ref { from["commit"] = status?["services"]?[service]?["commit"] }
            }
            if MeshConfigParser.versionName(ref), ref == running.defaultVersion {
                throw CLIError("\(project)/\(service) already runs \(ref); nothing to do")
            }
            let started = Date()
            var to: [String: JSONValue] = ["ref": .string(ref)]
            /// Records the update in the project's status and ends the command.
            func record(_ outcome: String, reason: String?, drained: Int? = nil) async throws {
                var entry: [String: JSONValue] = [
                    "service": .string(service), "strategy": .string(strategy), "outcome": .string(outcome), "to": .object(to),
                    "durationSeconds": .number((Date().timeIntervalSince(started) * 1000).rounded() / 1000),
                ]
                if from["ref"] != nil { entry["from"] = .object(from) }
                if let reason { entry["reason"] = .string(String(reason.suffix(4096))) }
                if let drained { entry["drainedTransactions"] = .number(Double(drained)) }
                _ = try await api.call(.POST, "/api/v1/projects/\(percentEncode(project))/updates", body: JSONCoding.encode(JSONValue.object(entry)))
                guard outcome == "Succeeded" else { throw CLIError("update of \(project)/\(service) to \(ref): \(outcome): \(reason ?? "")") }
                print(
                    "project \(project): \(service) now runs \(ref) (\(to["version"]?.stringValue ?? ""), commit \((to["commit"]?.stringValue ?? "").prefix(12)))"
                )
            }

            let label = "\(project)/\(service) at \(ref)"
            let line = ProgressLine()
            let build = await place.manager.build(project: project, service: spec, ref: ref) { progress in
                switch progress {
                case .resolved(let commit): line.say("\(label): commit \(commit.prefix(12))", keep: true)
                case .checkingOut: line.say("\(label): checking out")
                case .building(let seconds, let last): line.say("\(label): building, \(Int(seconds)) s\(last.isEmpty ? "" : " — \(last)")")
                }
            }
            line.end()
            if !build.commit.isEmpty { to["commit"] = .string(build.commit) }
            guard build.outcome == .succeeded, let artifact = build.artifact else {
                try await record("Failed", reason: "build failed, nothing deployed: \(build.reason ?? "no reason recorded")")
                return
            }
            let version = ProjectManifest.meshVersion(ref: ref, commit: build.commit)
            to["version"] = .string(version)
            if version == running.defaultVersion || (from["commit"]?.stringValue == build.commit && from["version"]?.stringValue == running.defaultVersion) {
                throw CLIError(
                    "\(project)/\(service) already runs \(ref) (version \(running.defaultVersion), commit \(build.commit.prefix(12))); nothing to do")
            }
            say("build \(label): \(build.reused == true ? "built before, reused" : "Succeeded") (artifact sha256 \((build.sha256 ?? "").prefix(12)))")
            let upgrade: UpgradeStatus
            do {
                let begun = try await meshClient.startUpgrade(
                    UpgradeRequest(
                        service: spec.meshService, to: version, strategy: strategy,
                        command: spec.run.map { $0.replacingOccurrences(of: "{artifact}", with: artifact) },
                        drainTimeoutSeconds: DurationText.seconds(drainTimeout), force: force))
                say("upgrade \(spec.meshService) \(begun.from) -> \(begun.to) (\(begun.strategy)) started")
                upgrade = try await followUpgrade(meshClient, begun)
            } catch let refused as MeshClient.Failure {
                try await record("Failed", reason: "the mesh refused the upgrade: \(refused.description)")
                return
            }
            switch upgrade.phase {
            case .completed: try await record("Succeeded", reason: nil, drained: upgrade.drainedTransactions)
            case .forced:
                try await record(
                    "Forced", reason: "retired \(upgrade.from) at the drain deadline with \(upgrade.mayBreak ?? 0) transactions on it",
                    drained: upgrade.drainedTransactions)
            case .rolledBack: try await record("RolledBack", reason: upgrade.message, drained: upgrade.drainedTransactions)
            case .failed, .running: try await record("Failed", reason: upgrade.message, drained: upgrade.drainedTransactions)
            }
        }
    }
}

/// One progress line on standard error: rewritten in place on a terminal, else printed as it
/// changes (at most once a second, as the build reports).
final class ProgressLine: Sendable {
    private let terminal = isatty(STDERR_FILENO) != 0

    func say(_ text: String, keep: Bool = false) {
        if terminal {
            FileHandle.standardError.write(Data("\r\u{1B}[K\(text)\(keep ? "\n" : "")".utf8))
        } else {
            FileHandle.standardError.write(Data("\(text)\n".utf8))
        }
    }

    func end() {
        if terminal { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }
}
