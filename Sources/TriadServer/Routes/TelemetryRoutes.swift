import Foundation
import Hummingbird
import TriadCore

/// `POST /api/v1/resources/{name}/telemetry` (ingest without MQTT) and `GET …` (history); docs/api.md, docs/mqtt.md.
struct TelemetryRoutes {
    let registry: Registry
    let ingest: TelemetryIngest

    static let defaultLimit = 100
    static let maxLimit = 10_000

    func register(_ routes: RouteTable) {
        routes.on(.post, "/api/v1/resources/{name}/telemetry", post)
        routes.on(.get, "/api/v1/resources/{name}/telemetry", history)
    }

    @Sendable func post(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let name = try context.parameters.name()
        // Status and telemetry of a resource go together: its device token may send both.
        _ = try context.require(.writeStatus(resource: name))
        let media = request.headers[.contentType]?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        guard media == "application/json" else { throw Problem.unsupportedMediaType("telemetry is application/json") }
        let body: Data
        do {
            body = try await RequestReader(maxBodyBytes: Telemetry.maxPayloadBytes).body(request)
        } catch let problem as Problem where problem.status == .contentTooLarge {
            ingest.reject(.tooLarge, source: "http")
            throw problem
        }
        let sample: TelemetrySample
        do {
            sample = try await ingest.accept(resource: name, payload: Array(body), source: "http")
        } catch {
            throw Self.problem(error, name: name)
        }
        let answer: JSONValue = .object(["resource": .string(name), "ts": .string(sample.time), "receivedAt": .string(sample.receivedAt)])
        return .json(.accepted, JSONCoding.encode(answer))
    }

    @Sendable func history(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let name = try context.parameters.name()
        guard let principal = context.principal else { throw Problem.unauthorized("a bearer token is required") }
        guard principal.mayRead(resource: name) else { throw Problem.forbidden("role \(principal.role.rawValue) may not read \(name)") }
        let params = request.uri.queryParameters
        func time(_ key: String) throws -> String? {
            guard let text = params.get(key) else { return nil }
            guard let date = Timestamp.parse(text) else { throw Problem.badRequest("\(key) must be an RFC 3339 date-time") }
            return Timestamp.format(date)
        }
        let from = try time("from")
        let to = try time("to")
        var limit = Self.defaultLimit
        if let text = params.get("limit") {
            guard let n = Int(text), (1...Self.maxLimit).contains(n) else {
                throw Problem.badRequest("limit must be an integer from 1 to \(Self.maxLimit)")
            }
            limit = n
        }
        guard try await registry.find(name) != nil else { throw Problem.from(.notFound(name: name)) }
        let samples = try await registry.telemetryHistory.telemetry(resource: name, from: from, to: to, limit: limit)
        // Spliced: the stored values are canonical JSON already.
        var out = Data(#"{"items":["#.utf8)
        for (i, s) in samples.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: Array(#"{"ts":"#.utf8))
            out.append(JSONCoding.encode(s.time))
            out.append(contentsOf: Array(#","receivedAt":"#.utf8))
            out.append(JSONCoding.encode(s.receivedAt))
            out.append(contentsOf: Array(#","values":"#.utf8))
            out.append(s.values)
            out.append(UInt8(ascii: "}"))
        }
        out.append(contentsOf: Array(#"],"resource":"#.utf8))
        out.append(JSONCoding.encode(name))
        out.append(UInt8(ascii: "}"))
        return .json(.ok, out)
    }

    static func problem(_ rejection: TelemetryRejection, name: String) -> Problem {
        switch rejection {
        case .unknownResource: return .from(.notFound(name: name))
        case .tooLarge: return .tooLarge(limit: Telemetry.maxPayloadBytes)
        case .invalidJSON: return .badRequest(rejection.message)
        case .valuesNotObject: return .invalid([Violation(pointer: "/values", message: "must be an object")], what: "telemetry sample")
        case .tooDeep:
            return .invalid([Violation(pointer: "/values", message: "must nest at most \(Telemetry.maxValuesDepth) levels")], what: "telemetry sample")
        case .invalidTimestamp:
            return .invalid([Violation(pointer: "/ts", message: "must be an RFC 3339 date-time or epoch milliseconds")], what: "telemetry sample")
        case .rateLimited:
            var p = Problem(.tooManyRequests, "rate-limited", "Too many requests", detail: rejection.message)
            p.headers[.retryAfter] = "1"
            return p
        case .forbidden: return .forbidden(rejection.message)
        case .malformedTopic, .invalidProbeState: return .badRequest(rejection.message)
        }
    }
}
