import Dispatch
import Hummingbird
import Metrics
import Synchronization

/// Counts and times requests by route, method and status (`triad_http_requests_total`,
/// `triad_http_request_duration_seconds`). Unlike Hummingbird's MetricsMiddleware it records when
/// the response is ready rather than after it is written, which keeps the server's one-write path
/// for buffered bodies (that wrapper cost a quarter of the throughput of a GET). Streams (SSE)
/// are therefore timed to their first byte.
struct RequestMetricsMiddleware: RouterMiddleware {
    typealias Context = TriadRequestContext

    struct Key: Hashable {
        var route: String
        var method: String
        var status: Int
    }

    final class Cache: Sendable {
        private let entries = Mutex<[Key: (Counter, Timer)]>([:])

        func metrics(_ key: Key) -> (Counter, Timer) {
            entries.withLock { entries in
                if let found = entries[key] { return found }
                let dimensions = [("route", key.route), ("method", key.method), ("status", String(key.status))]
                let made = (
                    Counter(label: "triad_http_requests_total", dimensions: dimensions),
                    Timer(label: "triad_http_request_duration_seconds", dimensions: dimensions, preferredDisplayUnit: .seconds)
                )
                entries[key] = made
                return made
            }
        }
    }

    let cache = Cache()

    /// The methods the API serves; the others the HTTP parser accepts (PROPFIND, MKCOL and dozens
    /// more) share one label, so they cannot multiply the exported series.
    static let methods: Set<HTTPRequest.Method> = [.get, .head, .post, .put, .patch, .delete, .options]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = DispatchTime.now().uptimeNanoseconds
        let response = try await next(request, context)
        let method = Self.methods.contains(request.method) ? request.method.rawValue : "other"
        let (counter, timer) = cache.metrics(Key(route: context.endpointPath ?? "unmatched", method: method, status: Int(response.status.code)))
        counter.increment()
        timer.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - start))
        return response
    }
}
