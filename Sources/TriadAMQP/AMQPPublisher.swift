import CRabbitMQ
import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

public struct AMQPMessage: Sendable, Equatable {
    public var exchange: String
    public var routingKey: String
    public var body: [UInt8]
    public var contentType: String
    public var messageID: String
    public var persistent: Bool
    /// Application headers, as long-string values.
    public var headers: [String: String]

    public init(
        exchange: String, routingKey: String, body: [UInt8],
        contentType: String = "application/json", messageID: String, persistent: Bool = true, headers: [String: String] = [:]
    ) {
        self.exchange = exchange
        self.routingKey = routingKey
        self.body = body
        self.contentType = contentType
        self.messageID = messageID
        self.persistent = persistent
        self.headers = headers
    }
}

/// A session in confirm mode: every publish on channel 1 gets the next delivery tag, from 1.
final class PublisherSession: AMQPSession {
    private(set) var nextTag: UInt64 = 1

    override init(endpoint: AMQPEndpoint) throws(AMQPError) {
        try super.init(endpoint: endpoint)
        try selectConfirms()
    }

    func selectConfirms() throws(AMQPError) {
        let c = try live()
        amqp_confirm_select(c, channel)
        try check(amqp_get_rpc_reply(c), "enable publisher confirms")
        nextTag = 1  // confirm.select restarts the channel's tag sequence
    }

    override func afterChannelReopen() {
        do throws(AMQPError) { try selectConfirms() } catch { destroy() }
    }

    func publishConfirmed(_ messages: [AMQPMessage], timeout: Duration) throws(AMQPError) {
        let c = try live()
        guard !messages.isEmpty else { return }
        let deadline = ContinuousClock.now + timeout
        let first = nextTag
        // rabbitmq-c sends every message's frames at once (a TCP push per message). Corked, a
        // batch leaves in full segments: far fewer sends and packets for us and for the broker.
        // No defer: a failed publish destroys the connection (and `c` with it); nothing to uncork.
        let corked = messages.count > 1 && Self.cork(c, true)
        for m in messages {
            var owned = OwnedBytes()
            var props = amqp_basic_properties_t()
            props._flags = amqp_flags_t(AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG)
            props.content_type = owned.dup(m.contentType)
            props.delivery_mode = m.persistent ? 2 : 1
            props.message_id = owned.dup(m.messageID)
            var entries = m.headers.sorted { $0.key < $1.key }.map { key, value in
                var v = amqp_field_value_t()
                v.kind = UInt8(AMQP_FIELD_KIND_UTF8.rawValue)
                v.value.bytes = owned.dup(value)
                return amqp_table_entry_t(key: owned.dup(key), value: v)
            }
            let rc = entries.withUnsafeMutableBufferPointer { table in
                if !m.headers.isEmpty {
                    props._flags |= amqp_flags_t(AMQP_BASIC_HEADERS_FLAG)
                    props.headers = amqp_table_t(num_entries: Int32(table.count), entries: table.baseAddress)
                }
                return m.body.withUnsafeBytes { raw in
                    amqp_basic_publish(
                        c, channel, owned.dup(m.exchange), owned.dup(m.routingKey),
                        0 /* mandatory */, 0 /* immediate */, &props,
                        amqp_bytes_t(len: raw.count, bytes: UnsafeMutableRawPointer(mutating: raw.baseAddress)))
                }
            }
            guard rc == AMQP_STATUS_OK.rawValue else {
                destroy()
                throw AMQPError("publish to '\(m.exchange)' failed: \(Self.libraryError(rc)); connection dropped")
            }
            nextTag += 1
        }
        if corked { _ = Self.cork(c, false) }  // flush before waiting for the confirms
        try awaitConfirms(from: first, through: nextTag - 1, deadline: deadline)
    }

    /// Sets TCP_CORK on the connection's socket; false when it could not (the batch then goes
    /// out uncorked, as before).
    static func cork(_ c: amqp_connection_state_t, _ on: Bool) -> Bool {
        let fd = amqp_get_sockfd(c)
        guard fd >= 0 else { return false }
        var value: Int32 = on ? 1 : 0
        return setsockopt(fd, Int32(IPPROTO_TCP), TCP_CORK, &value, socklen_t(MemoryLayout<Int32>.size)) == 0
    }

    /// Reads frames until every tag in first...last is acked or nacked. Tags are consecutive, so
    /// "everything up to N is settled" is one number; a `multiple` ack settles all tags <= N, a
    /// single one may arrive out of order, so those are kept in a set until the low mark reaches them.
    private func awaitConfirms(from first: UInt64, through last: UInt64, deadline: ContinuousClock.Instant) throws(AMQPError) {
        var settledThrough = first - 1  // all tags <= this are settled
        var settledAbove = Set<UInt64>()  // singles above the low mark
        var nacked = 0
        var returned = 0
        var returnReason = ""
        func settle(_ tag: UInt64, multiple: Bool, nack: Bool) {
            guard tag > settledThrough, tag <= last else { return }
            if multiple {
                let newly = tag - settledThrough - UInt64(settledAbove.filter { $0 <= tag }.count)
                if nack { nacked += Int(newly) }
                settledAbove = settledAbove.filter { $0 > tag }
                settledThrough = tag
            } else if settledAbove.insert(tag).inserted, nack {
                nacked += 1
            }
            while settledAbove.remove(settledThrough + 1) != nil { settledThrough += 1 }
        }

        while settledThrough < last {
            let c = try live()
            let remaining = deadline - ContinuousClock.now
            if remaining <= .zero {
                throw AMQPError("timed out waiting for publisher confirms: \(last - settledThrough) of \(last - first + 1) messages unconfirmed")
            }
            var tv = remaining.timeval
            var frame = amqp_frame_t()
            let rc = amqp_simple_wait_frame_noblock(c, &frame, &tv)
            if rc == AMQP_STATUS_TIMEOUT.rawValue { continue }
            guard rc == AMQP_STATUS_OK.rawValue else {
                destroy()
                throw AMQPError("waiting for publisher confirms: \(Self.libraryError(rc)); connection dropped")
            }
            // Content frames follow a basic.return; heartbeats and other channels don't concern us.
            guard frame.frame_type == AMQP_FRAME_METHOD else { continue }
            let method = frame.payload.method
            switch method.id {
            case Method.basicAck:
                guard let ack = method.decoded?.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee else { continue }
                settle(ack.delivery_tag, multiple: ack.multiple != 0, nack: false)
            case Method.basicNack:
                guard let n = method.decoded?.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee else { continue }
                settle(n.delivery_tag, multiple: n.multiple != 0, nack: true)
            case Method.basicReturn:
                returned += 1
                if let r = method.decoded?.assumingMemoryBound(to: amqp_basic_return_t.self).pointee {
                    returnReason = "\(r.reply_code) \(r.reply_text.string)"
                }
            case Method.channelClose:
                let why = Self.describeClose(id: method.id, decoded: method.decoded)
                let pending = last - settledThrough
                recoverChannel()  // answers close-ok, reopens channel 1 in confirm mode
                throw AMQPError("\(why) (\(pending) of \(last - first + 1) messages unconfirmed)")
            case Method.connectionClose:
                let why = Self.describeClose(id: method.id, decoded: method.decoded)
                acknowledgeConnectionClose()
                throw AMQPError(why)
            default:
                continue
            }
            amqp_maybe_release_buffers(c)
        }
        if nacked > 0 { throw AMQPError("broker nacked \(nacked) message\(nacked == 1 ? "" : "s")") }
        if returned > 0 { throw AMQPError("broker returned \(returned) unroutable message\(returned == 1 ? "" : "s"): \(returnReason)") }
    }
}

/// Publishes with publisher confirms. All rabbitmq-c calls run on one private serial queue.
public final class AMQPPublisher: Sendable {
    public let endpoint: AMQPEndpoint
    /// How long publishConfirmed waits for the broker's acks.
    public let confirmTimeout: Duration
    private let owner: SessionOwner<PublisherSession>

    public init(endpoint: AMQPEndpoint, confirmTimeout: Duration = .seconds(10)) {
        self.endpoint = endpoint
        self.confirmTimeout = confirmTimeout
        owner = SessionOwner(label: "triad.amqp.publisher")
    }

    /// Opens the socket, logs in, opens channel 1 and puts it in confirm mode. Reconnects if the
    /// previous connection was dropped; a no-op while connected.
    public func connect() async throws(AMQPError) {
        let endpoint = self.endpoint
        try await owner.run { s throws(AMQPError) in
            if s?.isOpen == true { return }
            s = try PublisherSession(endpoint: endpoint)
        }
    }

    public func declareTopicExchange(_ name: String) async throws(AMQPError) {
        try await owner.run { s throws(AMQPError) in
            guard let s else { throw AMQPError("not connected: call connect() first") }
            try s.declareTopicExchange(name)
        }
    }

    /// Publishes every message, then returns once the broker has confirmed all of them. Throws if
    /// any is nacked or returned, if the broker closes the channel (e.g. missing exchange) or the
    /// connection, or after `confirmTimeout`. On a throw, any subset may have been delivered: the
    /// caller must treat the whole batch as unsent (at-least-once).
    public func publishConfirmed(_ messages: [AMQPMessage]) async throws(AMQPError) {
        let timeout = confirmTimeout
        try await owner.run { s throws(AMQPError) in
            guard let s else { throw AMQPError("not connected: call connect() first") }
            try s.publishConfirmed(messages, timeout: timeout)
        }
    }

    public func close() { owner.close() }

    public var isConnected: Bool { owner.connected.load(ordering: .acquiring) }
}
