import Foundation
import Logging
import Metrics
import PostgresNIO
import Prometheus
import Testing
import TriadCore
import TriadPostgres
import TriadProcess
import TriadSQLite
import TriadServer
import TriadTesting

/// The registry backends every conformance and API test runs against.
enum BackendKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, postgres
    var testDescription: String { rawValue }
}

enum TestEnvironment {
    static let logger: Logger = {
        var l = Logger(label: "triad.test")
        l.logLevel = .warning
        return l
    }()

    /// The PostgreSQL that scripts/test.sh starts. Missing means a failed run, never a skipped test.
    static func postgresURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["TRIAD_TEST_POSTGRES_URL"], !url.isEmpty else {
            throw SetupError("TRIAD_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh, which starts PostgreSQL")
        }
        return url
    }

    static func amqpURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["TRIAD_TEST_AMQP_URL"], !url.isEmpty else {
            throw SetupError("TRIAD_TEST_AMQP_URL is not set: run the suite with scripts/test.sh, which starts RabbitMQ")
        }
        return url
    }

    static func mqttURL() throws -> String {
        guard let url = ProcessInfo.processInfo.environment["TRIAD_TEST_MQTT_URL"], !url.isEmpty else {
            throw SetupError("TRIAD_TEST_MQTT_URL is not set: run the suite with scripts/test.sh, which starts Mosquitto")
        }
        return url
    }

    static func uniqueName(_ prefix: String) -> String {
        "\(prefix)_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased())"
    }

    /// Runs one statement as the PostgreSQL superuser of the test cluster.
    static func postgresAdmin(_ sql: String) async throws {
        let config = try PostgresBackend.configuration(url: try postgresURL())
        try await PostgresBackend.withRunningClient(config, logger: logger) { client in
            _ = try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger)
        }
    }

    /// Runs `body` with a fresh, empty registry backend, open for exactly that long. SQLite: a
    /// new file; PostgreSQL: a new schema. `reuse` opens an earlier one again (its `location`).
    static func withBackend<T: Sendable>(
        _ kind: BackendKind, reuse location: String? = nil,
        _ body: (any RegistryBackend, _ location: String) async throws -> T
    ) async throws -> T {
        switch kind {
        case .sqlite:
            let path = try location ?? (TestPaths.temporaryDirectory() + "/triad.db")
            return try await SQLiteBackend.withBackend(path: path, logger: logger) { try await body($0, path) }
        case .postgres:
            let schema: String
            if let location {
                schema = location
            } else {
                schema = uniqueName("t")
                try await postgresAdmin("CREATE SCHEMA \(schema)")
            }
            return try await PostgresBackend.withBackend(url: try postgresURL(), searchPath: schema, logger: logger) { try await body($0, schema) }
        }
    }

    /// swift-metrics is bootstrapped once per process, as `triad server` does, so `/metrics` counts.
    static let metricsBootstrapped: Void = MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: ServerMetrics.registry))

    /// The `triad` executable built next to the test bundle (`swift build --build-tests` builds it).
    /// Runs `scripts/services.sh <verb> <service>` with `environment` (a child process of our
    /// own: Foundation's Process may never see the script exit once it started a detached server).
    static func services(_ script: String, _ verb: String, _ service: String, environment: [String: String]) async throws {
        let log = try TestPaths.temporaryDirectory() + "/services.log"
        let child = try ChildProcess(
            id: "services.sh", kind: "script", executable: "/bin/bash", arguments: [script, verb, service],
            environment: environment, directory: FileManager.default.currentDirectoryPath, logPath: log)
        let status = await child.waitForExit()
        guard status == 0 else {
            throw SetupError("services.sh \(verb) \(service) failed: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
    }

}
