import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationEssentialsCompat
import NIOHTTP1
import Testing
import TriadCore
import TriadMesh
import TriadProcess
import TriadTesting

enum MeshTestSupport {
    static let examples = TestPaths.repositoryRoot + "/agents/examples/python"

    /// The real Envoy binary; tests never skip when it is missing (scripts/test.sh sets it).
    static func envoy() throws -> String {
        guard let path = ProcessInfo.processInfo.environment["TRIAD_ENVOY"], !path.isEmpty else {
            throw SetupError("TRIAD_ENVOY is not set: run `export TRIAD_ENVOY=$(bash scripts/envoy.sh)` (scripts/test.sh does)")
        }
        guard FileManager.default.isExecutableFile(atPath: path) else { throw SetupError("TRIAD_ENVOY=\(path) is not executable") }
        return path
    }

    /// The example system (agents/examples/mesh.yaml) with Auth v2 as a second version.
    static func exampleMesh(gatewayPort: Int, pinPropagation: String = "mesh", authV2: Bool = true) -> String {
        func version(_ script: String, _ v: String) -> String {
            "        - {version: \(v), command: [python3, \(examples)/\(script), --version, \(v)], health: /healthz}\n"
        }
        return """
            apiVersion: triad.io/v1alpha1
            kind: Mesh
            metadata: {name: report-example}
            spec:
              gateway: {listen: "127.0.0.1:\(gatewayPort)", service: portal}
              pinPropagation: \(pinPropagation)
              services:
                - name: portal
                  default: v1
                  versions:
            \(version("portal.py", "v1"))    - name: auth
                  default: v1
                  versions:
            \(version("auth.py", "v1"))\(authV2 ? version("auth.py", "v2") : "")    - name: proc
                  default: v1
                  versions:
            \(version("proc.py", "v1"))    - name: db
                  default: v1
                  versions:
            \(version("db.py", "v1"))
            """
    }

    /// Runs `triad` with `arguments` in `directory` and waits for it.
    static func triad(_ arguments: [String], in directory: String, environment extra: [String: String] = [:]) async throws -> ProgramRun {
        var env = ProcessInfo.processInfo.environment
        env["TRIAD_ENVOY"] = try envoy()
        for (k, v) in extra { env[k] = v }
        return try await ProgramRun.run(try TestPaths.triadExecutable(), arguments, directory: directory, environment: env)
    }

    struct Answer {
        var status: Int
        var headers: [String: [String]]
        var body: Data
        var json: JSONValue? { try? JSONCoding.parse(body) }
        func header(_ name: String) -> String? { headers[name.lowercased()]?.joined(separator: ",") }
    }

    static func send(_ method: HTTPMethod = .POST, _ url: String, headers: [String: String] = [:], body: String? = nil) async throws -> Answer {
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (k, v) in headers { request.headers.add(name: k, value: v) }
        if let body {
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        var hs: [String: [String]] = [:]
        for h in response.headers { hs[h.name.lowercased(), default: []].append(h.value) }
        return Answer(status: Int(response.status.code), headers: hs, body: Data(buffer: try await response.body.collect(upTo: 1 << 20)))
    }

    static func freePort() throws -> Int { try freeLoopbackPort() }

    static func newTraceID() -> String { UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased() }

    /// Brings the example mesh up with `triad mesh up` in a fresh directory, runs `body`, and
    /// always takes it down with `triad mesh down`, checking that nothing it started (then or
    /// since, as its state file lists) survives.
    static func withMesh(
        pinPropagation: String = "mesh", plainEnvoy: Bool = false, authV2: Bool = true,
        _ body: (TestMesh) async throws -> Void
    ) async throws {
        _ = try envoy()
        let dir = try TestPaths.temporaryDirectory("triad-mesh-test")
        let port = try freePort()
        try exampleMesh(gatewayPort: port, pinPropagation: pinPropagation, authV2: authV2)
            .write(toFile: dir + "/mesh.yaml", atomically: true, encoding: .utf8)
        let run = try await triad(["mesh", "up", "-f", "mesh.yaml"] + (plainEnvoy ? ["--plain-envoy"] : []), in: dir)
        guard run.status == 0, let state = MeshState.load(from: dir) else {
            throw SetupError("triad mesh up failed (\(run.status)): \(run.stderr)\(run.stdout)")
        }
        #expect(run.stdout.contains("mesh report-example up: gateway http://127.0.0.1:\(port) -> portal"), "\(run.stdout)")
        let mesh = TestMesh(directory: dir, gateway: "http://127.0.0.1:\(port)", state: state)
        do {
            try await body(mesh)
        } catch {
            try? await mesh.down()
            throw error
        }
        try await mesh.down()
    }
}

/// A mesh `withMesh` brought up.
struct TestMesh: Sendable {
    let directory: String
    let gateway: String
    let state: MeshState
    var client: MeshClient { MeshClient(state: state) }

    /// The pid of an instance process, as the mesh started it.
    func pid(_ id: String) -> Int32? { state.processes.first { $0.id == id && $0.kind == "instance" }.map { Int32($0.pid) } }

    /// One transaction through the gateway.
    func order(trace: String? = nil, pins: String? = nil, delayMs: Int = 0) async throws -> MeshTestSupport.Answer {
        var headers: [String: String] = [:]
        if let trace { headers["x-b3-traceid"] = trace }
        if let pins { headers["x-version"] = pins }
        return try await MeshTestSupport.send(.POST, "\(gateway)/order?delay_ms=\(delayMs)", headers: headers, body: #"{"item":"tea","qty":3,"user":"alice"}"#)
    }

    /// `triad mesh audit --json`.
    func audit() async throws -> JSONValue {
        let run = try await MeshTestSupport.triad(["mesh", "audit", "--json"], in: directory)
        #expect(run.status == 0, "\(run.stderr)")
        return try JSONCoding.parse(Data(run.stdout.utf8))
    }

    /// `triad upgrade auth --to v2`, v2 started from the example's script.
    func upgrade(_ extra: [String]) async throws -> ProgramRun {
        try await MeshTestSupport.triad(
            ["upgrade", "auth", "--to", "v2", "--command", "python3 \(MeshTestSupport.examples)/auth.py --version v2"] + extra, in: directory)
    }

    func down() async throws {
        let latest = MeshState.load(from: directory)
        let run = try await MeshTestSupport.triad(["mesh", "down"], in: directory)
        #expect(run.status == 0, "\(run.stderr)")
        let pids = Set([state.pid] + state.processes.map(\.pid) + (latest?.processes.map(\.pid) ?? []))
        for pid in pids { #expect(!ChildProcess.alive(Int32(pid)), "pid \(pid) outlived mesh down") }
        #expect(MeshState.load(from: directory) == nil, "the state file is removed")
    }
}
