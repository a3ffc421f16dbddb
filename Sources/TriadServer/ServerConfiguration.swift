import Foundation
import TriadCore
import TriadMQTT

/// Everything `triad server` can be told (flags > `TRIAD_*` environment > YAML file > defaults).
public struct ServerConfiguration: Sendable, Equatable {
    /// `sqlite:<path>` or `postgres://…`. Default: SQLite under the data directory.
    public var database: String?
    public var dataDir: String = ".triad"
    public var listenHost: String = "127.0.0.1"
    public var listenPort: Int = 8080
    public var maxBodyBytes: Int = 1 << 20
    /// How many registry events the log keeps for resuming streams.
    public var eventRetention: Int = 100_000
    /// `amqp://user:password@host:port[/vhost]`: relay registry events to RabbitMQ (off when nil).
    public var amqp: String?
    /// The queue state sync consumes (`triad.state`, docs/events.md); not a CLI setting.
    public var stateQueue: String = "triad.state"
    /// `mqtt://[user:password@]host:port`: take telemetry from MQTT (off when nil; the REST
    /// telemetry route works either way).
    public var mqtt: String?
    /// Subscribe with `$share/triad/…` so replicas on one broker split the telemetry.
    public var mqttShared: Bool = false
    /// How devices authenticate to the broker (docs/mqtt.md).
    public var mqttAuth: MQTTAuth = .none
    /// How long telemetry history is kept, in hours.
    public var telemetryRetentionHours: Int = 168
    /// Samples per second each resource may send before the rest are rejected as rate-limited.
    public var telemetryRate: Int = 100
    /// How telemetry samples go to RabbitMQ: one message each, or batched (docs/events.md).
    public var telemetryEvents: TelemetryEvents = .single

    public enum TelemetryEvents: String, Sendable, CaseIterable {
        /// One message per sample, `application/cloudevents+json`.
        case single
        /// One message per resource for what queued up while the last publication was being
        /// confirmed, `application/cloudevents-batch+json` (a JSON array of the same events).
        case batch
    }
    /// When probes count as crash-looping or silent (tests shorten them).
    public var probePolicy = ProbeReconciler.Policy()
    /// The executables the local probe runtime may start (default: this `triad` executable).
    public var probeAllow = ProbeAllowList()
    /// The hosts operations may call (names, addresses, CIDR ranges); loopback by default.
    public var allowedHosts: AllowedHosts = .loopback
    /// How long an invocation waits for its upstream before it is recorded `TimedOut`.
    public var invokeTimeoutSeconds: Double = 10
    /// Seconds an HTTP connection may stay idle (or send a request this slowly) before it is closed.
    public var idleTimeoutSeconds: Int = 30
    /// Open event streams one token may hold at once (more are answered 429).
    public var maxStreamsPerToken: Int = 32
    /// How long a graceful shutdown (SIGTERM) may take before what still runs is cancelled.
    public var shutdownGraceSeconds: Int = 10
    /// `TRIAD_ADMIN_TOKEN`: ensures an admin with this token instead of writing `admin.token`.
    public var adminToken: String?

    public init() {}

    public enum Database: Equatable, Sendable {
        case sqlite(path: String)
        case postgres(url: String)
    }

    public enum MQTTAuth: String, Sendable, Equatable, CaseIterable {
        /// The broker's own configuration decides; the server manages nothing there.
        case none
        /// The server manages Mosquitto's dynamic-security plugin with the `mqtt` URL's
        /// credentials (its admin): one client per device token.
        case dynsec
    }

    /// What `mqttAuth` needs of the rest of the configuration.
    public func checkMQTTAuth() throws {
        guard mqttAuth == .dynsec else { return }
        guard let mqtt else { throw Invalid(description: "mqttAuth dynsec needs --mqtt, the broker whose dynamic security the server manages") }
        let endpoint: MQTTEndpoint
        do { endpoint = try MQTTEndpoint(url: mqtt) } catch { throw Invalid(description: "\(error)") }
        guard endpoint.username != nil, endpoint.password != nil else {
            throw Invalid(
                description: "mqttAuth dynsec needs the --mqtt URL to carry the broker admin's username and password (mqtt://user:password@host:port)")
        }
    }

    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public func resolvedDatabase() throws -> Database {
        guard let database, !database.isEmpty else {
            return .sqlite(path: URL(fileURLWithPath: dataDir).appendingPathComponent("triad.db").path)
        }
        if database.hasPrefix("postgres://") || database.hasPrefix("postgresql://") { return .postgres(url: database) }
        if database.hasPrefix("sqlite:") {
            var path = String(database.dropFirst("sqlite:".count))
            if path.hasPrefix("//") { path = String(path.dropFirst(2)) }
            guard !path.isEmpty else { throw Invalid(description: "--database sqlite: needs a file path, e.g. sqlite:.triad/triad.db") }
            return .sqlite(path: path)
        }
        throw Invalid(description: "--database must be sqlite:<path> or postgres://user:password@host:port/database")
    }

    /// Parses `HOST:PORT` (`[::1]:8080` for IPv6).
    public mutating func setListen(_ text: String) throws {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw Invalid(description: "--listen must be HOST:PORT, e.g. 127.0.0.1:8080")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw Invalid(description: "--listen must name a host, e.g. 127.0.0.1:8080") }
        listenHost = host
        listenPort = port
    }
}
