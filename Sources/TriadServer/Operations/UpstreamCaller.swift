import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import TriadCore

/// Turns a host name into the addresses it resolves to (the system resolver; tests give their own).
public struct HostResolver: Sendable {
    public var resolve: @Sendable (String) async throws -> [[UInt8]]

    public init(resolve: @escaping @Sendable (String) async throws -> [[UInt8]]) {
        self.resolve = resolve
    }

    /// `getaddrinfo`, off the event loops (it blocks).
    public static let system = HostResolver { host in
        try await NIOThreadPool.singleton.runIfActive {
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var list: UnsafeMutablePointer<addrinfo>?
            let rc = getaddrinfo(host, nil, &hints, &list)
            guard rc == 0, let first = list else { throw UnresolvableHost(host: host) }
            defer { freeaddrinfo(first) }
            var out: [[UInt8]] = []
            var cursor: UnsafeMutablePointer<addrinfo>? = first
            while let entry = cursor {
                if let sa = entry.pointee.ai_addr {
                    switch Int32(sa.pointee.sa_family) {
                    case AF_INET:
                        var a = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
                        out.append(withUnsafeBytes(of: &a) { Array($0) })
                    case AF_INET6:
                        var a = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
                        out.append(withUnsafeBytes(of: &a) { Array($0) })
                    default: break
                    }
                }
                cursor = entry.pointee.ai_next
            }
            return out
        }
    }

    public struct UnresolvableHost: Error {
        public var host: String
        public init(host: String) { self.host = host }
    }
}

/// Decides where a call to an `httpAction` URL may go, by `--allowed-hosts`.
struct UpstreamAddressing: Sendable {
    let allowed: AllowedHosts
    let resolver: HostResolver

    enum Target: Equatable {
        /// Connect by name (the name itself is on the list).
        case name
        /// Connect to this address, which was checked (a later change of the name's records
        /// cannot send the call elsewhere).
        case address([UInt8])
    }

    struct Refused: Error { var reason: String }

    func target(host rawHost: String) async throws(Refused) -> Target {
        let host = rawHost.lowercased()
        if let literal = AllowedHosts.parseAddress(host) {
            guard allowed.allows(address: literal) else { throw Refused(reason: "\(rawHost) is not on the allowed hosts (\(allowed))") }
            return .address(literal)
        }
        if allowed.allows(name: host) { return .name }
        let addresses: [[UInt8]]
        do { addresses = try await resolver.resolve(host) } catch { throw Refused(reason: "\(rawHost) does not resolve") }
        guard let first = addresses.first(where: allowed.allows(address:)) else {
            throw Refused(reason: "\(rawHost) resolves to no address on the allowed hosts (\(allowed))")
        }
        return .address(first)
    }

    /// For writes: every operation whose URL is new or changed must point at an allowed host.
    func violations(_ operations: [ResourceOperationSpec], previous: [ResourceOperationSpec]) async -> [Violation] {
        let before = Dictionary(previous.map { ($0.name, $0.httpAction.url) }, uniquingKeysWith: { a, _ in a })
        var out: [Violation] = []
        for (i, op) in operations.enumerated() where before[op.name] != op.httpAction.url {
            guard let host = URLComponents(string: op.httpAction.url)?.host, !host.isEmpty else {
                out.append(Violation(pointer: "/spec/operations/\(i)/httpAction/url", message: "operation \(op.name): the URL has no host"))
                continue
            }
            do { _ = try await target(host: host) } catch {
                out.append(Violation(pointer: "/spec/operations/\(i)/httpAction/url", message: "operation \(op.name): \(error.reason)"))
            }
        }
        return out
    }
}

/// Performs one `httpAction`: method, URL with the operation's query merged with the caller's
/// (the caller wins), the operation's headers, the trace headers, the caller's JSON body; no
/// redirects followed; the answer's body kept up to `maxResponseBytes`.
struct UpstreamCaller: Sendable {
    let http: HTTPClient
    let addressing: UpstreamAddressing
    let timeout: Duration
    static let maxResponseBytes = 1 << 20

    struct Answer: Sendable {
        var status: Int
        var headers: [(String, String)]
        var body: Data
        var contentType: String?
        var truncated: Bool
    }

    enum Failure: Error {
        case refused(String)
        case unreachable(String)
        case timedOut
    }

    /// `timeout`: the invoke timeout, also the longest silence while an answer's body streams.
    static func makeClient(timeout: Duration) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.read = timeAmount(timeout)
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        configuration.timeout.connect = .seconds(5)
        // A refused connection is the upstream being down: say so now (a 502), rather than
        // retrying until the invoke timeout turns it into a 504.
        configuration.connectionPool.retryConnectionEstablishment = false
        // Concurrent invocations of one upstream each need a connection of their own; calls
        // nested in others to the same host (agents behind one mesh gateway calling each other
        // through Triad) need theirs while the outer ones hold theirs.
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 512
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// `link`: the invocation's `Triad-Invocation` header, which the upstream passes back on the
    /// calls it makes to Triad for this one. `eventLoop`: where the call and its connection live,
    /// if it is one of the client's (else any); the client otherwise kept the call on one loop
    /// and its connection on another, and passed every step of it between the two.
    func call(
        _ action: HTTPActionSpec, query callerQuery: [(String, String)], body: Data?, trace: (traceId: String, traceparent: String), link: String? = nil,
        on eventLoop: (any EventLoop)? = nil
    ) async throws(Failure)
        -> Answer
    {
        // Checked again here: a resource written before the validator checked ports may still hold one.
        guard Syntax.isHTTPURL(action.url) else { throw .refused("the operation's URL is not an http(s) URL with a host and a port in 1-65535") }
        guard var url = URLComponents(string: action.url), let host = url.host else { throw .refused("the operation's URL has no host") }
        let target: UpstreamAddressing.Target
        do { target = try await addressing.target(host: host) } catch { throw .refused(error.reason) }

        var merged = action.query ?? [:]
        for (key, value) in callerQuery { merged[key] = value }
        var items = url.queryItems ?? []
        items.removeAll { merged[$0.name] != nil }
        items += merged.sorted { $0.key < $1.key }.map { URLQueryItem(name: $0.key, value: $0.value) }
        url.queryItems = items.isEmpty ? nil : items
        let hostHeader = url.port.map { "\(host):\($0)" } ?? host
        if case .address(let bytes) = target, url.scheme == "http" {
            // Connect to the address that was checked; the Host header keeps the name.
            url.host = bytes.count == 4 ? bytes.map(String.init).joined(separator: ".") : "[\(Self.ipv6Text(bytes))]"
        }
        guard let text = url.string else { throw .refused("the operation's URL cannot be built") }

        var request: HTTPClient.Request
        do { request = try HTTPClient.Request(url: text, method: HTTPMethod(rawValue: action.action)) } catch {
            throw .refused("the operation's URL cannot be built")
        }
        for (name, value) in (action.headers ?? [:]).sorted(by: { $0.key < $1.key }) { request.headers.replaceOrAdd(name: name, value: value) }
        request.headers.replaceOrAdd(name: "host", value: hostHeader)
        request.headers.replaceOrAdd(name: "traceparent", value: trace.traceparent)
        request.headers.replaceOrAdd(name: "x-b3-traceid", value: trace.traceId)
        if let link { request.headers.replaceOrAdd(name: InvocationRunner.linkHeader, value: link) }
        if let body, !body.isEmpty {
            request.headers.replaceOrAdd(name: "content-type", value: "application/json")
            request.body = .bytes(body)
        }
        // The deadline bounds the whole call: connecting, the answer's head and its body. The
        // answer is gathered on the connection's event loop and handed over whole, and the call
        // lives on its connection's loop: a call to a fast upstream took 11 thread switches with
        // the streaming client API and a loop of its own, 8.7 now.
        let gatherer = CappedAnswer(limit: Self.maxResponseBytes)
        let ownLoop = eventLoop.flatMap { loop in http.eventLoopGroup.makeIterator().contains { $0 === loop } ? loop : nil }
        let task = http.execute(
            request: request, delegate: gatherer, eventLoop: ownLoop.map { .delegateAndChannel(on: $0) } ?? .indifferent,
            deadline: NIODeadline.now() + Self.timeAmount(timeout))
        do {
            return try await withTaskCancellationHandler {
                try await task.futureResult.get()
            } onCancel: {
                task.cancel()
            }
        } catch {
            // Past the limit the gatherer stops the call: what it kept is the answer.
            if let cut = gatherer.truncated { return cut }
            if let error = error as? HTTPClientError, error == .deadlineExceeded || error == .readTimeout { throw .timedOut }
            throw .unreachable(Self.describe(error))
        }
    }

    /// NIO's clock type for a Swift duration.
    static func timeAmount(_ duration: Duration) -> TimeAmount {
        .nanoseconds(duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
    }

    static func describe(_ error: any Error) -> String {
        if let e = error as? HTTPClientError { return "the upstream could not be reached (\(e))" }
        if error is NIOConnectionError || error is IOError { return "the upstream refused the connection" }
        return "the upstream could not be reached"
    }

    static func ipv6Text(_ bytes: [UInt8]) -> String {
        stride(from: 0, to: 16, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }.joined(separator: ":")
    }
}

/// Gathers an upstream's answer on its event loop: the head, and the body up to `limit` bytes.
/// Past the limit it stops the call and keeps what it has as a truncated answer.
private final class CappedAnswer: HTTPClientResponseDelegate {
    typealias Response = UpstreamCaller.Answer
    private let limit: Int
    // Only touched on the connection's event loop, one callback at a time, and read after.
    private let answer = Mutex(UpstreamCaller.Answer(status: 0, headers: [], body: Data(), contentType: nil, truncated: false))

    init(limit: Int) { self.limit = limit }

    /// The answer cut at the limit, once the body went past it.
    var truncated: UpstreamCaller.Answer? { answer.withLock { $0.truncated ? $0 : nil } }

    func didReceiveHead(task: HTTPClient.Task<Response>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        answer.withLock { a in
            a.status = Int(head.status.code)
            a.headers = head.headers.map { ($0.name.lowercased(), $0.value) }
            a.contentType = head.headers.first(name: "content-type")
        }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<Response>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        let full = answer.withLock { a -> Bool in
            guard !a.truncated else { return false }
            let room = limit - a.body.count
            guard buffer.readableBytes > room else {
                a.body.append(contentsOf: buffer.readableBytesView)
                return false
            }
            a.body.append(contentsOf: buffer.readableBytesView.prefix(room))
            a.truncated = true
            return true
        }
        if full { task.cancel() }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didFinishRequest(task: HTTPClient.Task<Response>) throws -> Response { answer.withLock { $0 } }
}
