import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import TriadCore

/// A small client of the Triad REST API, used by the CLI verbs.
public struct TriadClient: Sendable {
    public let server: String
    public let token: String?
    let http: HTTPClient

    public init(server: String, token: String?, http: HTTPClient = .shared) {
        self.server = server.hasSuffix("/") ? String(server.dropLast()) : server
        self.token = token
        self.http = http
    }

    public struct Reply: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: Data

        public func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }

        public var json: JSONValue? { try? JSONCoding.parse(body) }
    }

    /// An HTTP client for a person at a terminal: a server that is not listening is said at once
    /// (the shared client retries a refused connection until the request's deadline, 30 s).
    public static let failingFast: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// A failure worth one readable line: what the server said, or why it could not be asked.
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var status: Int?
        public var description: String

        init(reply: Reply) {
            status = reply.status
            let problem = reply.json
            var text = problem?["title"]?.stringValue ?? "HTTP \(reply.status)"
            if let detail = problem?["detail"]?.stringValue { text += ": \(detail)" }
            if case .array(let errors)? = problem?["errors"], errors.count > 1 {
                text +=
                    " ["
                    + errors.compactMap { e in
                        guard let p = e["pointer"]?.stringValue, let m = e["message"]?.stringValue else { return nil }
                        return "\(p): \(m)"
                    }.joined(separator: "; ") + "]"
            }
            description = "\(text) (HTTP \(reply.status))"
        }

        init(_ message: String) {
            status = nil
            description = message
        }
    }

    public func send(
        _ method: HTTPMethod, _ path: String, body: Data? = nil, contentType: String = "application/json",
        headers extra: [(String, String)] = [], timeout: TimeAmount = .seconds(30)
    ) async throws -> Reply {
        var request = HTTPClientRequest(url: server + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (k, v) in extra { request.headers.add(name: k, value: v) }
        if let body {
            request.headers.add(name: "Content-Type", value: contentType)
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: timeout)
        } catch {
            throw Failure("cannot reach the Triad server at \(server): \(Self.describe(error))")
        }
        let buffer = try await response.body.collect(upTo: 64 << 20)
        return Reply(
            status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) },
            body: Data(buffer.readableBytesView))
    }

    /// `send`, but a non-2xx answer becomes a `Failure`.
    public func call(
        _ method: HTTPMethod, _ path: String, body: Data? = nil, contentType: String = "application/json",
        headers: [(String, String)] = []
    ) async throws -> Reply {
        let reply = try await send(method, path, body: body, contentType: contentType, headers: headers)
        guard (200..<300).contains(reply.status) else { throw Failure(reply: reply) }
        return reply
    }

    /// Follows `GET /api/v1/events` and hands each event (id, type, CloudEvent JSON) to `onEvent`.
    public func streamEvents(query: String, lastEventID: String?, onEvent: @Sendable (String, String, Data) async throws -> Void) async throws {
        var request = HTTPClientRequest(url: server + "/api/v1/events" + query)
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let lastEventID { request.headers.add(name: "Last-Event-ID", value: lastEventID) }
        request.headers.add(name: "Accept", value: "text/event-stream")
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .hours(24 * 365))
        } catch {
            throw Failure("cannot reach the Triad server at \(server): \(Self.describe(error))")
        }
        guard response.status == .ok else {
            let buffer = try await response.body.collect(upTo: 1 << 20)
            throw Failure(reply: Reply(status: Int(response.status.code), headers: [], body: Data(buffer.readableBytesView)))
        }
        var parser = ServerSentEventParser()
        for try await chunk in response.body {
            for event in parser.feed(Data(chunk.readableBytesView)) {
                try await onEvent(event.id ?? "", event.event ?? "message", event.data)
            }
        }
    }

    static func describe(_ error: any Error) -> String {
        let text = String(describing: error)
        if text.contains("connectTimeout") || text.contains("connectionRefused") || text.contains("Connection refused") {
            return "connection refused (is `triad server` running?)"
        }
        return text
    }
}

/// Splits a `text/event-stream` into events (WHATWG framing: `field: value` lines, blank line ends).
public struct ServerSentEventParser: Sendable {
    public struct Event: Sendable, Equatable {
        public var id: String?
        public var event: String?
        public var data: Data
    }

    private var pending = Data()
    private var current = Event(id: nil, event: nil, data: Data())
    private var hasData = false

    public init() {}

    public mutating func feed(_ bytes: Data) -> [Event] {
        pending.append(bytes)
        var out: [Event] = []
        while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
            var line = pending[pending.startIndex..<newline]
            pending.removeSubrange(pending.startIndex...newline)
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            if line.isEmpty {
                if hasData { out.append(current) }
                current = Event(id: nil, event: nil, data: Data())
                hasData = false
                continue
            }
            if line.first == UInt8(ascii: ":") { continue }
            let text = String(decoding: line, as: UTF8.self)
            let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            let field = String(parts[0])
            var value = parts.count > 1 ? String(parts[1]) : ""
            if value.hasPrefix(" ") { value.removeFirst() }
            switch field {
            case "id": current.id = value
            case "event": current.event = value
            case "data":
                if hasData { current.data.append(UInt8(ascii: "\n")) }
                current.data.append(Data(value.utf8))
                hasData = true
            default: break
            }
        }
        return out
    }
}
