import Foundation
import Hummingbird
import Prometheus
import TriadCore

/// One dependency `/readyz` reports on: `problem` is nil when it is fine, else why not.
struct HealthCheck: Sendable {
    let name: String
    let problem: @Sendable () -> String?
}

/// Health, readiness, metrics and the API's own description.
struct SystemRoutes {
    let registry: Registry
    let checks: [HealthCheck]
    let metrics: PrometheusCollectorRegistry

    func register(_ routes: RouteTable) {
        routes.on(.get, "/healthz") { _, _ in .json(.ok, Data(#"{"status":"ok"}"#.utf8)) }
        routes.on(.get, "/readyz", ready)
        routes.on(.get, "/metrics", metricsText)
        routes.on(.get, "/openapi.yaml", openAPI)
    }

    /// Which part is down is for everyone (probes, balancers); why (hosts, library errors) only
    /// for an admin's token.
    @Sendable func ready(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let detailed = context.principal?.role == .admin
        var checks: [String: JSONValue] = [:]
        var ok = true
        do {
            try await registry.ping()
            checks["database"] = .object(["ok": .bool(true)])
        } catch {
            ok = false
            checks["database"] = .object(["ok": .bool(false), "message": .string("the registry database does not answer")])
        }
        for check in self.checks {
            if let problem = check.problem() {
                ok = false
                checks[check.name] = .object(["ok": .bool(false), "message": .string(detailed ? problem : "down (an admin's token is told why)")])
            } else {
                checks[check.name] = .object(["ok": .bool(true)])
            }
        }
        let body = JSONValue.object(["status": .string(ok ? "ready" : "not ready"), "checks": .object(checks)])
        return .json(ok ? .ok : .serviceUnavailable, JSONCoding.encode(body))
    }

    @Sendable func metricsText(_ request: Request, context: TriadRequestContext) async throws -> Response {
        _ = try context.require(.readServerInfo)
        var buffer: [UInt8] = []
        metrics.emit(into: &buffer)
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
    }

    static let openAPIDocument: Data? = Bundle.module.url(forResource: "openapi", withExtension: "yaml").flatMap { try? Data(contentsOf: $0) }

    @Sendable func openAPI(_ request: Request, context: TriadRequestContext) async throws -> Response {
        _ = try context.require(.readServerInfo)
        guard let doc = Self.openAPIDocument else { throw Problem.internalError() }
        return Response(status: .ok, headers: [.contentType: "application/yaml"], body: .init(byteBuffer: ByteBuffer(bytes: doc)))
    }
}
