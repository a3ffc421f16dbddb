import Hummingbird

/// Registers routes with the router and remembers them as `METHOD /path/{param}`, so a test can
/// compare what the server serves with `schemas/openapi.yaml`.
public final class RouteTable {
    let router: Router<TriadRequestContext>
    public private(set) var routes: [String] = []

    init(router: Router<TriadRequestContext>) {
        self.router = router
    }

    func on(_ method: HTTPRequest.Method, _ path: String,
            _ handler: @escaping @Sendable (Request, TriadRequestContext) async throws -> Response) {
        routes.append("\(method.rawValue) \(path)")
        // OpenAPI writes parameters as {name}; Hummingbird as :name.
        let hbPath = path.split(separator: "/", omittingEmptySubsequences: false).map { segment in
            segment.hasPrefix("{") && segment.hasSuffix("}") ? ":" + segment.dropFirst().dropLast() : String(segment)
        }.joined(separator: "/")
        router.on(RouterPath(hbPath), method: method, use: handler)
    }
}
