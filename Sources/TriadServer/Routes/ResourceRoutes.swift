import Foundation
import Hummingbird
import Metrics
import TriadCore

/// `/api/v1/resources` and the status subresource (docs/api.md).
struct ResourceRoutes {
    let registry: Registry
    let reader: RequestReader
    /// Operations' URLs must point at allowed hosts (checked again, against the address
    /// connected to, when invoked).
    let addressing: UpstreamAddressing
    /// A deleted resource's device tokens are revoked with it.
    let authority: TokenAuthority
    /// Called after every successful write (wakes event streams).
    let written: @Sendable () -> Void

    func register(_ routes: RouteTable) {
        routes.on(.get, "/api/v1/resources", list)
        routes.on(.post, "/api/v1/resources", create)
        routes.on(.get, "/api/v1/resources/{name}", get)
        routes.on(.put, "/api/v1/resources/{name}", replace)
        routes.on(.patch, "/api/v1/resources/{name}", patch)
        routes.on(.delete, "/api/v1/resources/{name}", delete)
        routes.on(.get, "/api/v1/resources/{name}/status", get)
        routes.on(.put, "/api/v1/resources/{name}/status", replaceStatus)
        routes.on(.patch, "/api/v1/resources/{name}/status", patchStatus)
    }

    @Sendable func list(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let principal = try context.require(.readResources)
        let redact = !principal.may(.writeResources)
        let params = request.uri.queryParameters
        var query = ListQuery()
        if let text = params.get("labelSelector") {
            do { query.selector = try LabelSelector(parsing: text) } catch { throw Problem.badRequest(error.message) }
        }
        if let kind = params.get("kind") {
            guard let k = ResourceKind(rawValue: kind) else {
                throw Problem.badRequest("kind must be one of \(ResourceKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            query.kind = k
        }
        if let limit = params.get("limit") {
            guard let n = Int(limit), (1...ListQuery.maxLimit).contains(n) else {
                throw Problem.badRequest("limit must be an integer from 1 to \(ListQuery.maxLimit)")
            }
            query.limit = n
        }
        if let token = params.get("continue"), !token.isEmpty {
            guard (try? ContinueToken.decode(token)) != nil else { throw Problem.badRequest("continue is not a token this server issued") }
            query.continueToken = token
        }
        let page = try await registry.list(query)
        // Spliced from stored documents straight into the response buffer: a list costs no
        // decoding and one copy of each document.
        var out = ByteBuffer()
        out.reserveCapacity(page.items.reduce(256) { $0 + $1.document.count + 1 })
        out.writeString(#"{"apiVersion":"triad.io/v1alpha1","items":["#)
        for (i, item) in page.items.enumerated() {
            if i > 0 { out.writeInteger(UInt8(ascii: ",")) }
            out.writeBytes(redact ? HeaderRedaction.redacted(item.document) : item.document)
        }
        // A tree, not a dictionary: trees take the hand-written writer (JSONEncoder cost 5% of a list).
        var meta: [String: JSONValue] = ["resourceVersion": .string(String(page.revision))]
        if let token = page.continueToken { meta["continue"] = .string(token) }
        out.writeString(#"],"kind":"ResourceList","metadata":"#)
        out.writeBytes(JSONCoding.encode(JSONValue.object(meta)))
        out.writeInteger(UInt8(ascii: "}"))
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: out))
    }

    @Sendable func get(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let name = try context.parameters.name()
        guard let principal = context.principal else { throw Problem.unauthorized("a bearer token is required") }
        guard principal.mayRead(resource: name) else { throw Problem.forbidden("role \(principal.role.rawValue) may not read \(name)") }
        return .resource(readable(try await registry.get(name), by: principal))
    }

    /// The record as `principal` may see it: operations' header values (upstream credentials)
    /// are for those who write resources; a device writing its own status gets them redacted too.
    private func readable(_ record: StoredResource, by principal: Principal) -> StoredResource {
        guard !principal.may(.writeResources) else { return record }
        var redacted = record
        redacted.document = HeaderRedaction.redacted(record.document)
        return redacted
    }

    @Sendable func create(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let principal = try context.require(.writeResources)
        let resource = try await document(request)
        try await checkOperations(resource.spec.operations, previous: nil)
        let record = try await write("create") { try await registry.create(resource, mayWriteProbe: principal.may(.writeProbes)) }
        return .resource(record, status: .created, location: true)
    }

    @Sendable func replace(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let principal = try context.require(.writeResources)
        let name = try context.parameters.name()
        let resource = try await document(request, pathName: name)
        let precondition = try reader.precondition(request, bodyVersion: resource.metadata.resourceVersion)
        if resource.spec.operations?.isEmpty == false {
            try await checkOperations(resource.spec.operations, previous: try? await registry.find(name)?.decode().spec.operations)
        }
        let (record, created) = try await write("replace") {
            try await registry.replace(resource, precondition: precondition, mayWriteProbe: principal.may(.writeProbes))
        }
        return .resource(record, status: created ? .created : .ok, location: created)
    }

    @Sendable func patch(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let principal = try context.require(.writeResources)
        let name = try context.parameters.name()
        let patch = try await reader.tree(request, kind: .mergePatch)
        guard case .object = patch else { throw Problem.badRequest("a merge patch must be a JSON object") }
        let precondition = try reader.precondition(request, bodyVersion: nil)
        if case .object(let members) = patch, members["spec"]?["operations"] != nil,
            let current = try await registry.find(name)?.decode(),
            case .object(let spec)? = MergePatch.apply(patch, to: current.jsonTree)["spec"],
            let operations = spec["operations"]
        {
            // The operations the patch would leave, checked as a replace's are (a malformed list
            // is the validator's to refuse, inside the write).
            if let decoded = try? JSONDecoder().decode([ResourceOperationSpec].self, from: JSONCoding.encode(operations)) {
                try await checkOperations(decoded, previous: current.spec.operations)
            }
        }
        let record = try await write("patch") {
            try await registry.patch(name, patch: patch, precondition: precondition, mayWriteProbe: principal.may(.writeProbes))
        }
        return .resource(record)
    }

    @Sendable func delete(_ request: Request, context: TriadRequestContext) async throws -> Response {
        _ = try context.require(.writeResources)
        let name = try context.parameters.name()
        let precondition = try reader.precondition(request, bodyVersion: nil)
        let record = try await write("delete") { try await registry.delete(name, precondition: precondition) }
        try await authority.revokeDeviceTokens(of: name)
        return .resource(record)
    }

    @Sendable func replaceStatus(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let name = try context.parameters.name()
        let principal = try context.require(.writeStatus(resource: name))
        let tree = try await reader.tree(request, kind: .document)
        guard case .object(let members) = tree else { throw Problem.invalid([Violation(pointer: "", message: "must be an object")]) }
        guard let status = members["status"] else { throw Problem.invalid([Violation(pointer: "/status", message: "is required")]) }
        let precondition = try reader.precondition(request, bodyVersion: try reader.bodyVersion(tree))
        let record = try await write("status") { try await registry.writeStatus(name, .replace(status), precondition: precondition) }
        return .resource(readable(record, by: principal))
    }

    @Sendable func patchStatus(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let name = try context.parameters.name()
        let principal = try context.require(.writeStatus(resource: name))
        let tree = try await reader.tree(request, kind: .mergePatch)
        guard case .object(let members) = tree else { throw Problem.badRequest("a merge patch must be a JSON object") }
        let unknown = members.keys.filter { $0 != "status" && $0 != "metadata" }.sorted()
        if !unknown.isEmpty {
            throw Problem.invalid(
                unknown.map { Violation(pointer: "/\($0)", message: "a status patch may only contain status (and metadata.resourceVersion)") })
        }
        guard let status = members["status"] else { throw Problem.invalid([Violation(pointer: "/status", message: "is required")]) }
        let precondition = try reader.precondition(request, bodyVersion: try reader.bodyVersion(tree))
        let record = try await write("status") { try await registry.writeStatus(name, .merge(status), precondition: precondition) }
        return .resource(readable(record, by: principal))
    }

    /// Runs a registry write, counting it by outcome (`triad_registry_writes_total`) and timing
    /// it (`triad_registry_write_seconds`), and wakes event streams when it succeeded.
    private func write<T>(_ operation: String, _ body: () async throws -> T) async throws -> T {
        let start = DispatchTime.now()
        let outcome: String
        defer {
            Counter(label: "triad_registry_writes_total", dimensions: [("operation", operation), ("result", outcome)]).increment()
            Timer(label: "triad_registry_write_seconds", dimensions: [("operation", operation)]).recordInterval(since: start)
        }
        do {
            let result = try await body()
            outcome = "ok"
            written()
            return result
        } catch let error as RegistryError {
            outcome =
                switch error {
                case .notFound: "not_found"
                case .alreadyExists, .conflict, .tokenExists, .bindingConflict: "conflict"
                case .preconditionFailed: "precondition_failed"
                case .invalid: "invalid"
                case .forbidden: "forbidden"
                case .unavailable: "unavailable"
                }
            throw error
        } catch {
            outcome = "error"
            throw error
        }
    }

    /// Refuses (422) operations whose new or changed URL points outside the allowed hosts.
    /// `previous`: the stored resource's operations (their unchanged URLs are not checked again).
    private func checkOperations(_ operations: [ResourceOperationSpec]?, previous: [ResourceOperationSpec]?) async throws {
        guard let operations, !operations.isEmpty else { return }
        let violations = await addressing.violations(operations, previous: previous ?? [])
        guard violations.isEmpty else { throw Problem.invalid(violations) }
    }

    /// Reads, validates and decodes a Resource document from the body.
    private func document(_ request: Request, pathName: String? = nil) async throws -> Resource {
        let tree = try await reader.tree(request, kind: .document)
        var violations = ResourceValidator.validate(tree)
        if let pathName, let bodyName = tree["metadata"]?["name"]?.stringValue, bodyName != pathName {
            violations.append(Violation(pointer: "/metadata/name", message: "must match the name in the URL (\(pathName))"))
        }
        guard violations.isEmpty else { throw Problem.invalid(violations) }
        return try Resource(validated: tree)
    }
}
