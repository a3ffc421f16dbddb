import Hummingbird
import Logging
import TriadCore

/// Outermost: turns every error into problem+json, so no route leaks an internal message.
struct ProblemMiddleware: RouterMiddleware {
    typealias Context = TriadRequestContext
    let known: KnownRoutes

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let problem as Problem {
            return try problem.response(from: request, context: context)
        } catch let error as RegistryError {
            return try Problem.from(error).response(from: request, context: context)
        } catch let error as HTTPError {
            let served = error.status == .notFound ? known.methods(for: request.uri.path) : []
            var problem: Problem =
                switch error.status {
                case .notFound where !served.isEmpty:
                    Problem(
                        .methodNotAllowed, "method-not-allowed", "Method not allowed",
                        detail: "\(request.method) is not allowed on \(request.uri.path); it serves \(served.joined(separator: ", "))")
                case .notFound: .notFound("no route for \(request.method) \(request.uri.path)")
                case .methodNotAllowed:
                    Problem(
                        .methodNotAllowed, "method-not-allowed", "Method not allowed",
                        detail: "\(request.method) is not allowed on \(request.uri.path)")
                case .contentTooLarge: .tooLarge(limit: context.maxUploadSize)
                default: Problem(error.status, "http-\(error.status.code)", error.status.reasonPhrase, detail: error.body)
                }
            if !served.isEmpty { problem.headers[.allow] = served.joined(separator: ", ") }
            return try problem.response(from: request, context: context)
        } catch {
            context.logger.error("request failed", metadata: ["error.type": "\(String(reflecting: type(of: error)))"])
            return try Problem.internalError().response(from: request, context: context)
        }
    }
}

/// Every route but `/healthz`, `/readyz` and the console's static files needs
/// `Authorization: Bearer <token>`.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = TriadRequestContext
    let authority: TokenAuthority
    static let openPaths: Set<String> = ["/healthz", "/readyz"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if ConsoleRoutes.isOpen(request.uri.path) { return try await next(request, context) }
        if Self.openPaths.contains(request.uri.path) {
            // Open, but a valid token still says who asks (an admin is told more by /readyz).
            var context = context
            if let header = request.headers[.authorization], header.lowercased().hasPrefix("bearer "),
                let principal = try? await authority.authenticate(String(header.dropFirst(7)))
            {
                context.principal = principal
            }
            return try await next(request, context)
        }
        guard let header = request.headers[.authorization] else {
            throw Problem.unauthorized("missing Authorization header; send Authorization: Bearer <token>")
        }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer", !parts[1].isEmpty else {
            throw Problem.unauthorized("the Authorization header must be Bearer <token>")
        }
        guard let principal = try await authority.authenticate(String(parts[1])) else {
            throw Problem.unauthorized("the token is unknown or revoked")
        }
        var context = context
        context.principal = principal
        context.bearerSecret = String(parts[1])
        return try await next(request, context)
    }
}
