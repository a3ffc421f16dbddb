import Foundation
import NIOHTTP1
import Testing
import TriadCore
import TriadMesh
import TriadTesting

/// Gateway routes by path, and transactions that enter the gateway again (as an agent's call to
/// another agent through Triad does): the real Envoy, services written here in Python.
@Suite("Gateway routes end to end", .serialized)
struct GatewayRoutesEndToEndTests {
    /// `front` reserves at `back` and then acts with the reservation, both calls through the
    /// gateway (not through its sidecar); with `?hold=FILE` it acts only once FILE exists (the
    /// test says when, whatever the machine's speed). `back` answers its version.
    static let front = """
        import http.server, json, os, sys, time, urllib.request
        GATEWAY = sys.argv[1]
        def call(path, trace):
            req = urllib.request.Request(GATEWAY + path, headers={"x-b3-traceid": trace})
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.read().decode()
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def do_GET(self):
                if self.path == "/healthz":
                    body = b"ok"
                else:
                    trace = self.headers.get("x-b3-traceid", "")
                    hold = self.path.split("hold=")[1] if "hold=" in self.path else None
                    try:
                        reserved = call("/back/reserve", trace)
                        deadline = time.time() + 120
                        while hold and not os.path.exists(hold) and time.time() < deadline:
                            time.sleep(0.01)
                        acted = call("/back/act", trace)
                        body = json.dumps({"reserve": reserved, "act": acted}).encode()
                    except Exception as e:
                        body = json.dumps({"error": str(e)}).encode()
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *a):
                pass
        http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
        """
    static let back = """
        import http.server, os, sys
        VERSION = sys.argv[1].encode()
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def do_GET(self):
                self.send_response(200)
                self.send_header("content-length", str(len(VERSION)))
                self.end_headers()
                self.wfile.write(VERSION)
            def log_message(self, *a):
                pass
        http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
        """

    /// Runs `body` with front (v1) and back (v1) up behind a gateway that routes /back/ to back
    /// (`gatewayExtra`: more lines of spec.gateway), and takes the mesh down whatever happens.
    static func withFrontAndBack(_ name: String, gatewayExtra: String = "", _ body: (TestMesh) async throws -> Void) async throws {
        _ = try MeshTestSupport.envoy()
        let dir = try TestPaths.temporaryDirectory("triad-gateway-\(name)")
        try Self.front.write(toFile: dir + "/front.py", atomically: true, encoding: .utf8)
        try Self.back.write(toFile: dir + "/back.py", atomically: true, encoding: .utf8)
        let port = try MeshTestSupport.freePort()
        let gateway = "http://127.0.0.1:\(port)"
        try """
        apiVersion: triad.io/v1alpha1
        kind: Mesh
        metadata: {name: \(name)}
        spec:
          gateway:
            listen: 127.0.0.1:\(port)
            service: front
            routes: [{prefix: /back/, service: back}]
        \(gatewayExtra)
          services:
            - name: front
              default: v1
              versions: [{version: v1, command: [python3, front.py, "\(gateway)"]}]
            - name: back
              default: v1
              versions: [{version: v1, command: [python3, back.py, v1], health: /healthz}]
        """.write(toFile: dir + "/mesh.yaml", atomically: true, encoding: .utf8)
        let up = try await MeshTestSupport.triad(["mesh", "up", "-f", "mesh.yaml"], in: dir)
        guard up.status == 0, let state = MeshState.load(from: dir) else {
            Issue.record("triad mesh up failed: \(up.stderr)\(up.stdout)")
            return
        }
        let mesh = TestMesh(directory: dir, gateway: gateway, state: state)
        do { try await body(mesh) } catch {
            try? await mesh.down()
            throw error
        }
        try await mesh.down()
    }

    @Test func aTransactionThatReentersTheGatewayStaysOnOneVersionThroughAnUpgrade() async throws {
        try await Self.withFrontAndBack("reentry") { mesh in try await Self.reentry(mesh) }
    }

    /// Past `maxInFlight` the gateway refuses at once instead of queueing: with a limit of one,
    /// a transaction held at front is in progress, a second waits for it at the gateway, and a
    /// third is answered 503 (overloaded) without waiting, while another service behind the
    /// gateway still answers; once the held one ends, the waiting one is served.
    @Test func pastItsLimitTheGatewayRefusesAtOnce() async throws {
        try await Self.withFrontAndBack("limited", gatewayExtra: "    maxInFlight: 1") { mesh in
            let (dir, gateway, state) = (mesh.directory, mesh.gateway, mesh.state)
            let release = dir + "/release"
            let trace = MeshTestSupport.newTraceID()
            let first = Task { try await MeshTestSupport.send(.GET, gateway + "/order?hold=\(release)", headers: ["x-b3-traceid": trace]) }
            try await MeshEndToEndTests.waitAdmitted(mesh, instance: "back-v1-0", trace: trace)
            let second = Task { try await MeshTestSupport.send(.GET, gateway + "/order?hold=\(release)") }
            let bootstrap = try JSONCoding.parse(Data(contentsOf: URL(fileURLWithPath: state.runDirectory + "/envoy/gateway/bootstrap.json")))
            let admin = try #require(bootstrap["admin"]?["address"]?["socket_address"]?["port_value"]?.numberValue.map { Int($0) })
            try await eventually("the second transaction waits at the gateway") {
                await EnvoyFiles.stat(adminPort: admin, name: "cluster.front-v1.upstream_rq_pending_active") == 1
            }
            let refused = try await MeshTestSupport.send(.GET, gateway + "/order")
            #expect(refused.status == 503 && refused.header("x-envoy-overloaded") == "true", "\(refused.status) \(refused.headers)")
            let other = try await MeshTestSupport.send(.GET, gateway + "/back/ping")
            #expect(other.status == 200, "back has a limit of its own")
            FileManager.default.createFile(atPath: release, contents: nil)
            for t in [first, second] {
                let answer = try await t.value
                #expect(answer.status == 200 && answer.json?["act"] == .string("v1"), "\(String(decoding: answer.body, as: UTF8.self))")
            }
            let after = try await MeshTestSupport.send(.GET, gateway + "/order")
            #expect(after.status == 200, "\(after.status)")
        }
    }

    static func reentry(_ mesh: TestMesh) async throws {
        let gateway = mesh.gateway
        let dir = mesh.directory

        // The gateway routes /back/ to back, everything else to front.
        let direct = try await MeshTestSupport.send(.GET, gateway + "/back/ping")
        #expect(direct.status == 200 && direct.header("x-version") == "back-v1", "\(direct.status) \(direct.header("x-version") ?? "-")")

        // A transaction reserves at back v1, then holds until v1's trace set is locked (the
        // upgrade switched the default meanwhile) before it acts.
        let trace = MeshTestSupport.newTraceID()
        let release = dir + "/release-\(trace)"
        let slow = Task { try await MeshTestSupport.send(.GET, gateway + "/order?hold=\(release)", headers: ["x-b3-traceid": trace]) }
        try await MeshEndToEndTests.waitAdmitted(mesh, instance: "back-v1-0", trace: trace)
        let upgrade = Task { try await MeshTestSupport.triad(["upgrade", "back", "--to", "v2", "--command", "python3 back.py v2"], in: dir) }
        try await eventually("back v1's trace set is locked", within: 120) {
            (try? await mesh.client.upgrade(of: "back"))?.steps.contains { $0.name == "locked" } == true
        }
        FileManager.default.createFile(atPath: release, contents: nil)
        let upgraded = try await upgrade.value
        #expect(upgraded.status == 0, "\(upgraded.stdout)\(upgraded.stderr)")
        let answer = try await slow.value
        #expect(
            answer.json?["reserve"] == .string("v1") && answer.json?["act"] == .string("v1"),
            "one version per transaction: \(String(decoding: answer.body, as: UTF8.self))")
        let status = try await mesh.client.upgrade(of: "back")
        #expect(status.phase == .completed && (status.drainedTransactions ?? 0) >= 1, "v1 drained the paused transaction: \(status)")

        let after = try await MeshTestSupport.send(.GET, gateway + "/order")
        #expect(after.json?["reserve"] == .string("v2") && after.json?["act"] == .string("v2"), "\(String(decoding: after.body, as: UTF8.self))")
        let audit = try await mesh.audit()
        #expect(audit["inconsistent"] == .number(0) && audit["failed"] == .number(0), "\(audit)")
    }
}
