import Hummingbird
import Synchronization

/// Registers routes with the router and remembers them as `METHOD /path/{param}`, so a test can
/// compare what the server serves with `schemas/openapi.yaml`.
public final class RouteTable {
    let router: Router<TriadRequestContext>
    public private(set) var routes: [String] = []
    /// The same routes, for answering a method a path does not serve (405 with `Allow`).
    let known: KnownRoutes

    init(router: Router<TriadRequestContext>, known: KnownRoutes) {
        self.router = router
        self.known = known
    }

    func on(
        _ method: HTTPRequest.Method, _ path: String,
        _ handler: @escaping @Sendable (Request, TriadRequestContext) async throws -> Response
    ) {
        routes.append("\(method.rawValue) \(path)")
        known.add(method.rawValue, path)
        // OpenAPI writes parameters as {name}; Hummingbird as :name.
        let hbPath = path.split(separator: "/", omittingEmptySubsequences: false).map { segment in
            segment.hasPrefix("{") && segment.hasSuffix("}") ? ":" + segment.dropFirst().dropLast() : String(segment)
        }.joined(separator: "/")
        router.on(RouterPath(hbPath), method: method, use: handler)
    }
}

/// Which methods each path pattern serves, filled as routes are registered and read by the
/// problem middleware when the router finds no route.
final class KnownRoutes: Sendable {
    private let table = Mutex<[(segments: [Substring], method: String)]>([])

    func add(_ method: String, _ path: String) {
        table.withLock { $0.append((path.split(separator: "/"), method)) }
    }

    /// The methods served on `path` (`{param}` segments match any one segment), sorted.
    func methods(for path: String) -> [String] {
        let segments = path.split(separator: "/")
        return table.withLock { routes in
            Set(
                routes.filter { route in
                    route.segments.count == segments.count
                        && zip(route.segments, segments).allSatisfy { pattern, segment in pattern.hasPrefix("{") || pattern == segment }
                }.map(\.method)
            ).sorted()
        }
    }
}
