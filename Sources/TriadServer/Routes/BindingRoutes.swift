import Foundation
import Hummingbird
import TriadCore

/// `POST /api/v1/resources/{name}/binding` `{ttlSeconds}` takes (or renews) the exclusive lease
/// of an Exclusive resource for the caller; `DELETE …/binding` gives it back (docs/api.md).
/// The controller releases leases past their expiry.
struct BindingRoutes {
    let registry: Registry
    let reader: RequestReader
    let written: @Sendable () -> Void

    static let defaultTTL = 300

    func register(_ routes: RouteTable) {
        routes.on(.post, "/api/v1/resources/{name}/binding", bind)
        routes.on(.delete, "/api/v1/resources/{name}/binding", release)
    }

    @Sendable func bind(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let principal = try context.require(.bindResources)
        let name = try context.parameters.name()
        guard case .object(let body) = try await reader.tree(request, kind: .document) else {
            throw Problem.invalid([Violation(pointer: "", message: "must be an object {ttlSeconds, holder}")], what: "binding")
        }
        var violations: [Violation] = []
        let unknown = body.keys.filter { $0 != "holder" && $0 != "ttlSeconds" }.sorted()
        violations += unknown.map { Violation(pointer: "/\($0)", message: "is not a binding field (ttlSeconds, holder)") }
        // The holder is the caller; operators and admins may bind on behalf of a named holder.
        var holder = principal.name
        switch body["holder"] {
        case nil: break
        case .string(let h)? where !h.isEmpty && h.utf8.count <= 253:
            if h != principal.name && !principal.may(.writeResources) {
                throw Problem.forbidden("role \(principal.role.rawValue) binds as itself (\(principal.name)), not on behalf of \(h)")
            }
            holder = h
        default: violations.append(Violation(pointer: "/holder", message: "must be a string of 1 to 253 bytes"))
        }
        var ttl = Self.defaultTTL
        switch body["ttlSeconds"] {
        case nil: break
        case .number(let n)? where n.rounded() == n && n >= 1 && n <= Double(Registry.maxBindingSeconds): ttl = Int(n)
        default: violations.append(Violation(pointer: "/ttlSeconds", message: "must be an integer from 1 to \(Registry.maxBindingSeconds)"))
        }
        guard violations.isEmpty else { throw Problem.invalid(violations, what: "binding") }
        let (record, acquired) = try await registry.bind(name, holder: holder, ttlSeconds: ttl)
        written()
        return .json(acquired ? .created : .ok, try Self.describe(record))
    }

    @Sendable func release(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let principal = try context.require(.bindResources)
        let name = try context.parameters.name()
        var holder: String? = request.uri.queryParameters.get("holder").map { String($0) }
        // Apps give back their own lease; operators and admins may release any (`?holder=`
        // makes it conditional on who holds it).
        if !principal.may(.writeResources) {
            if let named = holder, named != principal.name {
                throw Problem.forbidden("role \(principal.role.rawValue) releases only its own binding (\(principal.name)), not \(named)'s")
            }
            if let lease = try await registry.get(name).decode().status?.binding, lease.holder != principal.name {
                throw Problem.forbidden("\(name) is bound by \(lease.holder); role \(principal.role.rawValue) releases only its own binding")
            }
            holder = principal.name
        }
        let record = try await registry.release(name, holder: holder)
        written()
        return .json(.ok, try Self.describe(record!))
    }

    static func describe(_ record: StoredResource) throws -> Data {
        let status = try record.decode().status
        var out: [String: JSONValue] = [
            "resource": .string(record.name), "bound": .bool(status?.bound ?? false),
            "resourceVersion": .string(String(record.revision)),
        ]
        if let b = status?.binding {
            out["holder"] = .string(b.holder)
            out["acquiredAt"] = .string(b.acquiredAt)
            out["expiresAt"] = .string(b.expiresAt)
        }
        return JSONCoding.encode(JSONValue.object(out))
    }
}
