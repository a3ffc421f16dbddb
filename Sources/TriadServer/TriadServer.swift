import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import Metrics
import ServiceLifecycle
import TriadAMQP
import TriadCore
import TriadDevops
import TriadMQTT
import TriadPostgres
import TriadSQLite
import UnixSignals

/// Wires the registry, tokens and HTTP routes into one server. `triad server` and the tests
/// both start it through here.
public final class TriadServer: Sendable {
    public let configuration: ServerConfiguration
    public let registry: Registry
    public let authority: TokenAuthority
    public let notifier = EventNotifier()
    public let bootstrap: TokenAuthority.Bootstrap
    public let relay: OutboxRelay?
    public let telemetry: TelemetryIngest
    let telemetryForwarder: TelemetryForwarder?
    let telemetrySubscriber: TelemetrySubscriber?
    let stateSync: StateSync?
    /// The newest registry events, read once for all event streams.
    public let eventTail: EventTail
    /// `--mqtt-auth dynsec`: the broker's device clients, managed by this server.
    let brokerAccess: DynamicSecurityAccess?
    public let controller: ProbeController
    let invocations: InvocationRunner
    let addressing: UpstreamAddressing
    private let upstreamClient: HTTPClient
    private let logger: Logger

    /// Opens the configured registry, builds the server on it and runs `body` with it; the
    /// registry and the server's clients are closed when `body` returns or throws.
    public static func withServer<T: Sendable>(
        _ configuration: ServerConfiguration, logger: Logger, _ body: (TriadServer) async throws -> T
    ) async throws -> T {
        // Bad broker URLs are refused before anything is opened.
        if let url = configuration.amqp { _ = try AMQPEndpoint(url: url) }
        if let url = configuration.mqtt { _ = try MQTTEndpoint(url: url) }
        // The data directory holds the database and admin.token: its owner's alone.
        if !FileManager.default.fileExists(atPath: configuration.dataDir) {
            try FileManager.default.createDirectory(
                atPath: configuration.dataDir, withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700])
        }
        return try await withRegistryBackend(try configuration.resolvedDatabase(), logger: logger) { backend in
            let server = try await TriadServer(configuration: configuration, backend: backend, logger: logger)
            return try await withCleanup {
                try await body(server)
            } cleanup: {
                await server.shutdown()
            }
        }
    }

    /// Runs `body` with the registry `database` names, open for exactly that long.
    static func withRegistryBackend<T: Sendable>(
        _ database: ServerConfiguration.Database, logger: Logger, _ body: (any RegistryBackend) async throws -> T
    ) async throws -> T {
        switch database {
        case .sqlite(let path):
            let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            return try await SQLiteBackend.withBackend(path: path, logger: logger) { backend in
                logger.info("registry opened", metadata: ["backend": "sqlite", "path": "\(path)"])
                return try await body(backend)
            }
        case .postgres(let url):
            return try await PostgresBackend.withBackend(url: url, logger: logger) { backend in
                logger.info("registry opened", metadata: ["backend": "postgres"])
                return try await body(backend)
            }
        }
    }

    /// With `configuration.amqp`, registry events go to RabbitMQ through the outbox relay and
    /// telemetry through the forwarder, and agents' statuses come in from `triad.state`; with `configuration.mqtt`, telemetry comes from MQTT.
    /// `resolver`: how operations' host names are resolved (the system's; tests re-point names).
    public init(
        configuration: ServerConfiguration, backend: any RegistryBackend, logger: Logger,
        resolver: HostResolver = .system
    ) async throws {
        self.configuration = configuration
        try configuration.checkMQTTAuth()
        self.registry = Registry(backend: backend)
        self.eventTail = EventTail(log: backend, wakeups: notifier, logger: logger)
        let brokerAccess = try configuration.mqtt.flatMap { url in
            configuration.mqttAuth == .dynsec ? try DynamicSecurityAccess(url: url, logger: logger) : nil
        }
        self.brokerAccess = brokerAccess
        self.authority = TokenAuthority(store: backend, brokerAccess: brokerAccess, logger: logger)
        self.logger = logger
        let notifier = self.notifier
        let publisher = try configuration.amqp.map { try AMQPEventPublisher(url: $0) }
        self.relay = publisher.map { OutboxRelay(cursors: backend, publisher: $0, notifier: notifier, logger: logger) }
        let forwarder = try configuration.amqp.map { try TelemetryForwarder(url: $0, batched: configuration.telemetryEvents == .batch, logger: logger) }
        self.telemetryForwarder = forwarder
        let ingest = TelemetryIngest(
            registry: registry, forwarder: forwarder,
            retention: .seconds(configuration.telemetryRetentionHours * 3600),
            rate: Double(configuration.telemetryRate), burst: Double(configuration.telemetryRate * 2), logger: logger)
        self.telemetry = ingest
        self.telemetrySubscriber = try configuration.mqtt.map {
            try TelemetrySubscriber(url: $0, shared: configuration.mqttShared, ingest: ingest, logger: logger)
        }
        let (registry, authority) = (self.registry, self.authority)
        self.stateSync = try configuration.amqp.map {
            StateSync(
                source: try AMQPStateSource(url: $0, queue: configuration.stateQueue, logger: logger), maxBodyBytes: configuration.maxBodyBytes,
                registry: registry, authority: authority, written: { notifier.notify() }, logger: logger)
        }
        self.controller = ProbeController(
            registry: registry, authority: authority, notifier: notifier, mqttBroker: try configuration.mqtt.map { try MQTTEndpoint(url: $0) },
            mqttClientPerToken: brokerAccess != nil,
            dataDir: configuration.dataDir, policy: configuration.probePolicy,
            probeAllow: configuration.probeAllow, logger: logger)
        let addressing = UpstreamAddressing(allowed: configuration.allowedHosts, resolver: resolver)
        self.addressing = addressing
        let invokeTimeout = Duration.milliseconds(Int64(configuration.invokeTimeoutSeconds * 1000))
        let upstreamClient = UpstreamCaller.makeClient(timeout: invokeTimeout)
        self.upstreamClient = upstreamClient
        let node = "\(ProcessInfo.processInfo.hostName):\(URL(fileURLWithPath: configuration.dataDir).standardizedFileURL.path)"
        self.invocations = InvocationRunner(
            registry: registry,
            caller: UpstreamCaller(http: upstreamClient, addressing: addressing, timeout: invokeTimeout),
            node: node, logger: logger, written: { notifier.notify(.ledgerOnly) })
        do {
            try await InvocationRunner.failLeftovers(registry: registry, node: node, logger: logger)
        } catch {
            try? await upstreamClient.shutdown()
            throw error
        }
        try await authority.revokeOrphanedDeviceTokens { [registry] name in try await registry.find(name) != nil }
        self.bootstrap = try await authority.bootstrap(dataDir: configuration.dataDir, environmentToken: configuration.adminToken, logger: logger)
    }

    /// The routes, recorded for the OpenAPI test.
    public func makeRouter() -> (Router<TriadRequestContext>, RouteTable) {
        let router = Router(context: TriadRequestContext.self)
        // Metrics outermost, so every answer (problems included) is counted with its status.
        router.add(middleware: RequestMetricsMiddleware())
        let known = KnownRoutes()
        router.add(middleware: ProblemMiddleware(known: known))
        router.add(middleware: AuthMiddleware(authority: authority))
        let table = RouteTable(router: router, known: known)
        let reader = RequestReader(maxBodyBytes: configuration.maxBodyBytes)
        let notifier = self.notifier
        var checks: [HealthCheck] = []
        if let relay { checks.append(HealthCheck(name: "amqp") { relay.health }) }
        if let forwarder = telemetryForwarder { checks.append(HealthCheck(name: "amqpTelemetry") { forwarder.health }) }
        if let subscriber = telemetrySubscriber { checks.append(HealthCheck(name: "mqtt") { subscriber.health }) }
        if let brokerAccess { checks.append(HealthCheck(name: "mqttDynamicSecurity") { brokerAccess.health }) }
        if let stateSync { checks.append(HealthCheck(name: "amqpState") { stateSync.health }) }
        SystemRoutes(registry: registry, checks: checks, metrics: ServerMetrics.registry).register(table)
        ResourceRoutes(registry: registry, reader: reader, addressing: addressing, authority: authority, written: { notifier.notify() }).register(table)
        InvocationRoutes(registry: registry, runner: invocations, reader: reader).register(table)
        ProjectRoutes(
            registry: registry, reader: reader,
            check: ProjectCheck(
                git: GitRepositories(directory: URL(fileURLWithPath: configuration.dataDir).appendingPathComponent("git").path, timeoutSeconds: 30),
                addressing: addressing, clock: { Date() }),
            written: { notifier.notify() }
        ).register(table)
        EventRoutes(
            registry: registry, tail: eventTail, authority: authority,
            streams: StreamCounter(limit: configuration.maxStreamsPerToken)
        ).register(table)
        TokenRoutes(authority: authority, registry: registry, reader: reader).register(table)
        TelemetryRoutes(registry: registry, ingest: telemetry).register(table)
        BindingRoutes(registry: registry, reader: reader, written: { notifier.notify() }).register(table)
        ConsoleRoutes().register(router)
        return (router, table)
    }

    /// The HTTP application with the server's background loops, ready to run as a `Service`.
    public func makeApplication(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        let (router, _) = makeRouter()
        return Application(
            router: router,
            // A connection with no request for this long is closed (a request being answered,
            // such as an event stream, is never cut; one trickling in too slowly is).
            server: .http1(configuration: .init(idleTimeout: .seconds(Int64(configuration.idleTimeoutSeconds)))),
            configuration: .init(address: .hostname(configuration.listenHost, port: configuration.listenPort), serverName: nil),
            services: [
                // Other replicas' writes wake streams, the relay and the controller at once
                // (PostgreSQL NOTIFY); the 1 s wake-up is the fallback.
                RegistryWatch(log: registry.log, notifier: notifier),
                eventTail,
                PeriodicService(name: "event-wakeup", interval: .seconds(1)) { [notifier] in notifier.notify() },
                PeriodicService(name: "event-compaction", interval: .seconds(60)) { [registry, configuration, logger, relay] in
                    // Events the relay has not delivered stay, however many there are.
                    let undelivered = relay == nil ? nil : try await registry.relayCursors.relayCursor(OutboxRelay.cursorName)
                    let removed = try await registry.log.compactEvents(keep: configuration.eventRetention, notAfter: undelivered)
                    Counter(label: "triad_events_compacted_total").increment(by: removed)
                    if removed > 0 { logger.info("compacted event log", metadata: ["removed": "\(removed)"]) }
                },
                telemetry,
                controller,
                invocations,
            ] + ([relay, telemetryForwarder, telemetrySubscriber, stateSync, brokerAccess] as [(any Service)?]).compactMap { $0 }
                + (brokerAccess == nil
                    ? []
                    : [
                        // Revocations that could not reach the broker when they happened.
                        PeriodicService(name: "mqtt-client-cleanup", interval: .seconds(60)) { [authority] in try await authority.withdrawRevokedClients() }
                    ]),
            onServerRunning: { [controller, configuration] channel in
                let port = channel.localAddress?.port ?? 0
                // Probes reach the API on loopback when the server listens on every address.
                let host = ["0.0.0.0", "::", ""].contains(configuration.listenHost) ? "127.0.0.1" : configuration.listenHost
                controller.serverListening(at: "http://\(host.contains(":") ? "[\(host)]" : host):\(port)")
                await onRunning(port)
            },
            logger: logger)
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully: open event streams end at
    /// once (the HTTP server waits for open responses, and a stream never ends by itself), and
    /// whatever still runs after `shutdownGrace` is cancelled.
    public func run(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        defer { notifier.finishAll() }
        var group = ServiceGroupConfiguration(
            services: [.init(service: EndingStreamsOnShutdown(application: makeApplication(onRunning: onRunning), notifier: notifier))],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        group.maximumGracefulShutdownDuration = .seconds(configuration.shutdownGraceSeconds)
        group.maximumCancellationDuration = .seconds(2)
        try await ServiceGroup(configuration: group).run()
    }

    /// Ends event streams and closes the upstream HTTP client; the registry belongs to whoever opened it.
    public func shutdown() async {
        notifier.finishAll()
        try? await upstreamClient.shutdown()
    }
}

/// Runs the HTTP application and, the moment graceful shutdown starts, ends every event stream
/// (the application's own shutdown would wait for them).
struct EndingStreamsOnShutdown<App: Service>: Service {
    let application: App
    let notifier: EventNotifier

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await application.run()
        } onGracefulShutdown: { [notifier] in
            notifier.finishAll()
        }
    }
}

/// Relays the backend's "another process wrote" signal to this server's notifier.
struct RegistryWatch: Service {
    let log: any EventLog
    let notifier: EventNotifier

    func run() async throws {
        try await cancelWhenGracefulShutdown { [log, notifier] in
            try await log.watchOtherWriters { notifier.notify() }
        }
    }
}

/// A loop that runs `work` every `interval` until graceful shutdown; a failed round is logged, not fatal.
struct PeriodicService: Service {
    let name: String
    let interval: Duration
    let work: @Sendable () async throws -> Void

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do { try await work() } catch {
                    Logger(label: "triad.\(name)").warning("periodic task failed", metadata: ["task": "\(name)", "error.type": "\(type(of: error))"])
                }
                try await Task.sleep(for: interval)
            }
        }
    }
}
