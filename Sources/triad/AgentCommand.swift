import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import TriadAgents
import TriadMesh
import UnixSignals

struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Host resource agents (devices over Home Assistant) from a YAML file.",
        discussion: """
            The file's schema is schemas/agent.schema.json; every problem in it is reported at once, \
            with the file, a JSON pointer and the reason. Tokens come from files or the environment \
            (TRIAD_TOKEN for Triad, HA_TOKEN for Home Assistant), never from flags. docs/agents.md has more.
            """)

    @Option(help: "The agents' YAML file.")
    var config: String
    @Option(help: "trace, debug, info, notice, warning, error or critical (default info).")
    var logLevel: String = "info"
    @Option(help: "HOST:PORT to listen on instead of the file's listen (e.g. the PORT a mesh gives its instances).")
    var listen: String?

    func run() async throws {
        let listenOverride = try listen.map { text in
            guard let hostPort = HostPort(text) else { throw ValidationError("--listen \(text) is not HOST:PORT (e.g. 127.0.0.1:8090)") }
            return hostPort
        }
        var parsed: AgentConfig
        do {
            parsed = try AgentConfig.load(path: config)
        } catch {
            FileHandle.standardError.write(Data("error: \(error.description)\n".utf8))
            throw ExitCode(2)
        }
        if let listenOverride {
            parsed.listenHost = listenOverride.host
            parsed.listenPort = listenOverride.port
        }
        let agents = parsed.agents.map(\.name).joined(separator: ",")
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        LoggingSystem.bootstrap { label in StderrLogHandler(label: label, level: level) }
        let logger = Logger(label: "triad.agent")
        let host = AgentHost(config: parsed, logger: logger)
        let application = host.makeApplication { port in
            logger.info("agents listening", metadata: ["port": "\(port)", "agents": "\(agents)"])
        }
        let group = ServiceGroup(configuration: .init(services: [application], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
