import Foundation
import Hummingbird
import TriadCore

/// `POST /api/v1/resources/{name}/operations/{op}` (invoke) and the ledger,
/// `GET /api/v1/invocations` and `GET /api/v1/invocations/{id}`.
struct InvocationRoutes {
    let registry: Registry
    let runner: InvocationRunner
    let reader: RequestReader

    func register(_ routes: RouteTable) {
        routes.on(.post, "/api/v1/resources/{name}/operations/{op}", invoke)
        routes.on(.get, "/api/v1/invocations", list)
        routes.on(.get, "/api/v1/invocations/{id}", get)
    }

    @Sendable func invoke(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let principal = try context.require(.invokeOperations)
        let name = try context.parameters.name()
        let opName = try context.parameters.require("op")
        var force = false
        var callerQuery: [(String, String)] = []
        for (key, value) in request.uri.queryParameters {
            if key == "force" {
                guard value == "true" || value == "false" else { throw Problem.badRequest("force must be true or false") }
                force = value == "true"
            } else {
                callerQuery.append((String(key), String(value)))
            }
        }
        if force && !principal.may(.writeResources) {
            throw Problem.forbidden("only an operator or admin may invoke with force=true")
        }
        let body = try await jsonBody(request)
        let stored = try await registry.get(name)
        let resource = try stored.invocationTarget()
        guard ResourceValidator.isValidOperationName(opName),
            let operation = resource.spec.operations?.first(where: { $0.name == opName })
        else {
            let known = (resource.spec.operations ?? []).map(\.name)
            throw Problem(
                .notFound, "operation-not-found", "Operation not found",
                detail: "resource \(name) has no operation \"\(opName)\"" + (known.isEmpty ? " (it has none)" : "; it has: \(known.joined(separator: ", "))"))
        }
        if resource.status?.phase == .failed && !force {
            let why = resource.status?.conditions?.first(where: { $0.status == .false })?.message
            throw Problem(
                .conflict, "resource-failed", "Resource failed",
                detail: "resource \(name) is Failed" + (why.map { ": \($0)" } ?? "") + "; an operator may invoke it anyway with ?force=true")
        }
        if resource.spec.accessMode == .exclusive {
            try Self.requireBinding(name, resource.status?.binding, caller: principal.name)
        }
        let async = request.headers[.init("Prefer")!]?.lowercased().contains("respond-async") ?? false
        let incomingTrace = Invocation.incomingTraceID(
            traceparent: request.headers[.init("traceparent")!], b3: request.headers[.init("x-b3-traceid")!])
        let invocation = try await runner.begin(
            resource: stored, operation: operation, caller: principal, async: async, incomingTrace: incomingTrace,
            link: request.headers[.init(InvocationRunner.linkHeader)!])
        let job = InvocationRunner.Job(invocation: invocation, resource: stored, action: operation.httpAction, query: callerQuery, body: body)
        if async && runner.enqueue(job) {
            let location = "/api/v1/invocations/\(invocation.id)"
            return .json(
                .accepted, JSONCoding.encode(JSONValue.object(["invocation": Self.tree(invocation)])),
                headers: [.location: location, .init("Preference-Applied")!: "respond-async"])
        }
        return try Self.answer(await runner.perform(job, on: context.eventLoop))
    }

    /// An exclusive resource is invoked only by the holder of its live binding.
    static func requireBinding(_ name: String, _ binding: Binding?, caller: String) throws {
        guard let lease = binding else {
            throw Problem(
                .conflict, "binding-required", "Binding required",
                detail: "\(name) is Exclusive: bind it first (POST /api/v1/resources/\(name)/binding)")
        }
        let live = Timestamp.parse(lease.expiresAt).map { $0 > Date() } ?? false
        guard live else {
            throw Problem(
                .conflict, "binding-required", "Binding required",
                detail: "\(name) is Exclusive and its binding by \(lease.holder) expired at \(lease.expiresAt): bind it again")
        }
        guard lease.holder == caller else {
            throw Problem(
                .conflict, "binding-required", "Binding required",
                detail: "\(name) is Exclusive and bound by \(lease.holder) until \(lease.expiresAt)")
        }
    }

    /// The caller's body: empty, or JSON (forwarded as it came).
    private func jsonBody(_ request: Request) async throws -> Data? {
        let data = try await reader.body(request)
        guard !data.isEmpty else { return nil }
        let media = request.headers[.contentType]?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        guard media == "application/json" else {
            throw Problem.unsupportedMediaType("an operation's body is application/json, not \(media ?? "no Content-Type")")
        }
        do { _ = try JSONCoding.parse(data) } catch { throw Problem.badRequest("the body is not JSON: \(error.message)") }
        return data
    }

    /// The upstream's answer as Triad's: 200 with `{invocation, response}` when it succeeded;
    /// otherwise a problem that carries both: 422 `upstream-rejected` (the upstream refused the
    /// call with a 4xx), 502 (it failed, could not be reached, or refused Triad's own
    /// credentials), 504 (no answer in time), 403 (its host is not allowed).
    static func answer(_ outcome: InvocationRunner.Outcome) throws -> Response {
        let invocation = tree(outcome.invocation)
        if let failure = outcome.failure {
            var problem: Problem
            switch failure {
            case .refused(let why): problem = Problem(.forbidden, "host-not-allowed", "Host not allowed", detail: why)
            case .unreachable(let why): problem = Problem(.badGateway, "upstream-unreachable", "Upstream unreachable", detail: why)
            case .timedOut: problem = Problem(.gatewayTimeout, "upstream-timeout", "Upstream timeout", detail: outcome.invocation.message)
            }
            problem.extensions["invocation"] = invocation
            throw problem
        }
        guard let answer = outcome.answer else { throw Problem.internalError() }
        var headers: [String: JSONValue] = [:]
        for (name, value) in answer.headers {
            if case .string(let earlier)? = headers[name] { headers[name] = .string(earlier + ", " + value) } else { headers[name] = .string(value) }
        }
        var response: [String: JSONValue] = ["status": .number(Double(answer.status)), "headers": .object(headers), "body": body(answer)]
        if answer.truncated { response["truncated"] = .bool(true) }
        if answer.status < 400 {
            return .json(.ok, JSONCoding.encode(JSONValue.object(["invocation": invocation, "response": .object(response)])))
        }
        var problem: Problem
        if answer.status >= 500 || answer.status == 401 || answer.status == 407 {
            // Credentials problems upstream are Triad's (the operation's headers), not the caller's.
            problem = Problem(.badGateway, "upstream-failed", "Upstream failed", detail: "the upstream answered HTTP \(answer.status)")
        } else {
            problem = Problem(
                .unprocessableContent, "upstream-rejected", "Upstream rejected the call",
                detail: "the upstream refused the call with HTTP \(answer.status); its answer is in response")
        }
        problem.extensions["invocation"] = invocation
        problem.extensions["response"] = .object(response)
        throw problem
    }

    static func body(_ answer: UpstreamCaller.Answer) -> JSONValue {
        if answer.body.isEmpty { return .null }
        if (answer.contentType ?? "").lowercased().contains("json"), !answer.truncated, let tree = try? JSONCoding.parse(answer.body) {
            return tree
        }
        return .string(String(decoding: answer.body, as: UTF8.self))
    }

    static func tree(_ invocation: Invocation) -> JSONValue {
        (try? JSONCoding.parse(invocation.document)) ?? .object([:])
    }

    // MARK: the ledger

    @Sendable func list(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let principal = try Self.ledgerReader(context)
        let params = request.uri.queryParameters
        var query = InvocationQuery()
        if let resource = params.get("resource"), !resource.isEmpty {
            guard ResourceValidator.isValidName(resource) else { throw Problem.badRequest("resource must be a resource name") }
            query.resource = resource
        }
        if let caller = params.get("caller"), !caller.isEmpty {
            guard caller.utf8.count <= 253 else { throw Problem.badRequest("caller must be a token name") }
            query.caller = caller
        }
        if !principal.may(.readAllInvocations) {
            // Apps read their own invocations only.
            if let asked = query.caller, asked != principal.name {
                throw Problem.forbidden("role \(principal.role.rawValue) may read only its own invocations (caller=\(principal.name))")
            }
            query.caller = principal.name
        }
        if let since = params.get("since") {
            guard let date = Timestamp.parse(since) else { throw Problem.badRequest("since must be an RFC 3339 date-time") }
            query.since = Timestamp.format(date)
        }
        if let limit = params.get("limit") {
            guard let n = Int(limit), (1...InvocationQuery.maxLimit).contains(n) else {
                throw Problem.badRequest("limit must be an integer from 1 to \(InvocationQuery.maxLimit)")
            }
            query.limit = n
        }
        if let token = params.get("continue"), !token.isEmpty {
            guard let position = LedgerContinueToken.decode(token) else { throw Problem.badRequest("continue is not a token this server issued") }
            query.before = position
        }
        let page = try await registry.ledger.invocations(query)
        var meta: [String: JSONValue] = [
            "matched": .number(Double(page.matched)),
            "totalPrice": .number((page.totalCharged * 1_000_000).rounded() / 1_000_000),
        ]
        if let next = page.next { meta["continue"] = .string(LedgerContinueToken.encode(next)) }
        let list: JSONValue = .object([
            "apiVersion": .string(Resource.apiVersion), "kind": .string("InvocationList"),
            "items": .array(page.items.map(Self.tree)), "metadata": .object(meta),
        ])
        return .json(.ok, JSONCoding.encode(list))
    }

    @Sendable func get(_ request: Request, context: TriadRequestContext) async throws -> Response {
        let principal = try Self.ledgerReader(context)
        let id = try context.parameters.require("id")
        guard id.utf8.count <= 64, let invocation = try await registry.ledger.invocation(id: id),
            principal.may(.readAllInvocations) || invocation.caller == principal.name
        else {
            throw Problem.notFound("invocation \"\(id)\" does not exist")
        }
        return .json(.ok, invocation.document)
    }

    /// Who may read the ledger: those who read it all, and apps (their own part).
    static func ledgerReader(_ context: TriadRequestContext) throws -> TriadCore.Principal {
        guard let principal = context.principal else { throw Problem.unauthorized("a bearer token is required") }
        guard principal.may(.readAllInvocations) || principal.may(.invokeOperations) else {
            throw Problem.forbidden("role \(principal.role.rawValue) may not read invocations")
        }
        return principal
    }
}

/// `continue` tokens of the ledger carry the last position returned.
enum LedgerContinueToken {
    static func encode(_ position: Int64) -> String { Data("i:\(position)".utf8).base64EncodedString() }

    static func decode(_ token: String) -> Int64? {
        guard let data = Data(base64Encoded: token), let text = String(data: data, encoding: .utf8), text.hasPrefix("i:"),
            let position = Int64(text.dropFirst(2)), position > 0
        else { return nil }
        return position
    }
}
