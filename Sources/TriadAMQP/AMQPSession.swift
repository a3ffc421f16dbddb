import CRabbitMQ
import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

// Method ids from amqp_framing.h, spelled out: there they are cast macros
// (`((amqp_method_number_t)0x003C0050)`), which the Clang importer does not bring into Swift.
enum Method {
    static let connectionClose: amqp_method_number_t = 0x000A_0032  // 10, 50
    static let connectionCloseOK: amqp_method_number_t = 0x000A_0033  // 10, 51
    static let channelClose: amqp_method_number_t = 0x0014_0028  // 20, 40
    static let channelCloseOK: amqp_method_number_t = 0x0014_0029  // 20, 41
    static let basicReturn: amqp_method_number_t = 0x003C_0032  // 60, 50
    static let basicDeliver: amqp_method_number_t = 0x003C_003C  // 60, 60
    static let basicAck: amqp_method_number_t = 0x003C_0050  // 60, 80
    static let basicNack: amqp_method_number_t = 0x003C_0078  // 60, 120
}

// Computed, not stored: C structs holding pointers are not Sendable, so a global `let` of one is
// rejected in Swift 6 (and amqp_empty_table / amqp_empty_bytes are C globals `var`s).
var emptyTable: amqp_table_t { amqp_table_t(num_entries: 0, entries: nil) }
var emptyBytes: amqp_bytes_t { amqp_bytes_t(len: 0, bytes: nil) }

extension amqp_bytes_t {
    /// Copies the bytes out of C memory.
    var string: String { len == 0 ? "" : String(decoding: UnsafeRawBufferPointer(start: bytes, count: len), as: UTF8.self) }
    var array: [UInt8] { len == 0 ? [] : Array(UnsafeRawBufferPointer(start: bytes, count: len)) }
}

/// Heap copies of Swift strings as amqp_bytes_t, freed together (amqp_cstring_bytes on a Swift
/// String would dangle: the implicit char* lives only for one call).
struct OwnedBytes: ~Copyable {
    private var all: [amqp_bytes_t] = []
    mutating func dup(_ s: String) -> amqp_bytes_t {
        if s.isEmpty { return emptyBytes }
        let b = s.withCString { amqp_bytes_malloc_dup(amqp_cstring_bytes($0)) }
        all.append(b)
        return b
    }
    deinit {
        for var b in all {
            amqp_bytes_free(b)
            b.bytes = nil
        }
    }
}

extension Duration {
    var timeval: timeval {
        let (s, attos) = components
        if s < 0 { return Glibc.timeval(tv_sec: 0, tv_usec: 0) }
        return Glibc.timeval(tv_sec: Int(s), tv_usec: Int(attos / 1_000_000_000_000))
    }
}

/// One AMQP connection with channel 1 open. Not Sendable and not thread-safe (rabbitmq-c's
/// connection state is not): each public class keeps its session inside a Mutex and touches it
/// only from blocks on its own serial queue, so one thread at a time owns the C handles.
class AMQPSession {  // subclassed by PublisherSession and ConsumerSession
    let endpoint: AMQPEndpoint
    let channel: amqp_channel_t = 1
    private(set) var conn: amqp_connection_state_t?
    var where_: String { "\(endpoint.host):\(endpoint.port)" }

    init(endpoint: AMQPEndpoint) throws(AMQPError) {
        self.endpoint = endpoint
        guard let conn = amqp_new_connection() else { throw AMQPError("cannot allocate an AMQP connection") }
        self.conn = conn
        guard let socket = amqp_tcp_socket_new(conn) else {
            destroy()
            throw AMQPError("cannot create a TCP socket for \(where_)")
        }
        var tv = Duration.seconds(5).timeval
        let rc = amqp_socket_open_noblock(socket, endpoint.host, Int32(endpoint.port), &tv)
        if rc != AMQP_STATUS_OK.rawValue {
            destroy()
            throw AMQPError("cannot connect to \(where_): \(Self.socketReason(rc, host: endpoint.host, port: endpoint.port))")
        }
        // Bound every later RPC, so a broker that stops answering cannot hang the owner thread.
        var rpcTimeout = Duration.seconds(10).timeval
        amqp_set_rpc_timeout(conn, &rpcTimeout)

        // heartbeat 0: rabbitmq-c only sends heartbeats from inside its own calls, so an idle
        // publisher with heartbeats on would be dropped by the broker.
        let login = camqp_login_plain(conn, endpoint.vhost, 0, 131_072, 0, endpoint.user, endpoint.password)
        if let why = describe(login) {
            destroy()
            throw AMQPError("cannot log in to \(where_) vhost '\(endpoint.vhost)' as '\(endpoint.user)': \(why)")
        }
        do throws(AMQPError) { try openChannel() } catch {
            destroy()
            throw error
        }
    }

    deinit { destroy() }

    var isOpen: Bool { conn != nil }

    func openChannel() throws(AMQPError) {
        let c = try live()
        amqp_channel_open(c, channel)
        try check(amqp_get_rpc_reply(c), "open channel")
    }

    /// A durable topic exchange (declaring an existing one with the same kind is a no-op).
    func declareTopicExchange(_ name: String) throws(AMQPError) {
        let c = try live()
        var owned = OwnedBytes()
        amqp_exchange_declare(
            c, channel, owned.dup(name), owned.dup("topic"),
            0 /* passive */, 1 /* durable */, 0 /* auto_delete */, 0 /* internal */, emptyTable)
        try check(amqp_get_rpc_reply(c), "declare exchange '\(name)'")
    }

    func live() throws(AMQPError) -> amqp_connection_state_t {
        guard let conn else { throw AMQPError("not connected to \(where_): call connect() first") }
        return conn
    }

    /// Turns an RPC reply into an error. A channel close is answered and the channel reopened, so
    /// the session stays usable; a connection close or a library error ends the session.
    func check(_ reply: amqp_rpc_reply_t, _ what: String) throws(AMQPError) {
        guard let why = describe(reply) else { return }
        if reply.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && reply.reply.id == Method.channelClose {
            recoverChannel()
        } else {
            destroy()
        }
        throw AMQPError("\(what): \(why)")
    }

    /// A readable reason, or nil for success. Decodes the broker's close method for server errors.
    func describe(_ reply: amqp_rpc_reply_t) -> String? {
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return nil
        case AMQP_RESPONSE_NONE:
            return "no reply from the broker"
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            return Self.libraryError(reply.library_error)
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            return Self.describeClose(id: reply.reply.id, decoded: reply.reply.decoded)
        default:
            return "unknown reply type \(reply.reply_type.rawValue)"
        }
    }

    static func describeClose(id: amqp_method_number_t, decoded: UnsafeMutableRawPointer?) -> String {
        switch id {
        case Method.channelClose:
            guard let m = decoded?.assumingMemoryBound(to: amqp_channel_close_t.self).pointee else { break }
            return "broker refused: \(m.reply_code) \(m.reply_text.string)"
        case Method.connectionClose:
            guard let m = decoded?.assumingMemoryBound(to: amqp_connection_close_t.self).pointee else { break }
            return "broker closed the connection: \(m.reply_code) \(m.reply_text.string)"
        default:
            break
        }
        return "unexpected method 0x\(String(id, radix: 16)) from the broker"
    }

    static func libraryError(_ code: Int32) -> String {
        guard let s = amqp_error_string2(code) else { return "rabbitmq-c error \(code)" }
        return String(cString: s)
    }

    /// rabbitmq-c 0.11 reports every failed connect as "a socket error occurred", and errno is
    /// left at EINPROGRESS from its non-blocking connect (the real cause sat in SO_ERROR and is
    /// gone). So on a socket error, retry once with a plain blocking connect to learn why.
    static func socketReason(_ rc: Int32, host: String, port: Int) -> String {
        if rc == AMQP_STATUS_TIMEOUT.rawValue { return "timed out after 5 s" }
        if rc == AMQP_STATUS_SOCKET_ERROR.rawValue || rc == AMQP_STATUS_TCP_ERROR.rawValue,
            let why = probeConnect(host: host, port: port)
        {
            return why
        }
        return libraryError(rc)
    }

    /// nil if a TCP connect succeeds (then the library's own message is the best we have).
    static func probeConnect(host: String, port: Int) -> String? {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let gai = getaddrinfo(host, String(port), &hints, &list)
        guard gai == 0, let list else { return "cannot resolve host: \(String(cString: gai_strerror(gai)))" }
        defer { freeaddrinfo(list) }
        var lastError: Int32 = 0
        var ai: UnsafeMutablePointer<addrinfo>? = list
        while let a = ai {
            ai = a.pointee.ai_next
            let fd = socket(a.pointee.ai_family, a.pointee.ai_socktype, a.pointee.ai_protocol)
            if fd < 0 {
                lastError = errno
                continue
            }
            defer { Glibc.close(fd) }
            var tv = Duration.seconds(3).timeval  // SO_SNDTIMEO also bounds connect() on Linux
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            if Glibc.connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0 { return nil }
            lastError = errno
        }
        guard lastError != 0, let s = strerror(lastError) else { return nil }
        return String(cString: s).lowercased()
    }

    /// Answers a broker's channel.close and reopens channel 1.
    func recoverChannel() {
        guard let c = conn else { return }
        var ok = amqp_channel_close_ok_t(dummy: 0)
        guard amqp_send_method(c, channel, Method.channelCloseOK, &ok) == AMQP_STATUS_OK.rawValue else {
            destroy()
            return
        }
        amqp_maybe_release_buffers(c)
        amqp_channel_open(c, channel)
        if describe(amqp_get_rpc_reply(c)) != nil {
            destroy()
            return
        }
        afterChannelReopen()
    }

    /// Hook for subclasses' per-channel state (confirm mode, delivery tags).
    func afterChannelReopen() {}

    /// Answers a broker's connection.close, then tears down.
    func acknowledgeConnectionClose() {
        if let c = conn {
            var ok = amqp_connection_close_ok_t(dummy: 0)
            _ = amqp_send_method(c, 0, Method.connectionCloseOK, &ok)
        }
        destroy()
    }

    /// Polite close: channel, connection, then free everything. Errors are irrelevant here.
    func close() {
        guard let c = conn else { return }
        _ = amqp_channel_close(c, channel, AMQP_REPLY_SUCCESS)
        _ = amqp_connection_close(c, AMQP_REPLY_SUCCESS)
        destroy()
    }

    func destroy() {
        guard let c = conn else { return }
        conn = nil
        _ = amqp_destroy_connection(c)  // also closes and frees the socket
    }
}

/// Runs blocks on one serial queue, each with exclusive access to the owner's session.
/// Sendable without @unchecked: only `let`s of Sendable types (DispatchQueue, Mutex, Atomic).
final class SessionOwner<S: AMQPSession>: Sendable {
    let queue: DispatchQueue
    let session = Mutex<S?>(nil)  // only locked on `queue`, so never contended for long
    let connected = Atomic<Bool>(false)

    init(label: String) { queue = DispatchQueue(label: label) }

    func run<T: Sendable>(_ body: @escaping @Sendable (inout S?) throws(AMQPError) -> T) async throws(AMQPError) -> T {
        let result: Result<T, AMQPError> = await withCheckedContinuation { cont in
            queue.async {
                let r = self.session.withLock { s -> Result<T, AMQPError> in
                    defer { self.connected.store(s?.isOpen ?? false, ordering: .releasing) }
                    do throws(AMQPError) { return .success(try body(&s)) } catch { return .failure(error) }
                }
                cont.resume(returning: r)
            }
        }
        return try result.get()
    }

    /// Closes on the queue, after any operation in flight; does not wait.
    func close() {
        connected.store(false, ordering: .releasing)
        queue.async {
            self.session.withLock { s in
                s?.close()
                s = nil
            }
        }
    }

    deinit {
        // No block can be pending here (each one retains self), so this is the only access.
        session.withLock { s in
            s?.close()
            s = nil
        }
    }
}
