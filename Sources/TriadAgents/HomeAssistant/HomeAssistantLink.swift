import Foundation
import Logging
import Synchronization
import TriadCore
import WSClient

/// One WebSocket connection to Home Assistant for every device agent of a host: it
/// authenticates with the long-lived token, reads the entity registry (`unique_id` →
/// `entity_id`, read again whenever the registry changes, so renames are followed), and
/// subscribes to `state_changed`. Lost, it reconnects with back-off (0.5 s doubling to 5 s).
public final class HomeAssistantLink: Sendable {
    public enum Event: Sendable {
        /// Connected and the registry read (again).
        case registry([String: String])
        case stateChanged(EntityState)
        case lost(HomeAssistantError)
    }

    let webSocketURL: String
    let token: String
    let logger: Logger
    let events: @Sendable (Event) async -> Void
    /// `unique_id` → `entity_id`, as last read.
    private let registry = Mutex<[String: String]>([:])

    public init(baseURL: String, token: String, logger: Logger, events: @escaping @Sendable (Event) async -> Void) {
        var url = baseURL
        if url.hasPrefix("https://") { url = "wss://" + url.dropFirst(8) } else if url.hasPrefix("http://") { url = "ws://" + url.dropFirst(7) }
        webSocketURL = url + "/api/websocket"
        self.token = token
        self.logger = logger
        self.events = events
    }

    public func entityID(uniqueID: String) -> String? { registry.withLock { $0[uniqueID] } }
    public func uniqueID(entityID: String) -> String? { registry.withLock { $0.first { $0.value == entityID }?.key } }

    /// Until cancelled: connect, follow, and reconnect when lost.
    public func run() async {
        var delay: Duration = .milliseconds(500)
        while !Task.isCancelled {
            let failure: HomeAssistantError
            let reached = ConnectedFlag()
            do {
                try await connectOnce { reached.value.store(true, ordering: .relaxed) }
                failure = HomeAssistantError(reason: .unreachable, description: "Home Assistant closed the connection")
            } catch let error as HomeAssistantError {
                failure = error
            } catch {
                failure = HomeAssistantError(reason: .unreachable, description: "Home Assistant is unreachable: \(error)")
            }
            if Task.isCancelled { break }
            if reached.value.load(ordering: .relaxed) { delay = .milliseconds(500) }
            logger.warning(
                "Home Assistant connection lost; reconnecting",
                metadata: ["reason": "\(failure.reason.rawValue)", "error": "\(failure.description)", "retry.in": "\(delay)"])
            await events(.lost(failure))
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(5))
        }
    }

    private func connectOnce(connected: @escaping @Sendable () -> Void) async throws {
        let token = self.token
        // The client closes the socket when the handler throws, and does not rethrow: the
        // handler's own error is kept here to say why.
        let failure = FailureBox()
        // The registry's list is one large frame (tens of KiB); pings notice a dead peer.
        let configuration = WebSocketClientConfiguration(maxFrameSize: 16 << 20, autoPing: .enabled(timePeriod: .seconds(10)))
        try await WebSocketClient.connect(url: webSocketURL, configuration: configuration, logger: logger) { inbound, outbound, _ in
            do {
                var messages = inbound.messages(maxSize: 16 << 20).makeAsyncIterator()
                func next() async throws -> JSONValue {
                    while let message = try await messages.next() {
                        guard case .text(let text) = message, let tree = try? JSONCoding.parse(Data(text.utf8)) else { continue }
                        return tree
                    }
                    throw HomeAssistantError(reason: .unreachable, description: "Home Assistant closed the connection")
                }
                func send(_ tree: JSONValue) async throws {
                    try await outbound.write(.text(String(decoding: JSONCoding.encode(tree), as: UTF8.self)))
                }
                _ = try await next()  // auth_required
                try await send(.object(["type": .string("auth"), "access_token": .string(token)]))
                let auth = try await next()
                guard auth["type"]?.stringValue == "auth_ok" else {
                    throw HomeAssistantError(reason: .tokenRefused, description: "Home Assistant refused the token")
                }
                var nextID = 1
                func command(_ type: String, _ extra: [String: JSONValue] = [:]) async throws -> Int {
                    var body = extra
                    body["id"] = .number(Double(nextID))
                    body["type"] = .string(type)
                    try await send(.object(body))
                    defer { nextID += 1 }
                    return nextID
                }
                var registryRequest = try await command("config/entity_registry/list")
                _ = try await command("subscribe_events", ["event_type": .string("state_changed")])
                _ = try await command("subscribe_events", ["event_type": .string("entity_registry_updated")])
                while true {
                    let message = try await next()
                    switch message["type"]?.stringValue {
                    case "result" where message["id"]?.numberValue == Double(registryRequest):
                        var table: [String: String] = [:]
                        for entry in message["result"]?.arrayValue ?? [] {
                            if let unique = entry["unique_id"]?.stringValue, let entity = entry["entity_id"]?.stringValue {
                                table[unique] = entity
                            }
                        }
                        self.registry.withLock { $0 = table }
                        connected()
                        await self.events(.registry(table))
                    case "event":
                        let event = message["event"]
                        if event?["event_type"]?.stringValue == "entity_registry_updated" {
                            registryRequest = try await command("config/entity_registry/list")
                        } else if let newState = event?["data"]?["new_state"], let state = EntityState(newState) {
                            await self.events(.stateChanged(state))
                        }
                    default:
                        break
                    }
                }
            } catch {
                failure.set(error)
                throw error
            }
        }
        if let error = failure.get() { throw error }
    }
}

/// The error a WebSocket handler ended with.
private final class FailureBox: Sendable {
    private let error = Mutex<(any Error)?>(nil)
    func set(_ e: any Error) { error.withLock { $0 = e } }
    func get() -> (any Error)? { error.withLock { $0 } }
}

/// Whether one connection attempt got as far as reading the registry (the back-off restarts).
private final class ConnectedFlag: Sendable {
    let value = Atomic<Bool>(false)
}
