import AsyncHTTPClient
import Foundation
import TriadProcess
import NIOCore
import NIOHTTP1
import Testing
import TriadCore
import TriadMesh

struct SetupError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

enum MeshTestSupport {
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let examples = repoRoot + "/agents/examples/python"

    /// The real Envoy binary; tests never skip when it is missing (scripts/test.sh sets it).
    static func envoy() throws -> String {
        guard let path = ProcessInfo.processInfo.environment["TRIAD_ENVOY"], !path.isEmpty else {
            throw SetupError("TRIAD_ENVOY is not set: run `export TRIAD_ENVOY=$(bash scripts/envoy.sh)` (scripts/test.sh does)")
        }
        guard FileManager.default.isExecutableFile(atPath: path) else { throw SetupError("TRIAD_ENVOY=\(path) is not executable") }
        return path
    }

    static func triad() throws -> String {
        let runner = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let candidates = [runner.appendingPathComponent("triad").path,
                          runner.deletingLastPathComponent().appendingPathComponent("triad").path,
                          repoRoot + "/.build/debug/triad"]
        for path in candidates where FileManager.default.isExecutableFile(atPath: path) { return path }
        throw SetupError("cannot find the triad executable (looked in \(candidates.joined(separator: ", "))); run swift build first")
    }

    static func temporaryDirectory() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("triad-mesh-test-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
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

    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs `triad` with `arguments` in `directory` and waits for it.
    static func triad(_ arguments: [String], in directory: String, environment extra: [String: String] = [:]) async throws -> Run {
        var env = ProcessInfo.processInfo.environment
        env["TRIAD_ENVOY"] = try envoy()
        for (k, v) in extra { env[k] = v }
        let out = directory + "/.out-\(UUID().uuidString.prefix(6))", err = out + ".err"
        // ChildProcess, not Foundation's Process: `mesh up` leaves a detached control process
        // behind, and Process was seen never to notice its own child's exit then.
        let child = try ChildProcess(id: "triad", kind: "cli", executable: try triad(), arguments: arguments, environment: env,
                                     directory: directory, logPath: out, errorPath: err)
        let status = await child.waitForExit() ?? -1
        return Run(status: status, stdout: (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
                   stderr: (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
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
}
