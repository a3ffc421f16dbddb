import CMosquitto
import Synchronization
import TriadCore

public struct MQTTMessage: Sendable, Equatable {
    public var topic: String
    /// Empty when `oversized`.
    public var payload: [UInt8]
    public var retained: Bool
    /// The payload was larger than the client's `maxPayloadBytes`: it was dropped in the
    /// callback, before being copied; only the topic is kept, so the reader can count it.
    public var oversized: Bool = false
}

/// The messages of a client's subscriptions, in arrival order; taking one frees its bytes from
/// the client's budget.
public struct MQTTMessages: AsyncSequence, Sendable {
    public typealias Element = MQTTMessage
    let stream: AsyncStream<MQTTMessage>
    let context: CallbackContext

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: stream.makeAsyncIterator(), context: context)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncStream<MQTTMessage>.AsyncIterator
        let context: CallbackContext

        public mutating func next() async -> MQTTMessage? {
            guard let message = await base.next() else { return nil }
            context.queuedBytes.subtract(CallbackContext.cost(message), ordering: .relaxed)
            return message
        }
    }
}

/// A message the broker publishes for us when our connection dies (probes announce `offline`).
public struct MQTTWill: Sendable {
    public var topic: String
    public var payload: [UInt8]
    public var retain: Bool
    public init(topic: String, payload: [UInt8], retain: Bool) {
        self.topic = topic
        self.payload = payload
        self.retain = retain
    }
}

// mosquitto_lib_init must run once per process before any handle exists; a global `let` is
// initialised lazily and exactly once.
private let libraryInitialised: Int32 = mosquitto_lib_init()

/// One MQTT connection through libmosquitto, run by libmosquitto's own network thread
/// (`mosquitto_loop_start`), which also reconnects with exponential back-off (1 s to 30 s) and
/// re-subscribes after each reconnect. Received messages are copied out of C memory in the
/// callback and delivered through `messages`. Publishing is safe from any thread.
public final class MQTTClient: Sendable {
    public let endpoint: MQTTEndpoint
    /// Every message of the subscriptions, in arrival order. Ends when the client stops.
    public let messages: MQTTMessages
    private let context: CallbackContext
    /// nil once stopped: publish and stop must not touch a destroyed handle.
    private let handle: Mutex<MosquittoHandle?>

    /// `byteBudget` bounds the bytes (payloads and topics) held for a slow reader; beyond it new
    /// messages are dropped and counted (`droppedMessages`), so a stalled reader cannot exhaust
    /// memory. A payload over `maxPayloadBytes` is never copied (see `MQTTMessage.oversized`).
    public init(
        endpoint: MQTTEndpoint, clientID: String? = nil, subscriptions: [String] = [], qos: Int32 = 1,
        will: MQTTWill? = nil, byteBudget: Int = 64 << 20, maxPayloadBytes: Int = 16 << 20
    ) throws(MQTTError) {
        _ = libraryInitialised
        self.endpoint = endpoint
        let (stream, continuation) = AsyncStream.makeStream(of: MQTTMessage.self, bufferingPolicy: .unbounded)
        context = CallbackContext(
            continuation: continuation, subscriptions: subscriptions, qos: qos,
            byteBudget: byteBudget, maxPayloadBytes: maxPayloadBytes)
        messages = MQTTMessages(stream: stream, context: context)
        let unmanaged = Unmanaged.passRetained(context)
        guard let mosq = mosquitto_new(clientID, true, unmanaged.toOpaque()) else {
            unmanaged.release()
            throw MQTTError("cannot create an MQTT client (out of memory or invalid client id)")
        }
        handle = Mutex(MosquittoHandle(pointer: mosq))
        do {
            if let user = endpoint.username {
                try Self.check(mosquitto_username_pw_set(mosq, user, endpoint.password), "set credentials")
            }
            if let will {
                try Self.check(
                    will.payload.withUnsafeBytes { b in
                        mosquitto_will_set(mosq, will.topic, Int32(b.count), b.baseAddress, 1, will.retain)
                    }, "set the will on '\(will.topic)'")
            }
            try Self.check(mosquitto_reconnect_delay_set(mosq, 1, 30, true), "set the reconnect delay")
            // Enough in flight for telemetry rates; libmosquitto queues the rest.
            try Self.check(mosquitto_max_inflight_messages_set(mosq, 1000), "set max in-flight messages")
        } catch {
            mosquitto_destroy(mosq)
            unmanaged.release()
            throw error
        }
        mosquitto_connect_callback_set(mosq) { mosq, obj, rc in
            let c = CallbackContext.from(obj)
            guard rc == 0 else {
                c.lastError.withLock { $0 = "connection refused: \(String(cString: mosquitto_connack_string(rc)))" }
                return
            }
            c.connected.store(true, ordering: .releasing)
            c.lastError.withLock { $0 = nil }
            if c.subscriptions.isEmpty {
                c.markReady()
                return
            }
            for topic in c.subscriptions {
                let rc = mosquitto_subscribe(mosq, nil, topic, c.qos)
                if rc != MOSQ_ERR_SUCCESS.rawValue {
                    c.lastError.withLock { $0 = "cannot subscribe to '\(topic)': \(String(cString: mosquitto_strerror(rc)))" }
                }
            }
        }
        mosquitto_subscribe_callback_set(mosq) { _, obj, _, count, granted in
            let c = CallbackContext.from(obj)
            // 128 (0x80) is the broker refusing a subscription.
            if let granted, (0..<Int(count)).contains(where: { granted[$0] >= 0x80 }) {
                c.lastError.withLock { $0 = "the broker refused a subscription" }
                return
            }
            if c.acknowledgedSubscriptions.add(1, ordering: .acquiringAndReleasing).newValue >= c.subscriptions.count {
                c.markReady()
            }
        }
        mosquitto_disconnect_callback_set(mosq) { _, obj, rc in
            let c = CallbackContext.from(obj)
            let wasConnected = c.connected.exchange(false, ordering: .acquiringAndReleasing)
            c.subscribed.store(false, ordering: .releasing)
            c.acknowledgedSubscriptions.store(0, ordering: .releasing)
            // A refused attempt was never connected: keep the broker's reason for refusing it.
            if rc != 0 && wasConnected { c.lastError.withLock { $0 = "connection lost: \(String(cString: mosquitto_strerror(rc)))" } }
        }
        mosquitto_message_callback_set(mosq) { _, obj, message in
            guard let m = message?.pointee else { return }
            let c = CallbackContext.from(obj)
            let topic = m.topic.map { String(cString: $0) } ?? ""
            let oversized = Int(m.payloadlen) > c.maxPayloadBytes
            let cost = (oversized ? 0 : Int(m.payloadlen)) + topic.utf8.count
            // Within the budget, or dropped before anything is copied.
            guard c.queuedBytes.add(cost, ordering: .relaxed).newValue <= c.byteBudget else {
                c.queuedBytes.subtract(cost, ordering: .relaxed)
                c.dropped.add(1, ordering: .relaxed)
                return
            }
            // The message dies when the callback returns: copy it now (an oversized payload never).
            let payload = m.payloadlen > 0 && !oversized ? Array(UnsafeRawBufferPointer(start: m.payload, count: Int(m.payloadlen))) : []
            let copy = MQTTMessage(topic: topic, payload: payload, retained: m.retain, oversized: oversized)
            if case .terminated = c.continuation.yield(copy) {
                c.queuedBytes.subtract(cost, ordering: .relaxed)
            }
        }
    }

    deinit { stop() }

    /// Connects in the background (and keeps reconnecting): returns at once. `isReady` says
    /// when the connection is up and every subscription acknowledged.
    public func start() throws(MQTTError) {
        try handle.withLock { (h: inout MosquittoHandle?) throws(MQTTError) in
            guard let mosq = h?.pointer else { throw MQTTError("the MQTT client is stopped") }
            let rc = mosquitto_connect_async(mosq, endpoint.host, Int32(endpoint.port), 30)
            // A refused first attempt is not fatal: the network thread keeps retrying.
            if rc != MOSQ_ERR_SUCCESS.rawValue && rc != MOSQ_ERR_ERRNO.rawValue && rc != MOSQ_ERR_CONN_REFUSED.rawValue {
                throw MQTTError("cannot connect to \(endpoint): \(String(cString: mosquitto_strerror(rc)))")
            }
            try Self.check(mosquitto_loop_start(mosq), "start the network thread")
        }
    }

    /// Connected, and every subscription acknowledged by the broker (publishing earlier can
    /// race the SUBACK and lose the first messages).
    public var isReady: Bool { context.connected.load(ordering: .acquiring) && context.subscribed.load(ordering: .acquiring) }
    public var isConnected: Bool { context.connected.load(ordering: .acquiring) }
    /// Why the client is not connected, if it knows.
    public var lastError: String? { context.lastError.withLock { $0 } }
    public var droppedMessages: Int { context.dropped.load(ordering: .relaxed) }

    /// Returns true once `isReady` (at once if it is), false when `timeout` passes first or the
    /// caller is cancelled; woken by the connect and subscribe callbacks, not by polling.
    public func waitUntilReady(timeout: Duration) async -> Bool {
        let context = self.context
        return await first(within: timeout, otherwise: false) { await context.waitUntilReady() } && isReady
    }

    /// Queues a message; libmosquitto's thread sends it (and, for QoS 1, resends until acked,
    /// across reconnects while this client lives).
    public func publish(topic: String, payload: [UInt8], qos: Int32 = 1, retain: Bool = false) throws(MQTTError) {
        try handle.withLock { (h: inout MosquittoHandle?) throws(MQTTError) in
            guard let mosq = h?.pointer else { throw MQTTError("the MQTT client is stopped") }
            let rc = payload.withUnsafeBytes { b in
                mosquitto_publish(mosq, nil, topic, Int32(b.count), b.baseAddress, qos, retain)
            }
            if rc != MOSQ_ERR_SUCCESS.rawValue {
                throw MQTTError("cannot publish to '\(topic)': \(String(cString: mosquitto_strerror(rc)))")
            }
        }
    }

    /// Disconnects cleanly (no will is sent), joins the network thread and frees the handle.
    public func stop() { tearDown(cleanly: true) }

    /// Drops the connection without a DISCONNECT, so the broker publishes the will (tests and
    /// crash simulations).
    public func abandon() { tearDown(cleanly: false) }

    private func tearDown(cleanly: Bool) {
        guard
            let mosq = handle.withLock({ (h: inout MosquittoHandle?) -> MosquittoHandle? in
                defer { h = nil }
                return h
            })?.pointer
        else { return }
        if cleanly { mosquitto_disconnect(mosq) }
        mosquitto_loop_stop(mosq, !cleanly)
        mosquitto_destroy(mosq)  // without a DISCONNECT first, this just closes the socket
        context.continuation.finish()
        // Released only now: the joined thread can no longer call back with it.
        Unmanaged.passUnretained(context).release()
    }

    private static func check(_ rc: Int32, _ what: String) throws(MQTTError) {
        if rc != MOSQ_ERR_SUCCESS.rawValue { throw MQTTError("cannot \(what): \(String(cString: mosquitto_strerror(rc)))") }
    }
}

/// A libmosquitto handle. Sendable because, once `mosquitto_loop_start` runs, libmosquitto
/// itself locks around publish, subscribe and disconnect; `MQTTClient` only ensures no call
/// follows `mosquitto_destroy`.
private struct MosquittoHandle: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// What the C callbacks reach through libmosquitto's `obj` pointer. Only `let`s of Sendable
/// types: the callbacks run on libmosquitto's thread, and Swift does not check `void *`.
final class CallbackContext: Sendable {
    let continuation: AsyncStream<MQTTMessage>.Continuation
    let subscriptions: [String]
    let qos: Int32
    let byteBudget: Int
    let maxPayloadBytes: Int
    /// Bytes delivered to `messages` and not yet taken by its reader.
    let queuedBytes = Atomic<Int>(0)
    let connected = Atomic<Bool>(false)
    let subscribed = Atomic<Bool>(false)
    let acknowledgedSubscriptions = Atomic<Int>(0)
    let dropped = Atomic<Int>(0)
    let lastError = Mutex<String?>("not connected yet")

    init(continuation: AsyncStream<MQTTMessage>.Continuation, subscriptions: [String], qos: Int32, byteBudget: Int, maxPayloadBytes: Int) {
        self.continuation = continuation
        self.subscriptions = subscriptions
        self.qos = qos
        self.byteBudget = byteBudget
        self.maxPayloadBytes = maxPayloadBytes
    }

    /// Tasks waiting for the client to be ready, by id (so a cancelled one can leave).
    private let readyWaiters = Mutex<(next: Int, waiting: [Int: CheckedContinuation<Void, Never>])>((0, [:]))

    /// Subscribed (or nothing to subscribe to): ready, and every waiter goes on.
    func markReady() {
        let waiting = readyWaiters.withLock { w in
            subscribed.store(true, ordering: .releasing)
            defer { w.waiting.removeAll() }
            return Array(w.waiting.values)
        }
        for c in waiting { c.resume() }
    }

    /// Returns true once connected and subscribed, false if the caller is cancelled first.
    func waitUntilReady() async -> Bool {
        let id = readyWaiters.withLock { w in
            defer { w.next += 1 }
            return w.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                // Checked under the lock markReady sets it under: a wake-up is never missed.
                let now = readyWaiters.withLock { w -> Bool in
                    if (connected.load(ordering: .acquiring) && subscribed.load(ordering: .acquiring)) || Task.isCancelled { return true }
                    w.waiting[id] = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            readyWaiters.withLock { $0.waiting.removeValue(forKey: id) }?.resume()
        }
        return !Task.isCancelled
    }

    /// What a queued message counts against the budget.
    static func cost(_ message: MQTTMessage) -> Int { message.payload.count + message.topic.utf8.count }

    static func from(_ obj: UnsafeMutableRawPointer?) -> CallbackContext {
        Unmanaged<CallbackContext>.fromOpaque(obj!).takeUnretainedValue()
    }
}
