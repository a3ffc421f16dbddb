import CMosquitto
import Foundation
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

/// One MQTT connection through libmosquitto, run by a network thread of its own (`NetworkLoop`),
/// which also reconnects with exponential back-off (1 s to 30 s) and re-subscribes after each
/// reconnect. Received messages are copied out of C memory in the callback and delivered through
/// `messages`. Publishing is safe from any thread.
public final class MQTTClient: Sendable {
    public let endpoint: MQTTEndpoint
    /// Every message of the subscriptions, in arrival order. Ends when the client stops.
    public let messages: MQTTMessages
    private let context: CallbackContext
    /// nil once stopped: publish and stop must not touch a destroyed handle.
    private let handle: Mutex<MosquittoHandle?>
    /// Runs once `start` is called.
    private let network = Mutex<NetworkLoop?>(nil)

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
            try network.withLock { (n: inout NetworkLoop?) throws(MQTTError) in
                guard n == nil else { throw MQTTError("the MQTT client is already started") }
                // The network thread does all the socket work: nothing is written from the
                // caller's thread, and publishing only wakes it.
                try Self.check(mosquitto_threaded_set(mosq, true), "hand the network to the client's thread")
                let rc = mosquitto_connect_async(mosq, endpoint.host, Int32(endpoint.port), 30)
                // A refused first attempt is not fatal: the network thread keeps retrying.
                if rc != MOSQ_ERR_SUCCESS.rawValue && rc != MOSQ_ERR_ERRNO.rawValue && rc != MOSQ_ERR_CONN_REFUSED.rawValue {
                    throw MQTTError("cannot connect to \(endpoint): \(String(cString: mosquitto_strerror(rc)))")
                }
                n = try NetworkLoop(handle: h!, context: context)
            }
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
        network.withLock { $0?.wake() }
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
        // Sends the DISCONNECT first when `cleanly`, and returns once the thread has ended.
        network.withLock { n in
            defer { n = nil }
            return n
        }?.stop(cleanly: cleanly)
        mosquitto_destroy(mosq)  // without a DISCONNECT first, this just closes the socket
        context.continuation.finish()
        // Released only now: the joined thread can no longer call back with it.
        Unmanaged.passUnretained(context).release()
    }

    private static func check(_ rc: Int32, _ what: String) throws(MQTTError) {
        if rc != MOSQ_ERR_SUCCESS.rawValue { throw MQTTError("cannot \(what): \(String(cString: mosquitto_strerror(rc)))") }
    }
}

/// A libmosquitto handle. Sendable because, once threaded (`mosquitto_threaded_set`),
/// libmosquitto itself locks around publish, subscribe and disconnect; `MQTTClient` only ensures
/// no call follows `mosquitto_destroy`.
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

/// The client's network thread. libmosquitto's own (`mosquitto_loop_start`) waits with
/// `select()`, which cannot watch a descriptor numbered 1024 or more: in a process with that many
/// files open (a busy server, a test suite) its thread quit right after sending CONNECT, and the
/// client never heard the broker again. This one waits with `poll()` on the socket and on an
/// eventfd that publishing and stopping write to, and drives libmosquitto's read, write and
/// keepalive steps itself; a lost connection is made again after 1, 4, 9, ... s (at most 30 s,
/// back to 1 s once connected), as libmosquitto's loop did.
private final class NetworkLoop: Sendable {
    private let handle: MosquittoHandle
    private let context: CallbackContext
    private let wakeFD: Int32
    /// 0 running, 1 stop after sending DISCONNECT, 2 stop without it (the broker sends the will).
    private let stopping = Atomic<Int>(0)
    private let ended = DispatchSemaphore(value: 0)

    init(handle: MosquittoHandle, context: CallbackContext) throws(MQTTError) {
        self.handle = handle
        self.context = context
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard wakeFD >= 0 else { throw MQTTError("cannot create the network thread's wake-up descriptor (errno \(errno))") }
        let thread = Thread { [self] in
            run()
            ended.signal()
        }
        thread.name = "mqtt-network"
        thread.start()
    }

    func wake() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    /// Ends the thread and waits for it.
    func stop(cleanly: Bool) {
        stopping.store(cleanly ? 1 : 2, ordering: .releasing)
        wake()
        ended.wait()
        close(wakeFD)
    }

    private func run() {
        let mosq = handle.pointer
        var attempts = 0
        while stopping.load(ordering: .acquiring) == 0 {
            if context.connected.load(ordering: .acquiring) { attempts = 0 }
            let socket = mosquitto_socket(mosq)
            guard socket >= 0 else {
                attempts += 1
                waitForWake(timeoutMilliseconds: Int32(min(30, attempts * attempts) * 1000))
                if stopping.load(ordering: .acquiring) != 0 { break }
                _ = mosquitto_reconnect(mosq)
                continue
            }
            let wantsWrite = mosquitto_want_write(mosq)
            var fds = [
                pollfd(fd: socket, events: Int16(POLLIN) | (wantsWrite ? Int16(POLLOUT) : 0), revents: 0),
                pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0),
            ]
            // At least once a second, for the keepalive. A failing poll (not a signal) is retried
            // after a pause rather than at once, which would spin the thread.
            if poll(&fds, 2, 1000) < 0 {
                if errno != EINTR { usleep(100_000) }
                continue
            }
            if fds[1].revents != 0 { drainWakes() }
            if fds[0].revents & Int16(POLLIN | POLLERR | POLLHUP) != 0 {
                // On failure libmosquitto has closed the socket and called on_disconnect.
                if mosquitto_loop_read(mosq, 1) != MOSQ_ERR_SUCCESS.rawValue { continue }
            }
            if mosquitto_socket(mosq) >= 0 && (fds[0].revents & Int16(POLLOUT) != 0 || mosquitto_want_write(mosq)) {
                if mosquitto_loop_write(mosq, 1) != MOSQ_ERR_SUCCESS.rawValue { continue }
            }
            _ = mosquitto_loop_misc(mosq)
        }
        if stopping.load(ordering: .acquiring) == 1 && mosquitto_socket(mosq) >= 0 {
            mosquitto_disconnect(mosq)
            // A DISCONNECT is a few bytes: written at once unless the socket is full.
            for _ in 0..<10 where mosquitto_socket(mosq) >= 0 && mosquitto_want_write(mosq) {
                if mosquitto_loop_write(mosq, 1) != MOSQ_ERR_SUCCESS.rawValue { break }
            }
        }
    }

    private func waitForWake(timeoutMilliseconds: Int32) {
        var fd = pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)
        if poll(&fd, 1, timeoutMilliseconds) > 0 { drainWakes() }
    }

    private func drainWakes() {
        var count: UInt64 = 0
        _ = read(wakeFD, &count, 8)
    }
}
