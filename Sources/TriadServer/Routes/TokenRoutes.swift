import Foundation
import Hummingbird
import TriadCore
import TriadMQTT

/// `/api/v1/tokens` (admin): what `triad token create|revoke` calls.
struct TokenRoutes {
    let authority: TokenAuthority
    let registry: Registry
    let reader: RequestReader

    func register(_ routes: RouteTable) {
        routes.on(.get, "/api/v1/tokens", list)
        routes.on(.post, "/api/v1/tokens", create)
        routes.on(.delete, "/api/v1/tokens/{name}", revoke)
        routes.on(.get, "/api/v1/whoami", whoami)
    }

    /// Who the bearer is and what its role may do: what a front end offers and hides.
    @Sendable func whoami(_ request: Request, context: TriadRequestContext) async throws -> Response {
        guard let principal = context.principal else { throw Problem.unauthorized("a bearer token is required") }
        let actions: [(String, Action)] = [
            ("readResources", .readResources), ("writeResources", .writeResources), ("bindResources", .bindResources),
            ("invokeOperations", .invokeOperations), ("readAllInvocations", .readAllInvocations), ("readEvents", .readEvents),
            ("manageTokens", .manageTokens), ("readProjects", .readProjects), ("writeProjects", .writeProjects),
        ]
        var may = actions.filter { principal.may($0.1) }.map { JSONValue.string($0.0) }
        if let resource = principal.resource, principal.may(.writeStatus(resource: resource)) { may.append(.string("writeStatus")) }
        var body: [String: JSONValue] = ["name": .string(principal.name), "role": .string(principal.role.rawValue), "may": .array(may)]
        if let resource = principal.resource { body["resource"] = .string(resource) }
        return .json(.ok, JSONCoding.encode(JSONValue.object(body)))
    }

    static func info(_ t: TokenRecord) -> JSONValue {
        var o: [String: JSONValue] = ["name": .string(t.name), "role": .string(t.role.rawValue), "createdAt": .string(t.createdAt)]
        if let r = t.resource { o["resource"] = .string(r) }
        if let r = t.revokedAt { o["revokedAt"] = .string(r) }
        return .object(o)
    }

    @Sendable func list(_ request: Request, context: TriadRequestContext) async throws -> Response {
        _ = try context.require(.manageTokens)
        let items = try await authority.list().map(Self.info)
        return .json(.ok, JSONCoding.encode(JSONValue.object(["items": .array(items)])))
    }

    @Sendable func create(_ request: Request, context: TriadRequestContext) async throws -> Response {
        _ = try context.require(.manageTokens)
        let tree = try await reader.tree(request, kind: .document)
        guard case .object(let m) = tree else { throw Problem.invalid([Violation(pointer: "", message: "must be an object")]) }
        var violations: [Violation] = []
        for key in m.keys.sorted() where !["name", "role", "resource"].contains(key) {
            violations.append(Violation(pointer: "/\(key)", message: "is not a known field"))
        }
        let name = m["name"]?.stringValue
        if name == nil {
            violations.append(Violation(pointer: "/name", message: "is required and must be a string"))
        } else if !ResourceValidator.isValidName(name!) {
            violations.append(Violation(pointer: "/name", message: "must be a DNS-1123 label of at most 63 characters"))
        }
        let role = m["role"]?.stringValue.flatMap(Role.init(rawValue:))
        if role == nil {
            violations.append(Violation(pointer: "/role", message: "must be one of \(Role.allCases.map(\.rawValue).joined(separator: ", "))"))
        }
        let resource = m["resource"]?.stringValue
        if m["resource"] != nil && resource == nil { violations.append(Violation(pointer: "/resource", message: "must be a string")) }
        if role == .device && resource == nil {
            violations.append(Violation(pointer: "/resource", message: "is required for a device token"))
        } else if role != nil && role != .device && resource != nil {
            violations.append(Violation(pointer: "/resource", message: "is only allowed for a device token"))
        }
        if let resource, role == .device, violations.isEmpty {
            if (try? await registry.get(resource)) == nil {
                violations.append(Violation(pointer: "/resource", message: "resource \"\(resource)\" does not exist"))
            }
        }
        guard violations.isEmpty, let name, let role else { throw Problem.invalid(violations, what: "token request") }
        let record: TokenRecord
        let secret: String
        do {
            (record, secret) = try await authority.create(name: name, role: role, resource: resource)
        } catch let error as BrokerRefused {
            throw Problem.unavailable("no token was made: \(error.description)")
        } catch let error as MQTTError {
            throw Problem.unavailable("no token was made: \(error.description)")
        }
        guard case .object(var body) = Self.info(record) else { throw Problem.internalError() }
        body["token"] = .string(secret)
        if role == .device && authority.brokerAccess != nil {
            // The device's own MQTT client (docs/mqtt.md); like the token, shown only now.
            body["mqtt"] = .object(["username": .string(record.name), "password": .string(TokenAuthority.mqttPassword(forSecret: secret))])
        }
        return .json(.created, JSONCoding.encode(JSONValue.object(body)))
    }

    @Sendable func revoke(_ request: Request, context: TriadRequestContext) async throws -> Response {
        _ = try context.require(.manageTokens)
        let name = try context.parameters.require("name")
        guard let record = try await authority.revoke(name: name) else { throw Problem.notFound("token \"\(name)\" does not exist") }
        return .json(.ok, JSONCoding.encode(Self.info(record)))
    }
}
