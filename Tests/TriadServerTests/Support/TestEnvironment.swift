import Foundation
import Logging
import PostgresNIO
import Testing
import TriadCore
import TriadPostgres
import TriadProcess
import TriadSQLite

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

    struct SetupError: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
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

    static func temporaryDirectory() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("triad-test-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    static func uniqueName(_ prefix: String) -> String {
        "\(prefix)_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased())"
    }

    /// Runs one statement as the PostgreSQL superuser of the test cluster.
    static func postgresAdmin(_ sql: String) async throws {
        let config = try PostgresBackend.configuration(url: try postgresURL())
        let client = PostgresClient(configuration: config, backgroundLogger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            _ = try await client.query(PostgresQuery(unsafeSQL: sql), logger: logger)
            group.cancelAll()
        }
    }

    /// A fresh, empty registry backend. SQLite: a new file; PostgreSQL: a new schema.
    static func makeBackend(_ kind: BackendKind, reuse location: String? = nil) async throws -> (any RegistryBackend, String) {
        switch kind {
        case .sqlite:
            let path = try location ?? (temporaryDirectory() + "/triad.db")
            return (try await SQLiteBackend.open(path: path, logger: logger), path)
        case .postgres:
            let schema: String
            if let location {
                schema = location
            } else {
                schema = uniqueName("t")
                try await postgresAdmin("CREATE SCHEMA \(schema)")
            }
            return (try await PostgresBackend.connect(url: try postgresURL(), searchPath: schema, logger: logger), schema)
        }
    }

    /// The `triad` executable built next to the test bundle (`swift build --build-tests` builds it).
    /// Runs `scripts/services.sh <verb> <service>` with `environment` (a child process of our
    /// own: Foundation's Process may never see the script exit once it started a detached server).
    static func services(_ script: String, _ verb: String, _ service: String, environment: [String: String]) async throws {
        let log = try temporaryDirectory() + "/services.log"
        let child = try ChildProcess(id: "services.sh", kind: "script", executable: "/bin/bash", arguments: [script, verb, service],
                                     environment: environment, directory: FileManager.default.currentDirectoryPath, logPath: log)
        let status = await child.waitForExit()
        guard status == 0 else {
            throw SetupError("services.sh \(verb) \(service) failed: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
    }

    static func triadExecutable() throws -> String {
        var candidates: [String] = []
        let runner = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        candidates.append(runner.appendingPathComponent("triad").path)
        candidates.append(runner.deletingLastPathComponent().appendingPathComponent("triad").path)
        candidates.append(FileManager.default.currentDirectoryPath + "/.build/debug/triad")
        for path in candidates where FileManager.default.isExecutableFile(atPath: path) { return path }
        throw SetupError("cannot find the triad executable (looked in \(candidates.joined(separator: ", "))); run swift build first")
    }
}
