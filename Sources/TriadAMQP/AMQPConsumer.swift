import CRabbitMQ
import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

public struct AMQPDelivery: Sendable, Equatable {
    public var routingKey: String
    public var body: [UInt8]
    public var messageID: String?
    public var contentType: String?
    public var persistent: Bool
    /// Application headers whose values are strings (others are left out).
    public var headers: [String: String] = [:]
    /// For `ack` when the consumer was asked for manual acks.
    public var deliveryTag: UInt64 = 0
}

extension amqp_table_t {
    /// The entries with string values, copied out of C memory.
    var strings: [String: String] {
        var out: [String: String] = [:]
        guard let entries, num_entries > 0 else { return out }
        for i in 0..<Int(num_entries) {
            let e = entries[i]
            if e.value.kind == UInt8(AMQP_FIELD_KIND_UTF8.rawValue) || e.value.kind == UInt8(AMQP_FIELD_KIND_BYTES.rawValue) {
                out[e.key.string] = e.value.value.bytes.string
            }
        }
        return out
    }
}

final class ConsumerSession: AMQPSession {
    private(set) var queueName: String?
    private var consuming = false

    override func afterChannelReopen() { consuming = false }  // the broker dropped the consumer with the channel

    /// maxLengthRejectingOverflow: x-max-length with x-overflow=reject-publish, so publishes past
    /// it are nacked. Internal: the tests use it to make the broker nack.
    func declareQueue(_ name: String, durable: Bool, maxLengthRejectingOverflow: Int32? = nil) throws(AMQPError) {
        let c = try live()
        var owned = OwnedBytes()
        let serverNamed = name.isEmpty
        var entries: [amqp_table_entry_t] = []
        if let max = maxLengthRejectingOverflow {
            var n = amqp_field_value_t()
            n.kind = UInt8(AMQP_FIELD_KIND_I32.rawValue)
            n.value.i32 = max
            var o = amqp_field_value_t()
            o.kind = UInt8(AMQP_FIELD_KIND_UTF8.rawValue)
            o.value.bytes = owned.dup("reject-publish")
            entries = [
                amqp_table_entry_t(key: owned.dup("x-max-length"), value: n),
                amqp_table_entry_t(key: owned.dup("x-overflow"), value: o),
            ]
        }
        let ok = entries.withUnsafeMutableBufferPointer { buf in
            amqp_queue_declare(
                c, channel, owned.dup(name), 0 /* passive */, durable ? 1 : 0,
                serverNamed ? 1 : 0 /* exclusive */, serverNamed ? 1 : 0 /* auto_delete */,
                amqp_table_t(num_entries: Int32(buf.count), entries: buf.baseAddress))
        }
        try check(amqp_get_rpc_reply(c), "declare queue '\(name)'")
        guard let ok else { throw AMQPError("declare queue '\(name)': no declare-ok from the broker") }
        queueName = ok.pointee.queue.string  // the ok lives in the connection's pool: copy it now
    }

    func bind(exchange: String, routingKey: String) throws(AMQPError) {
        let c = try live()
        guard let queueName else { throw AMQPError("bind: call declareQueue first") }
        var owned = OwnedBytes()
        amqp_queue_bind(c, channel, owned.dup(queueName), owned.dup(exchange), owned.dup(routingKey), emptyTable)
        try check(amqp_get_rpc_reply(c), "bind queue '\(queueName)' to '\(exchange)' with '\(routingKey)'")
    }

    func startConsuming() throws(AMQPError) {
        let c = try live()
        guard let queueName else { throw AMQPError("startConsuming: call declareQueue first") }
        if consuming { return }
        amqp_basic_qos(c, channel, 0, 256, 0)  // bound what the broker pushes ahead of our acks
        try check(amqp_get_rpc_reply(c), "set prefetch")
        var owned = OwnedBytes()
        amqp_basic_consume(
            c, channel, owned.dup(queueName), emptyBytes,
            0 /* no_local */, 0 /* no_ack: we ack */, 0 /* exclusive */, emptyTable)
        try check(amqp_get_rpc_reply(c), "consume from '\(queueName)'")
        consuming = true
    }

    func ack(_ tag: UInt64, multiple: Bool = false) throws(AMQPError) {
        let c = try live()
        let rc = amqp_basic_ack(c, channel, tag, multiple ? 1 : 0)
        guard rc == AMQP_STATUS_OK.rawValue else {
            destroy()
            throw AMQPError("ack failed: \(Self.libraryError(rc)); connection dropped")
        }
    }

    /// With `autoAck`, each delivery is acked as soon as it is copied; otherwise the caller
    /// acks it with `ack(deliveryTag)` once it is handled (unacked ones are redelivered if the
    /// connection dies).
    func next(timeout: Duration, autoAck: Bool = true) throws(AMQPError) -> AMQPDelivery? {
        guard consuming else { throw AMQPError("next: call startConsuming first") }
        let deadline = ContinuousClock.now + timeout
        while true {
            let c = try live()
            amqp_maybe_release_buffers(c)
            let remaining = deadline - ContinuousClock.now
            var tv = (remaining > .zero ? remaining : .zero).timeval
            var env = amqp_envelope_t()
            let reply = amqp_consume_message(c, &env, &tv, 0)
            switch reply.reply_type {
            case AMQP_RESPONSE_NORMAL:
                defer { amqp_destroy_envelope(&env) }
                let p = env.message.properties
                let flags = Int32(p._flags)
                // Copy everything out before the envelope is destroyed.
                let delivery = AMQPDelivery(
                    routingKey: env.routing_key.string,
                    body: env.message.body.array,
                    messageID: flags & AMQP_BASIC_MESSAGE_ID_FLAG != 0 ? p.message_id.string : nil,
                    contentType: flags & AMQP_BASIC_CONTENT_TYPE_FLAG != 0 ? p.content_type.string : nil,
                    persistent: flags & AMQP_BASIC_DELIVERY_MODE_FLAG != 0 && p.delivery_mode == 2,
                    headers: flags & AMQP_BASIC_HEADERS_FLAG != 0 ? p.headers.strings : [:],
                    deliveryTag: env.delivery_tag)
                if autoAck { try ack(env.delivery_tag) }
                return delivery
            case AMQP_RESPONSE_LIBRARY_EXCEPTION where reply.library_error == AMQP_STATUS_TIMEOUT.rawValue:
                return nil
            case AMQP_RESPONSE_LIBRARY_EXCEPTION where reply.library_error == AMQP_STATUS_UNEXPECTED_STATE.rawValue:
                // A frame other than basic.deliver is waiting: read it and see whether it is fatal.
                var frame = amqp_frame_t()
                var zero = Duration.zero.timeval
                let rc = amqp_simple_wait_frame_noblock(c, &frame, &zero)
                if rc == AMQP_STATUS_TIMEOUT.rawValue { continue }
                guard rc == AMQP_STATUS_OK.rawValue else {
                    destroy()
                    throw AMQPError("consume: \(Self.libraryError(rc)); connection dropped")
                }
                guard frame.frame_type == AMQP_FRAME_METHOD else { continue }
                let m = frame.payload.method
                if m.id == Method.channelClose {
                    let why = Self.describeClose(id: m.id, decoded: m.decoded)
                    recoverChannel()
                    throw AMQPError("consume: \(why)")
                }
                if m.id == Method.connectionClose {
                    let why = Self.describeClose(id: m.id, decoded: m.decoded)
                    acknowledgeConnectionClose()
                    throw AMQPError("consume: \(why)")
                }
                continue  // e.g. basic.cancel-ok, basic.ack: nothing to do
            default:
                let why = describe(reply) ?? "unknown failure"
                destroy()
                throw AMQPError("consume: \(why); connection dropped")
            }
        }
    }
}

extension ConsumerSession {
    /// Up to `max` deliveries: the first waits up to `timeout` (none: empty), the rest are those
    /// already read from the socket, taken without waiting.
    func next(upTo max: Int, timeout: Duration, autoAck: Bool) throws(AMQPError) -> [AMQPDelivery] {
        guard max > 0, let first = try next(timeout: timeout, autoAck: autoAck) else { return [] }
        var batch = [first]
        while batch.count < max {
            let c = try live()
            guard amqp_data_in_buffer(c) != 0 || amqp_frames_enqueued(c) != 0 else { break }
            guard let delivery = try next(timeout: .zero, autoAck: autoAck) else { break }
            batch.append(delivery)
        }
        return batch
    }
}

/// Reads deliveries from one queue, acking each after copying it. For tests and integrators.
public final class AMQPConsumer: Sendable {
    public let endpoint: AMQPEndpoint
    private let owner: SessionOwner<ConsumerSession>

    public init(endpoint: AMQPEndpoint) {
        self.endpoint = endpoint
        owner = SessionOwner(label: "triad.amqp.consumer")
    }

    public func connect() async throws(AMQPError) {
        let endpoint = self.endpoint
        try await owner.run { s throws(AMQPError) in
            if s?.isOpen == true { return }
            s = try ConsumerSession(endpoint: endpoint)
        }
    }

    /// Declares the queue to consume from; "" asks the broker for an exclusive, auto-delete queue
    /// with a generated name, which is kept for bind and startConsuming.
    public func declareQueue(_ name: String, durable: Bool) async throws(AMQPError) {
        try await owner.run { s throws(AMQPError) in try Self.session(s).declareQueue(name, durable: durable) }
    }

    func declareQueue(_ name: String, durable: Bool, maxLengthRejectingOverflow: Int32) async throws(AMQPError) {
        try await owner.run { s throws(AMQPError) in
            try Self.session(s).declareQueue(name, durable: durable, maxLengthRejectingOverflow: maxLengthRejectingOverflow)
        }
    }

    public func declareTopicExchange(_ name: String) async throws(AMQPError) {
        try await owner.run { s throws(AMQPError) in try Self.session(s).declareTopicExchange(name) }
    }

    public func bind(exchange: String, routingKey: String) async throws(AMQPError) {
        try await owner.run { s throws(AMQPError) in try Self.session(s).bind(exchange: exchange, routingKey: routingKey) }
    }

    public func startConsuming() async throws(AMQPError) {
        try await owner.run { s throws(AMQPError) in try Self.session(s).startConsuming() }
    }

    /// The next delivery, or nil if none arrived within `timeout`. With `autoAck: false` the
    /// caller must `ack` it.
    public func next(timeout: Duration, autoAck: Bool = true) async throws(AMQPError) -> AMQPDelivery? {
        try await owner.run { s throws(AMQPError) in try Self.session(s).next(timeout: timeout, autoAck: autoAck) }
    }

    /// Up to `max` deliveries in one hop to the session's thread: the first waits up to `timeout`
    /// (empty when none came), the others are those that had already arrived. For consumers at
    /// thousands of messages a second, for whom a hop per delivery costs more than the delivery.
    public func next(upTo max: Int, timeout: Duration, autoAck: Bool = true) async throws(AMQPError) -> [AMQPDelivery] {
        try await owner.run { s throws(AMQPError) in try Self.session(s).next(upTo: max, timeout: timeout, autoAck: autoAck) }
    }

    /// With `multiple`, also acks every earlier unacked delivery of this consumer (one frame
    /// for many: what a consumer at thousands of messages a second wants).
    public func ack(_ delivery: AMQPDelivery, multiple: Bool = false) async throws(AMQPError) {
        try await owner.run { s throws(AMQPError) in try Self.session(s).ack(delivery.deliveryTag, multiple: multiple) }
    }

    /// The declared queue's name (the generated one for "").
    public var queueName: String? {
        get async { try? await owner.run { s throws(AMQPError) in s?.queueName } }
    }

    public func close() { owner.close() }

    public var isConnected: Bool { owner.connected.load(ordering: .acquiring) }

    private static func session(_ s: ConsumerSession?) throws(AMQPError) -> ConsumerSession {
        guard let s else { throw AMQPError("not connected: call connect() first") }
        return s
    }
}
