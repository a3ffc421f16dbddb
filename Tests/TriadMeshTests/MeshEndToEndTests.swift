import Foundation
import Testing
import TriadCore
import TriadMesh
import TriadProcess
import TriadTesting

/// `triad mesh up` with the example system of agents/examples (Python services that only propagate
/// x-b3-traceid) on the real Envoy, driven through the CLI as an operator would.
@Suite("Mesh end to end", .serialized)
struct MeshEndToEndTests {
    static func versions(_ a: MeshTestSupport.Answer) -> (String?, String?) {
        (a.json?["versions"]?["auth.issue"]?.stringValue, a.json?["versions"]?["auth.verify"]?.stringValue)
    }

    /// Waits until the trace manager of `instance` has admitted `trace`.
    static func waitAdmitted(_ mesh: TestMesh, instance: String, trace: String) async throws {
        for _ in 0..<200 {
            if try await mesh.client.visits(instance: instance).contains(where: { $0.traceId == trace }) { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw SetupError("\(instance) never admitted \(trace)")
    }

    @Test func meshModeRoutesPinsAndAudits() async throws {
        try await MeshTestSupport.withMesh { mesh in
            #expect(mesh.state.processes.filter { $0.kind == "envoy" }.count == 6, "a sidecar per instance and the gateway")
            #expect(mesh.state.processes.filter { $0.kind == "instance" }.count == 5)
            var sent = 0
            // A transaction through the gateway; every response says which version served it.
            let trace = MeshTestSupport.newTraceID()
            let ok = try await mesh.order(trace: trace)
            sent += 1
            #expect(ok.status == 200, "\(String(decoding: ok.body, as: UTF8.self))")
            #expect(ok.header("x-version") == "portal-v1")
            #expect(ok.json?["traceId"]?.stringValue == trace)
            #expect(ok.json?["dbTraceId"]?.stringValue == trace, "the trace id reaches the end of the chain")
            #expect(Self.versions(ok) == ("v1", "v1"))

            // No trace id: the gateway assigns one, and the client learns it.
            let anonymous = try await mesh.order()
            sent += 1
            #expect(anonymous.status == 200)
            let assigned = try #require(anonymous.json?["traceId"]?.stringValue, "Portal received a trace id")
            #expect(assigned.count == 32 && assigned.allSatisfy(\.isHexDigit))
            #expect(anonymous.header("x-b3-traceid") == assigned)

            // A pin at the gateway routes every call of the transaction to that version.
            let pinned = try await mesh.order(trace: MeshTestSupport.newTraceID(), pins: "auth-v2")
            sent += 1
            #expect(pinned.status == 200, "\(String(decoding: pinned.body, as: UTF8.self))")
            #expect(Self.versions(pinned) == ("v2", "v2"))

            // A pin to a version that does not exist: a 503 problem, counted, no transaction.
            let unknown = try await mesh.order(trace: MeshTestSupport.newTraceID(), pins: "auth-v9")
            #expect(unknown.status == 503)
            #expect(unknown.header("content-type") == "application/problem+json")
            #expect(unknown.json?["detail"]?.stringValue?.contains("auth to v9") == true, "\(String(decoding: unknown.body, as: UTF8.self))")
            #expect(try await mesh.client.status().counters.unknownPinRefusals == 1)

            // The default of Auth changes while a slow transaction waits between its two calls
            // to Auth: its second call still goes to the version its first call used.
            let slowTrace = MeshTestSupport.newTraceID()
            let slow = Task { try await mesh.order(trace: slowTrace, delayMs: 1500) }
            try await Self.waitAdmitted(mesh, instance: "auth-v1-0", trace: slowTrace)
            try await mesh.client.setDefault(service: "auth", version: "v2")
            let straddling = try await slow.value
            sent += 1
            #expect(straddling.status == 200, "\(String(decoding: straddling.body, as: UTF8.self))")
            #expect(Self.versions(straddling) == ("v1", "v1"), "pinned by the mesh to its first version")
            let after = try await mesh.order(trace: MeshTestSupport.newTraceID())
            sent += 1
            #expect(Self.versions(after) == ("v2", "v2"), "new transactions take the new default")

            let audit = try await mesh.audit()
            #expect(audit["transactions"] == .number(Double(sent)))
            #expect(audit["inconsistent"] == .number(0))
            #expect(audit["traces"] == .array([]))
        }
    }

    /// The control: without pin propagation the same straddling transaction mixes two versions
    /// of Auth, fails visibly, and the audit reports it.
    @Test func applicationModeWithoutPinsIsCaughtByTheAudit() async throws {
        try await MeshTestSupport.withMesh(pinPropagation: "application") { mesh in
            let trace = MeshTestSupport.newTraceID()
            let slow = Task { try await mesh.order(trace: trace, delayMs: 1500) }
            try await Self.waitAdmitted(mesh, instance: "auth-v1-0", trace: trace)
            try await mesh.client.setDefault(service: "auth", version: "v2")
            let mixed = try await slow.value
            #expect(mixed.status == 502)
            #expect(mixed.json?["error"]?.stringValue == "token_rejected")
            let audit = try await mesh.audit()
            #expect(audit["inconsistent"] == .number(1))
            #expect(audit["traces"] == .array([["traceId": .string(trace), "service": "auth", "versions": ["v1", "v2"]]]))
            // A pin the application itself carries is still routed (here: set by the client).
            let pinned = try await mesh.order(trace: MeshTestSupport.newTraceID(), pins: "portal-v1")
            #expect(pinned.status == 200)
            let unknown = try await mesh.order(trace: MeshTestSupport.newTraceID(), pins: "portal-v7")
            #expect(unknown.status == 503)
            #expect(unknown.header("content-type") == "application/problem+json")
        }
    }

    /// The benchmark's baseline serves the same transactions, records nothing and refuses upgrades.
    @Test func plainEnvoyServesButRecordsNothingAndRefusesUpgrades() async throws {
        try await MeshTestSupport.withMesh(plainEnvoy: true) { mesh in
            let answer = try await mesh.order(trace: MeshTestSupport.newTraceID())
            #expect(answer.status == 200, "\(String(decoding: answer.body, as: UTF8.self))")
            #expect(answer.header("x-version") == "portal-v1", "routing and the version header stay")
            let status = try await mesh.client.status()
            #expect(status.pinPropagation == "plain-envoy")
            #expect(status.counters.records == 0, "nothing reaches the trace managers")
            let upgrade = try await MeshTestSupport.triad(["upgrade", "auth", "--to", "v2", "--command", "python3 auth.py --version v2"], in: mesh.directory)
            #expect(upgrade.status != 0 && upgrade.stderr.contains("plain Envoy"), "\(upgrade.stdout)\(upgrade.stderr)")
        }
    }

    @Test func aBadMeshFileIsRefusedBeforeAnythingStarts() async throws {
        _ = try MeshTestSupport.envoy()
        let dir = try TestPaths.temporaryDirectory("triad-mesh-test")
        let text = MeshTestSupport.exampleMesh(gatewayPort: 1).replacingOccurrences(of: "service: portal}", with: "service: shop}")
        try text.write(toFile: dir + "/mesh.yaml", atomically: true, encoding: .utf8)
        let run = try await MeshTestSupport.triad(["mesh", "up", "-f", "mesh.yaml"], in: dir)
        #expect(run.status == 1)
        #expect(run.stderr.contains(#"spec.gateway.service: "shop" is not a service of this mesh"#), "\(run.stderr)")
        #expect(MeshState.load(from: dir) == nil)
        let status = try await MeshTestSupport.triad(["mesh", "status"], in: dir)
        #expect(status.status == 1 && status.stderr.contains("no mesh is running here"))
    }
}
