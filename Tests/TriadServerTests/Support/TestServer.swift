import AsyncHTTPClient
import Foundation
import NIOHTTP1
import ServiceLifecycle
import Testing
import TriadAMQP
import TriadClient
import TriadCore
import TriadServer
import TriadTesting

/// A real server on a loopback port, in this process, over a fresh backend; `withServer` runs it.
final class TestServer: Sendable {
    let server: TriadServer
    let baseURL: String
    let adminToken: String
    let dataDir: String

    init(server: TriadServer, baseURL: String, adminToken: String, dataDir: String) {
        self.server = server
        self.baseURL = baseURL
        self.adminToken = adminToken
        self.dataDir = dataDir
    }

    func client(token: String? = nil) -> TriadClient {
        TriadClient(server: baseURL, token: token ?? adminToken)
    }

    var admin: TriadClient { client() }

    /// A token of `role` made through the API.
    func token(_ role: Role, resource: String? = nil) async throws -> String {
        try await namedToken(role, resource: resource).secret
    }

    /// A token of `role` and its name (bindings and the ledger know callers by name).
    func namedToken(_ role: Role, resource: String? = nil, name: String? = nil) async throws -> (name: String, secret: String) {
        let tokenName = name ?? "t-\(UUID().uuidString.prefix(8).lowercased())"
        var body: [String: JSONValue] = ["name": .string(tokenName), "role": .string(role.rawValue)]
        if let resource { body["resource"] = .string(resource) }
        let reply = try await admin.call(.POST, "/api/v1/tokens", body: JSONCoding.encode(JSONValue.object(body)))
        return (tokenName, try #require(reply.json?["token"]?.stringValue))
    }
}

/// Runs `body` with a started server over a fresh backend, and always stops both: the server's
/// services run as a child task of this call and end (gracefully) before it returns.
func withServer(
    _ kind: BackendKind, maxBodyBytes: Int = 1 << 20, eventRetention: Int = 100_000, amqp: String? = nil,
    mqtt: String? = nil, resolver: HostResolver = .system, configure: (inout ServerConfiguration) -> Void = { _ in },
    _ body: (TestServer) async throws -> Void
) async throws {
    _ = TestEnvironment.metricsBootstrapped
    var config = ServerConfiguration()
    config.dataDir = try TestPaths.temporaryDirectory()
    config.listenPort = 0
    config.maxBodyBytes = maxBodyBytes
    config.eventRetention = eventRetention
    config.adminToken = "test-admin-" + UUID().uuidString
    // In-process, the server's own executable is the test runner: probes run the built `triad`.
    config.probeAllow = ProbeAllowList([try TestPaths.triadExecutable()])
    config.amqp = amqp
    // Each test server has its own registry: it must not take another's state messages.
    config.stateQueue = "triad.state.test-\(UUID().uuidString.prefix(8).lowercased())"
    config.mqtt = mqtt
    configure(&config)
    try await TestEnvironment.withBackend(kind) { [config] backend, _ in
        let server = try await TriadServer(configuration: config, backend: backend, logger: TestEnvironment.logger, resolver: resolver)
        try await withCleanup {
            try await serve(server, config: config, body)
        } cleanup: {
            await server.shutdown()
        }
    }
}

private func serve(_ server: TriadServer, config: ServerConfiguration, _ body: (TestServer) async throws -> Void) async throws {
    let (portStream, portContinuation) = AsyncStream<Int>.makeStream()
    let app = server.makeApplication { port in portContinuation.yield(port) }
    let group = ServiceGroup(configuration: .init(services: [app], logger: TestEnvironment.logger))
    try await withThrowingTaskGroup(of: Void.self) { running in
        running.addTask { try await group.run() }
        func stop() async throws {
            server.notifier.finishAll()
            await group.triggerGracefulShutdown()
            // Services cancelled by the shutdown end with CancellationError: that is the stop itself.
            do { try await running.waitForAll() } catch is CancellationError {}
        }
        var ports = portStream.makeAsyncIterator()
        guard let port = await ports.next() else { throw SetupError("server did not start") }
        let test = TestServer(server: server, baseURL: "http://127.0.0.1:\(port)", adminToken: config.adminToken!, dataDir: config.dataDir)
        do {
            try await body(test)
        } catch {
            try? await stop()
            throw error
        }
        try await stop()
    }
}

enum Docs {
    static func device(_ name: String, labels: [String: String] = [:], price: Double = 3.5) -> JSONValue {
        var meta: [String: JSONValue] = ["name": .string(name)]
        if !labels.isEmpty { meta["labels"] = .object(labels.mapValues { .string($0) }) }
        return .object([
            "apiVersion": .string("triad.io/v1alpha1"),
            "kind": .string("Resource"),
            "metadata": .object(meta),
            "spec": .object([
                "kind": .string("Device"),
                "accessMode": .string("Exclusive"),
                "operations": .array([
                    .object([
                        "name": .string("brew"), "price": .number(price),
                        "httpAction": .object(["action": .string("POST"), "url": .string("http://127.0.0.1:9101/operations/brew")]),
                    ])
                ]),
            ]),
        ])
    }

    static func resource(_ name: String, kind: String, labels: [String: String] = [:]) -> JSONValue {
        var meta: [String: JSONValue] = ["name": .string(name)]
        if !labels.isEmpty { meta["labels"] = .object(labels.mapValues { .string($0) }) }
        return .object([
            "apiVersion": .string("triad.io/v1alpha1"), "kind": .string("Resource"),
            "metadata": .object(meta), "spec": .object(["kind": .string(kind)]),
        ])
    }

    static func json(_ v: JSONValue) -> Data { JSONCoding.encode(v) }
}
