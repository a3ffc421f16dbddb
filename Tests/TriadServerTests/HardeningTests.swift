import Foundation
import Testing
import TriadClient
import TriadCore

/// No request crashes or hangs the server; no role exceeds its rights.
@Suite("Hardening")
struct HardeningTests {
    @Test func eventIdsPastTheLogAreRefusedAndTheServerLives() async throws {
        let dir = try TestEnvironment.temporaryDirectory()
        let token = "hardening-admin-token-\(UUID().uuidString)"
        let server = try await ServerProcess.start(["--data-dir", dir + "/data"], environment: ["TRIAD_ADMIN_TOKEN": token], directory: dir)
        defer { server.stop() }
        let admin = TriadClient(server: server.baseURL, token: token)
        for query in ["since=9223372036854775807", "since=9223372036854775808", "since=-1", "since=1e3"] {
            let reply = try await admin.send(.GET, "/api/v1/events?follow=false&\(query)")
            #expect(reply.status == 400, "\(query) → \(reply.status)")
        }
        let header = try await admin.send(.GET, "/api/v1/events?follow=false", headers: [("Last-Event-ID", "9223372036854775807")])
        #expect(header.status == 400)
        // Times whose offset carries them out of the four-digit years (formatting them trapped).
        _ = try await admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("edge")))
        let sample = try await admin.send(.POST, "/api/v1/resources/edge/telemetry", body: Data(#"{"ts":"0000-01-01T00:00:00+23:59","values":{"t":1}}"#.utf8))
        #expect(sample.status == 422)
        #expect(try await admin.send(.GET, "/api/v1/resources/edge/telemetry?from=0000-01-01T00:00:00%2B23:59").status == 400)
        #expect(server.process.isRunning)
        #expect(try await admin.send(.GET, "/api/v1/resources").status == 200)
    }

    @Test func sigtermEndsOpenEventStreamsAndExitsWithinTheGrace() async throws {
        let dir = try TestEnvironment.temporaryDirectory()
        let token = "sigterm-admin-token-\(UUID().uuidString)"
        let server = try await ServerProcess.start(["--data-dir", dir + "/data", "--shutdown-grace", "5"],
                                                   environment: ["TRIAD_ADMIN_TOKEN": token], directory: dir)
        defer { server.stop() }
        let admin = TriadClient(server: server.baseURL, token: token)
        // Raw sockets: an HTTP client's pool would queue the tenth stream behind the others.
        let port = UInt16(server.baseURL.split(separator: ":").last!)!
        var sockets: [Int32] = []
        defer { for fd in sockets { close(fd) } }
        for _ in 0..<10 { sockets.append(try Self.openEventStream(port: port, token: token)) }
        try await TelemetryTests.eventually("ten streams are open") {
            let metrics = String(decoding: try await admin.call(.GET, "/metrics").body, as: UTF8.self)
            return metrics.split(separator: "\n").contains { $0 == "triad_event_streams 10.0" || $0 == "triad_event_streams 10" }
        }
        let start = ContinuousClock.now
        kill(server.process.processIdentifier, SIGTERM)
        // Waiting is bounded here by the test, not by the server: well past the 5 s grace.
        for _ in 0..<300 where server.process.isRunning { try await Task.sleep(for: .milliseconds(100)) }
        #expect(!server.process.isRunning, "still running \(ContinuousClock.now - start) after SIGTERM")
    }

    /// `GET /api/v1/events` on a socket of its own, left open; returns once the server answered.
    static func openEventStream(port: UInt16, token: String) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard connected == 0 else { close(fd); throw TestEnvironment.SetupError("cannot connect to the server") }
        let request = "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\n\r\n"
        _ = request.withCString { send(fd, $0, strlen($0), 0) }
        var buffer = [UInt8](repeating: 0, count: 512)
        guard recv(fd, &buffer, buffer.count, 0) > 0 else { close(fd); throw TestEnvironment.SetupError("the event stream did not answer") }
        return fd
    }

    /// What a probe runs is the server's own process: only admins set it.
    @Test func onlyAnAdminSetsWhatAProbeRuns() async throws {
        try await withServer(.sqlite) { server in
            let op = server.client(token: try await server.token(.operator))
            var doc = Docs.device("shell")
            if case .object(var root) = doc, case .object(var spec)? = root["spec"] {
                spec["probeImage"] = .string("/bin/sh")
                spec["probeArgs"] = .array([.string("-c"), .string("cat admin.token")])
                spec["probeEnabled"] = .bool(true)
                root["spec"] = .object(spec); doc = .object(root)
            }
            let refused = try await op.send(.POST, "/api/v1/resources", body: Docs.json(doc))
            #expect(refused.status == 403 && (refused.json?["detail"]?.stringValue ?? "").contains("probeImage"))
            #expect(try await op.send(.PUT, "/api/v1/resources/shell", body: Docs.json(doc)).status == 403)
            #expect(try await server.admin.send(.GET, "/api/v1/resources/shell").status == 404, "nothing written, nothing started")

            // The operator still writes everything else of a resource an admin gave a probe
            // (disabled here: nothing needs to run).
            if case .object(var root) = doc, case .object(var spec)? = root["spec"] {
                spec["probeEnabled"] = .bool(false)
                root["spec"] = .object(spec); doc = .object(root)
            }
            #expect(try await server.admin.send(.POST, "/api/v1/resources", body: Docs.json(doc)).status == 201)
            let relabel = try await op.send(.PATCH, "/api/v1/resources/shell", body: Data(#"{"metadata":{"labels":{"floor":"3"}}}"#.utf8),
                                            contentType: "application/merge-patch+json")
            #expect(relabel.status == 200)
            let patch = try await op.send(.PATCH, "/api/v1/resources/shell", body: Data(#"{"spec":{"probeArgs":["-c","id"]}}"#.utf8),
                                          contentType: "application/merge-patch+json")
            #expect(patch.status == 403)
            #expect(try await server.admin.call(.GET, "/api/v1/resources/shell").json?["spec"]?["probeArgs"]?.arrayValue?.last == .string("cat admin.token"))
        }
    }
}
