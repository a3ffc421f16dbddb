import ArgumentParser
import Foundation
import Logging
import Metrics
import Prometheus
import Synchronization
import TriadCore
import TriadServer
import Yams

struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Run the Triad server.",
        discussion: """
            Every setting comes from a flag, else a TRIAD_* environment variable, else the YAML file \
            given with --config, else its default. Keys: database (TRIAD_DATABASE), dataDir \
            (TRIAD_DATA_DIR), amqp (TRIAD_AMQP), mqtt (TRIAD_MQTT), mqttShared (TRIAD_MQTT_SHARED), mqttAuth (TRIAD_MQTT_AUTH), \
            telemetryRetentionHours (TRIAD_TELEMETRY_RETENTION_HOURS), telemetryRate (TRIAD_TELEMETRY_RATE), telemetryEvents (TRIAD_TELEMETRY_EVENTS), listen (TRIAD_LISTEN), maxBodyBytes (TRIAD_MAX_BODY_BYTES), \
            eventRetention (TRIAD_EVENT_RETENTION), shutdownGrace (TRIAD_SHUTDOWN_GRACE), \
            idleTimeout (TRIAD_IDLE_TIMEOUT), allowedHosts (TRIAD_ALLOWED_HOSTS), probeAllow (TRIAD_PROBE_ALLOW), invokeTimeout (TRIAD_INVOKE_TIMEOUT), logLevel (TRIAD_LOG_LEVEL). TRIAD_ADMIN_TOKEN \
            ensures an admin with that token (environment only, never a file or flag).
            """)

    @Option(help: "YAML configuration file.")
    var config: String?
    @Option(help: "sqlite:<path> or postgres://user:password@host:port/database (default: SQLite in the data directory).")
    var database: String?
    @Option(help: "amqp://user:password@host:port[/vhost]: publish registry events to RabbitMQ (default: off).")
    var amqp: String?
    @Option(help: "mqtt://[user:password@]host:port: take telemetry from MQTT (default: off).")
    var mqtt: String?
    @Option(help: "true: subscribe with $share/triad/ so replicas split telemetry (default false).")
    var mqttShared: String?
    @Option(
        help:
            "none: the broker's own configuration decides who may publish; dynsec: the server manages Mosquitto's dynamic-security plugin with the --mqtt URL's credentials, one client per device token (default none)."
    )
    var mqttAuth: String?
    @Option(help: "Hours of telemetry history kept (default 168).")
    var telemetryRetentionHours: Int?
    @Option(help: "Telemetry samples per second accepted from each resource (default 100).")
    var telemetryRate: Int?
    @Option(
        help:
            "single: one RabbitMQ message per telemetry sample; batch: one message per resource for the samples that queued up meanwhile, a JSON array of the same events (default single)."
    )
    var telemetryEvents: String?
    @Option(help: "Directory for the embedded database and admin.token (default ./.triad).")
    var dataDir: String?
    @Option(help: "HOST:PORT to listen on (default 127.0.0.1:8080).")
    var listen: String?
    @Option(help: "Largest request body in bytes (default 1048576).")
    var maxBodyBytes: Int?
    @Option(help: "Registry events kept for resuming streams (default 100000).")
    var eventRetention: Int?
    @Option(help: "Seconds an HTTP connection may stay idle, or take to send a request, before it is closed (default 30).")
    var idleTimeout: Int?
    @Option(help: "Hosts operations may call: names, IP addresses and CIDR ranges, comma-separated (default localhost,127.0.0.0/8,::1).")
    var allowedHosts: String?
    @Option(help: "Executables the local probe runtime may start: paths or program names, comma-separated (default: this triad executable).")
    var probeAllow: String?
    @Option(help: "How long an invocation waits for its upstream: seconds, or with a unit (500ms, 10s, 2m). Default 10s.")
    var invokeTimeout: String?
    @Option(help: "Seconds a graceful shutdown (SIGTERM) may take before the rest is cancelled (default 10).")
    var shutdownGrace: Int?
    @Option(help: "trace, debug, info, notice, warning, error or critical (default info).")
    var logLevel: String?
    @Flag(name: .customLong("check"), help: "Check the settings (flags, environment, --config file) and exit without serving or connecting to anything.")
    var checkOnly = false

    static let fileKeys: Set<String> = [
        "database", "amqp", "mqtt", "mqttShared", "mqttAuth", "telemetryRetentionHours", "telemetryRate", "telemetryEvents", "dataDir", "listen",
        "maxBodyBytes", "eventRetention",
        "shutdownGrace", "idleTimeout", "allowedHosts", "probeAllow", "invokeTimeout", "logLevel",
    ]

    func run() async throws {
        let env = ProcessInfo.processInfo.environment
        let file = try loadConfigFile()
        func setting(_ flag: String?, _ envKey: String, _ fileKey: String) -> String? {
            flag ?? env[envKey] ?? file[fileKey]
        }
        func integer(_ flag: Int?, _ envKey: String, _ fileKey: String, minimum: Int) throws -> Int? {
            if let flag { return try check(flag, fileKey, minimum) }
            guard let text = env[envKey] ?? file[fileKey] else { return nil }
            guard let n = Int(text) else { throw ValidationError("\(fileKey) must be an integer, not \(text)") }
            return try check(n, fileKey, minimum)
        }
        func check(_ n: Int, _ key: String, _ minimum: Int) throws -> Int {
            guard n >= minimum else { throw ValidationError("\(key) must be at least \(minimum)") }
            return n
        }

        var cfg = ServerConfiguration()
        cfg.database = setting(database, "TRIAD_DATABASE", "database")
        cfg.amqp = setting(amqp, "TRIAD_AMQP", "amqp")
        cfg.mqtt = setting(mqtt, "TRIAD_MQTT", "mqtt")
        if let shared = setting(mqttShared, "TRIAD_MQTT_SHARED", "mqttShared") {
            guard let b = Bool(shared) else { throw ValidationError("mqttShared must be true or false, not \(shared)") }
            cfg.mqttShared = b
        }
        if let text = setting(mqttAuth, "TRIAD_MQTT_AUTH", "mqttAuth") {
            guard let auth = ServerConfiguration.MQTTAuth(rawValue: text) else { throw ValidationError("mqttAuth must be none or dynsec, not \(text)") }
            cfg.mqttAuth = auth
        }
        do { try cfg.checkMQTTAuth() } catch { throw ValidationError("\(error)") }
        if let n = try integer(telemetryRetentionHours, "TRIAD_TELEMETRY_RETENTION_HOURS", "telemetryRetentionHours", minimum: 1) {
            cfg.telemetryRetentionHours = n
        }
        if let n = try integer(telemetryRate, "TRIAD_TELEMETRY_RATE", "telemetryRate", minimum: 1) { cfg.telemetryRate = n }
        if let text = setting(telemetryEvents, "TRIAD_TELEMETRY_EVENTS", "telemetryEvents") {
            guard let mode = ServerConfiguration.TelemetryEvents(rawValue: text) else {
                throw ValidationError("telemetryEvents must be single or batch, not \(text)")
            }
            cfg.telemetryEvents = mode
        }
        if let dir = setting(dataDir, "TRIAD_DATA_DIR", "dataDir") { cfg.dataDir = dir }
        if let listen = setting(listen, "TRIAD_LISTEN", "listen") {
            do { try cfg.setListen(listen) } catch { throw ValidationError("\(error)") }
        }
        if let n = try integer(maxBodyBytes, "TRIAD_MAX_BODY_BYTES", "maxBodyBytes", minimum: 1024) { cfg.maxBodyBytes = n }
        if let n = try integer(eventRetention, "TRIAD_EVENT_RETENTION", "eventRetention", minimum: 100) { cfg.eventRetention = n }
        if let n = try integer(idleTimeout, "TRIAD_IDLE_TIMEOUT", "idleTimeout", minimum: 1) { cfg.idleTimeoutSeconds = n }
        if let n = try integer(shutdownGrace, "TRIAD_SHUTDOWN_GRACE", "shutdownGrace", minimum: 1) { cfg.shutdownGraceSeconds = n }
        if let hosts = setting(allowedHosts, "TRIAD_ALLOWED_HOSTS", "allowedHosts") {
            do { cfg.allowedHosts = try AllowedHosts(parsing: hosts) } catch { throw ValidationError("\(error)") }
        }
        if let list = setting(probeAllow, "TRIAD_PROBE_ALLOW", "probeAllow") {
            let entries = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard !entries.isEmpty else { throw ValidationError("probeAllow must name at least one executable") }
            cfg.probeAllow = ProbeAllowList(entries)
        }
        if let text = setting(invokeTimeout, "TRIAD_INVOKE_TIMEOUT", "invokeTimeout") {
            guard let seconds = DurationText.seconds(text), seconds > 0, seconds <= 3600 else {
                throw ValidationError("invokeTimeout must be a duration from 1ms to 1h (500ms, 10s, 2m, or seconds), not \(text)")
            }
            cfg.invokeTimeoutSeconds = seconds
        }
        if let token = env["TRIAD_ADMIN_TOKEN"] {
            // A short admin secret can be guessed; the generated ones are 43 characters.
            guard token.count >= 32 else { throw ValidationError("TRIAD_ADMIN_TOKEN must be at least 32 characters (it is an admin's secret)") }
            cfg.adminToken = token
        }
        do { _ = try cfg.resolvedDatabase() } catch { throw ValidationError("\(error)") }
        let levelText = setting(logLevel, "TRIAD_LOG_LEVEL", "logLevel") ?? "info"
        guard let level = Logger.Level(rawValue: levelText) else {
            throw ValidationError("logLevel must be one of trace, debug, info, notice, warning, error, critical")
        }
        if checkOnly {
            print("triad server: the settings are valid")
            return
        }

        LoggingSystem.bootstrap { label in StderrLogHandler(label: label, level: level) }
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: ServerMetrics.registry))
        let logger = Logger(label: "triad.server")
        let host = cfg.listenHost
        // A failure to open is "cannot start"; one after serving began is "stopped".
        let serving = Atomic<Bool>(false)
        do {
            try await TriadServer.withServer(cfg, logger: logger) { server in
                switch server.bootstrap {
                case .wroteFile(let path, let secret):
                    // Shown once so the first user can log in; only on a terminal, never into a log file.
                    if isatty(STDOUT_FILENO) != 0 {
                        print("bootstrap admin token: \(secret)")
                    }
                    print("bootstrap admin token written to \(path)")
                    fflush(nil)
                case .fromEnvironment, .existing:
                    break
                }
                serving.store(true, ordering: .relaxed)
                let firstStart: Bool
                if case .wroteFile = server.bootstrap { firstStart = true } else { firstStart = false }
                try await server.run { port in
                    let console = "http://\(host.contains(":") ? "[\(host)]" : host):\(port)/console/"
                    logger.info("listening", metadata: ["address": "\(host):\(port)", "console": "\(console)"])
                    // Beside the token file's path: where the first user signs in with it.
                    if firstStart {
                        print("web console: \(console) (sign in with the admin token)")
                        fflush(nil)  // seen now, also when stdout is a file or a pipe
                    }
                }
                logger.info("stopped")
            }
        } catch is CancellationError {
            // SIGTERM/SIGINT: a graceful shutdown, not a failure.
            logger.info("stopped")
        } catch {
            let what = serving.load(ordering: .relaxed) ? "the server stopped" : "cannot start the server"
            FileHandle.standardError.write(Data("error: \(what): \(String(describing: error))\n".utf8))
            throw ExitCode(1)
        }
    }

    /// The flat YAML map of --config; unknown keys are an error, not ignored.
    func loadConfigFile() throws -> [String: String] {
        guard let config else { return [:] }
        guard let data = FileManager.default.contents(atPath: config) else { throw ValidationError("cannot read config file \(config)") }
        let tree: JSONValue
        do { tree = try DocumentReader.read(data, format: .yaml) } catch { throw ValidationError("config file \(config): \(error.message)") }
        guard case .object(let members) = tree else { throw ValidationError("config file \(config) must be a YAML map of settings") }
        var out: [String: String] = [:]
        for (key, value) in members {
            guard Self.fileKeys.contains(key) else {
                throw ValidationError("config file \(config): unknown key \"\(key)\"; known: \(Self.fileKeys.sorted().joined(separator: ", "))")
            }
            switch value {
            case .string(let s): out[key] = s
            // Bounded before the conversion: Int64(1e300) would trap.
            case .number(let d) where d.rounded() == d && abs(d) < 1e15: out[key] = String(Int64(d))
            case .bool(let b): out[key] = String(b)
            default: throw ValidationError("config file \(config): \(key) must be a string or an integer")
            }
        }
        return out
    }
}
