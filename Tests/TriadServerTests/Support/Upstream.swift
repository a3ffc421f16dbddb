import Foundation
import Hummingbird
import NIOHTTP1
import ServiceLifecycle
import Synchronization
import TriadClient
import TriadCore
import TriadTesting

/// A small HTTP server that operations call in tests: it records every request and answers by
/// path: `/ok` echoes what it got (200, JSON), `/fail` answers 500, `/hang` never answers in time,
/// `/relay` invokes Triad in turn (an agent acting for its caller), `/large` answers 2 MiB of
/// text, `/endless` streams text and never ends.
final class Upstream: Sendable {
    struct Seen: Sendable {
        var method: String
        var path: String
        var query: [String: String]
        var headers: [String: String]
        var body: Data
    }

    final class Recorder: Sendable {
        let items = Mutex<[Seen]>([])
    }

    let baseURL: String
    let port: Int
    private let seen: Recorder
    private let task: Task<Void, any Error>
    private let group: ServiceGroup

    var requests: [Seen] { seen.items.withLock { $0 } }

    static func start() async throws -> Upstream {
        let seen = Recorder()
        let router = Router()
        let record: @Sendable (Request) async throws -> Seen = { request in
            var request = request
            let body = try await request.collectBody(upTo: 4 << 20)
            var query: [String: String] = [:]
            for (k, v) in request.uri.queryParameters { query[String(k)] = String(v) }
            var headers: [String: String] = [:]
            for field in request.headers { headers[field.name.canonicalName] = field.value }
            // HTTP/1.1 Host arrives as the request's authority.
            if let authority = request.head.authority { headers["host"] = authority }
            let s = Seen(method: request.method.rawValue, path: request.uri.path, query: query, headers: headers, body: Data(body.readableBytesView))
            seen.items.withLock { $0.append(s) }
            return s
        }
        router.on("/ok", method: .post) { request, _ -> Response in
            let s = try await record(request)
            let echo: [String: Any] = ["method": s.method, "query": s.query, "body": String(decoding: s.body, as: UTF8.self)]
            let data = try JSONSerialization.data(withJSONObject: echo, options: [.sortedKeys])
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
        // An agent that calls Triad on its caller's behalf: the body says where and with which
        // token; the call carries the trace context Triad sent here.
        router.on("/relay", method: .post) { request, _ -> Response in
            let s = try await record(request)
            let order = try JSONCoding.parse(s.body)
            guard let server = order["server"]?.stringValue, let path = order["path"]?.stringValue else { return Response(status: .badRequest) }
            let reply = try await TriadClient(server: server, token: order["token"]?.stringValue).send(
                .POST, path, body: Data("{}".utf8), headers: ["traceparent", "triad-invocation"].compactMap { name in s.headers[name].map { (name, $0) } })
            return Response(
                status: .init(code: reply.status), headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: reply.body)))
        }
        router.on("/fail", method: .post) { request, _ -> Response in
            _ = try await record(request)
            return Response(status: .internalServerError, body: .init(byteBuffer: ByteBuffer(string: "boom")))
        }
        router.on("/hang", method: .post) { request, _ -> Response in
            _ = try await record(request)
            try await Task.sleep(for: .seconds(60))
            return Response(status: .ok)
        }
        router.on("/large", method: .post) { request, _ -> Response in
            _ = try await record(request)
            return Response(
                status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(repeating: UInt8(ascii: "a"), count: 2 << 20)))
        }
        router.on("/endless", method: .post) { request, _ -> Response in
            _ = try await record(request)
            return Response(
                status: .ok, headers: [.contentType: "text/plain"],
                body: ResponseBody { writer in
                    while true {
                        try await writer.write(ByteBuffer(repeating: UInt8(ascii: "b"), count: 64 << 10))
                        try await Task.sleep(for: .milliseconds(5))
                    }
                })
        }
        let (ports, portContinuation) = AsyncStream<Int>.makeStream()
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in portContinuation.yield(channel.localAddress?.port ?? 0) })
        let group = ServiceGroup(configuration: .init(services: [app], logger: TestEnvironment.logger))
        let task = Task { try await group.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else { throw SetupError("the upstream did not start") }
        return Upstream(port: port, seen: seen, task: task, group: group)
    }

    private init(port: Int, seen: Recorder, task: Task<Void, any Error>, group: ServiceGroup) {
        self.port = port
        self.baseURL = "http://127.0.0.1:\(port)"
        self.seen = seen
        self.task = task
        self.group = group
    }

    func stop() async {
        task.cancel()
        _ = try? await task.value
    }
}
