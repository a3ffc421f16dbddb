import ArgumentParser
import Foundation
import TriadCore
import TriadMesh

struct UpgradeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "upgrade",
        abstract: "Upgrade a service of the running mesh version-consistently.",
        subcommands: [UpgradeStart.self, UpgradeStatusCommand.self],
        defaultSubcommand: UpgradeStart.self)
}

/// The mesh to talk to: --mesh URL (token from TRIAD_MESH_TOKEN or the state file), else the
/// state `mesh up` left in this directory.
func meshClient(_ url: String?) throws -> MeshClient {
    let cwd = FileManager.default.currentDirectoryPath
    guard let url else { return try MeshClient.find(in: cwd).0 }
    let token = ProcessInfo.processInfo.environment["TRIAD_MESH_TOKEN"] ?? MeshState.load(from: cwd)?.token
    guard let token else { throw MeshClient.Failure("--mesh \(url) needs the control API's token: set TRIAD_MESH_TOKEN (it is in .triad-mesh/state.json)") }
    return MeshClient(controlURL: url, token: token)
}

struct UpgradeStart: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "start",
        abstract: "Upgrade SERVICE to a version; prints a line per step with the DiffSet size, exits 0 only when it completed.",
        discussion: """
            Strategies: CV (default; both versions serve, pinned traces stay on the old one, the old one \
            is retired when its last transaction ends), BF (hold new sub-transactions until the old \
            version is free, then swap), WF (wait until it is free; may time out under load), rolling \
            (replace at once, no guarantee). A version the mesh file did not declare needs --command or --upstream.
            """)

    @Argument(help: "The service to upgrade.") var service: String
    @Option(help: "The version to upgrade to.") var to: String
    @Option(help: "CV, BF, WF or rolling.") var strategy: String = "CV"
    @Option(help: "Command of the new version (split on spaces, run without a shell in the mesh file's directory).") var command: String?
    @Option(help: "HOST:PORT of an already running instance of the new version.") var upstream: String?
    @Option(help: "How long the old version may take to drain (60s, 2m, 500ms).") var drainTimeout: String = "60s"
    @Flag(help: "At the drain deadline retire the old version anyway and report what may break (default: roll back).") var force = false
    @Flag(help: "Return once the upgrade started.") var detach = false
    @Option(help: "The mesh's control URL (default: the mesh of this directory).") var mesh: String?
    @Option(help: "Print the procedure's documents instead of running it: istio (VirtualService, DestinationRule, EnvoyFilter per step).") var render: String?
    @Option(help: "With --render: the version running now (default: the running mesh's default of SERVICE).") var from: String?
    @Option(help: "With --render: the Kubernetes namespace.") var namespace: String = "default"
    @Option(help: "With --render: the service port (callers' route vhost).") var port: Int = 8080

    func run() async throws {
        try await runClientVerb {
            if let render {
                guard render == "istio" else { throw MeshClient.Failure("--render \(render): only istio is supported") }
                guard strategy.uppercased() == "CV" else { throw MeshClient.Failure("--render istio renders the CV procedure; drop --strategy \(strategy)") }
                var current = from
                if current == nil {
                    guard let client = try? meshClient(mesh), let status = try? await client.status() else {
                        throw MeshClient.Failure("give --from VERSION (no running mesh here to read \(service)'s default from)")
                    }
                    guard let s = status.services.first(where: { $0.name == service }) else { throw MeshClient.Failure("no service \(service) in this mesh") }
                    current = s.defaultVersion
                }
                guard let current, current != to else { throw MeshClient.Failure("\(service) already runs \(to)") }
                FileHandle.standardOutput.write(Data(IstioRender.render(.init(service: service, from: current, to: to, namespace: namespace, port: port)).utf8))
                return
            }
            guard let seconds = DurationText.seconds(drainTimeout), seconds > 0 else {
                throw MeshClient.Failure("--drain-timeout \(drainTimeout) is not a duration (60s, 2m, 500ms)")
            }
            if command != nil && upstream != nil { throw MeshClient.Failure("give --command or --upstream, not both") }
            let client = try meshClient(mesh)
            let argv = command?.split(separator: " ").map(String.init)
            let started = try await client.startUpgrade(
                UpgradeRequest(
                    service: service, to: to, strategy: strategy, command: argv, upstream: upstream, drainTimeoutSeconds: seconds, force: force))
            say("upgrade \(service) \(started.from) -> \(started.to) (\(started.strategy)) started")
            if detach { return }
            let status = try await followUpgrade(client, started)
            guard status.phase == .completed else {
                FileHandle.standardError.write(Data("error: upgrade \(status.phase.rawValue): \(status.message ?? "")\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}

struct UpgradeStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "The upgrades of the running mesh and their steps.")

    @Argument(help: "Only this service.") var service: String?
    @Flag(help: "Print JSON.") var json = false
    @Option(help: "The mesh's control URL (default: the mesh of this directory).") var mesh: String?

    func run() async throws {
        try await runClientVerb {
            let client = try meshClient(mesh)
            let list: [UpgradeStatus]
            if let service { list = [try await client.upgrade(of: service)] } else { list = try await client.upgrades() }
            if json {
                print(String(decoding: JSONCoding.encode(list), as: UTF8.self))
                return
            }
            if list.isEmpty { print("no upgrades") }
            for u in list {
                var line = "\(u.service) \(u.from) -> \(u.to) (\(u.strategy)): \(u.phase.rawValue)"
                if let d = u.diffSet, u.phase == .running { line += ", DiffSet \(d)" }
                if let m = u.mayBreak { line += ", may have broken \(m)" }
                print(line)
                for s in u.steps { print(String(format: "  [%7.3fs] %@: %@", s.at, s.name, s.detail ?? "")) }
            }
        }
    }
}

/// Prints an upgrade's steps as they happen, and the DiffSet while it drains (at most twice a
/// second); returns the upgrade once it ended.
func followUpgrade(_ client: MeshClient, _ started: UpgradeStatus) async throws -> UpgradeStatus {
    var status = started
    var printed = 0
    var lastDiff: Int?
    var lastDiffPrint = Date.distantPast
    while true {
        status = try await client.upgrade(of: status.service)
        while printed < status.steps.count {
            let s = status.steps[printed]
            say(String(format: "[%7.3fs] %@: %@", s.at, s.name, s.detail ?? ""))
            printed += 1
        }
        if status.phase == .running, let d = status.diffSet, d != lastDiff, Date().timeIntervalSince(lastDiffPrint) > 0.5 {
            say("          DiffSet: \(d) transactions still on \(status.from)")
            lastDiff = d
            lastDiffPrint = Date()
        }
        if status.phase != .running { return status }
        try await Task.sleep(for: .milliseconds(100))
    }
}

/// Progress lines go out at once, also when stdout is a pipe.
func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }
