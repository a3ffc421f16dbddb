import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationEssentialsCompat
import NIOHTTP1
import TriadCore

/// Talks to a running mesh's control API (found through the state file `mesh up` left).
public struct MeshClient: Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    public let controlURL: String
    let token: String

    public init(controlURL: String, token: String) {
        self.controlURL = controlURL
        self.token = token
    }

    public init(state: MeshState) { self.init(controlURL: state.controlURL, token: state.token) }

    /// The mesh of `workingDirectory`, or a clear error when there is none.
    public static func find(in workingDirectory: String) throws -> (MeshClient, MeshState) {
        guard let state = MeshState.load(from: workingDirectory) else {
            throw Failure(
                "no mesh is running here (no \(MeshState.directoryName)/state.json in \(workingDirectory)); start one with triad mesh up -f mesh.yaml")
        }
        return (MeshClient(state: state), state)
    }

    public func call(_ method: HTTPMethod, _ path: String, body: JSONValue? = nil) async throws -> (status: Int, body: Data) {
        var request = HTTPClientRequest(url: controlURL + path)
        request.method = method
        request.headers.add(name: "authorization", value: "Bearer \(token)")
        if let body {
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: JSONCoding.encode(body)))
        }
        let response: HTTPClientResponse
        do { response = try await HTTPClient.shared.execute(request, timeout: .seconds(30)) } catch {
            throw Failure("the mesh's control API at \(controlURL) does not answer")
        }
        let data = Data(buffer: try await response.body.collect(upTo: 64 << 20))
        return (Int(response.status.code), data)
    }

    func decoded<T: Decodable>(_ type: T.Type, _ method: HTTPMethod, _ path: String, body: JSONValue? = nil) async throws -> T {
        let (status, data) = try await call(method, path, body: body)
        guard status == 200 else {
            let detail = (try? JSONCoding.parse(data))?["detail"]?.stringValue ?? "HTTP \(status)"
            throw Failure(detail)
        }
        return try JSONDecoder().decode(T.self, from: data)
    }

    public func status() async throws -> MeshStatus { try await decoded(MeshStatus.self, .GET, "/v1/status") }
    public func audit() async throws -> AuditReport { try await decoded(AuditReport.self, .GET, "/v1/audit") }
    public func visits(instance: String) async throws -> [Visit] { try await decoded([Visit].self, .GET, "/v1/visits/\(instance)") }

    @discardableResult
    public func setDefault(service: String, version: String) async throws -> MeshStatus {
        try await decoded(MeshStatus.self, .PUT, "/v1/services/\(service)/default", body: ["version": .string(version)])
    }

    /// Starts an upgrade; a refusal (busy, unknown version, ...) is a Failure with its detail.
    public func startUpgrade(_ request: UpgradeRequest) async throws -> UpgradeStatus {
        let (status, data) = try await call(.POST, "/v1/upgrades", body: try JSONCoding.parse(JSONEncoder().encode(request)))
        guard status == 202 else {
            throw Failure((try? JSONCoding.parse(data))?["detail"]?.stringValue ?? "HTTP \(status)")
        }
        return try JSONDecoder().decode(UpgradeStatus.self, from: data)
    }

    public func upgrade(of service: String) async throws -> UpgradeStatus {
        try await decoded(UpgradeStatus.self, .GET, "/v1/upgrades/\(service)")
    }

    public func upgrades() async throws -> [UpgradeStatus] { try await decoded([UpgradeStatus].self, .GET, "/v1/upgrades") }

    public func down() async throws {
        let (status, _) = try await call(.POST, "/v1/down")
        guard status == 202 else { throw Failure("the mesh refused to stop (HTTP \(status))") }
    }
}
