import Foundation
import Synchronization

/// Manages Mosquitto's dynamic-security plugin over its control topic
/// (`$CONTROL/dynamic-security/v1`) with an admin credential: commands are JSON documents
/// published there; the broker answers each batch on `…/response`, matched here by
/// `correlationData` (other admins' answers arrive on the same topic and are ignored).
public final class DynamicSecurityAdmin: Sendable {
    public static let controlTopic = "$CONTROL/dynamic-security/v1"
    public static let responseTopic = controlTopic + "/response"

    /// One command; unset fields are left out of the JSON.
    public struct Command: Encodable, Sendable {
        public var command: String
        public var username: String?
        public var password: String?
        public var rolename: String?
        public var roles: [RoleReference]?
        public var acls: [ACL]?
        var correlationData: String?

        public init(
            _ command: String, username: String? = nil, password: String? = nil, rolename: String? = nil,
            roles: [RoleReference]? = nil, acls: [ACL]? = nil
        ) {
            self.command = command
            self.username = username
            self.password = password
            self.rolename = rolename
            self.roles = roles
            self.acls = acls
        }
    }

    public struct RoleReference: Encodable, Sendable {
        public var rolename: String
        public init(_ rolename: String) { self.rolename = rolename }
    }

    public struct ACL: Encodable, Sendable {
        /// `publishClientSend`, `subscribePattern`, …
        public var acltype: String
        public var topic: String
        public var allow: Bool
        public init(_ acltype: String, topic: String, allow: Bool) {
            self.acltype = acltype
            self.topic = topic
            self.allow = allow
        }
    }

    /// The broker's answer to one command: `error` is nil when it succeeded.
    public struct Response: Decodable, Sendable {
        public var command: String
        public var error: String?
        public var data: ResponseData?
        var correlationData: String?
    }

    /// What a listing command answers (only the fields used here).
    public struct ResponseData: Decodable, Sendable {
        public var clients: [String]?
    }

    private struct Envelope: Encodable { var commands: [Command] }
    private struct Answer: Decodable { var responses: [Response] }

    private let client: MQTTClient
    private let waiting = Mutex<[String: CheckedContinuation<[Response], any Error>]>([:])
    private let timeout: Duration

    /// `endpoint` must carry the admin's username and password.
    public init(endpoint: MQTTEndpoint, timeout: Duration = .seconds(10)) throws(MQTTError) {
        guard endpoint.username != nil, endpoint.password != nil else {
            throw MQTTError("managing the broker's dynamic security needs the MQTT URL's username and password (its admin)")
        }
        client = try MQTTClient(endpoint: endpoint, subscriptions: [Self.responseTopic])
        self.timeout = timeout
    }

    /// nil when connected and subscribed; otherwise why not.
    public var health: String? {
        client.isReady ? nil : "MQTT dynamic security at \(client.endpoint): \(client.lastError ?? "connecting")"
    }

    /// Connects (in the background, reconnecting) and matches answers to their commands until
    /// `stop()`.
    public func run() async throws(MQTTError) {
        try client.start()
        for await message in client.messages where message.topic == Self.responseTopic {
            guard let answer = try? JSONDecoder().decode(Answer.self, from: Data(message.payload)),
                let id = answer.responses.first?.correlationData,
                let waiter = waiting.withLock({ $0.removeValue(forKey: id) })
            else { continue }
            waiter.resume(returning: answer.responses)
        }
        failAll(MQTTError("the dynamic-security client stopped"))
    }

    public func stop() { client.stop() }

    /// Sends the commands as one batch (the broker runs them in order) and returns their
    /// answers in the same order.
    public func execute(_ commands: [Command]) async throws -> [Response] {
        guard await client.waitUntilReady(timeout: timeout) else {
            throw MQTTError("the MQTT broker's dynamic security is not reachable: \(client.lastError ?? "connecting")")
        }
        let id = UUID().uuidString
        let batch = Envelope(
            commands: commands.map {
                var c = $0
                c.correlationData = id
                return c
            })
        let payload = Array(try JSONEncoder().encode(batch))
        let timeout = self.timeout
        return try await withThrowingTaskGroup(of: Void.self, returning: [Response].self) { group in
            // The answer's deadline, a child of this call: cancelled as soon as the answer came.
            group.addTask { [weak self] in
                try? await Task.sleep(for: timeout)
                if !Task.isCancelled {
                    self?.fail(id, MQTTError("the MQTT broker did not answer a dynamic-security command within \(timeout)"))
                }
            }
            defer { group.cancelAll() }
            return try await withCheckedThrowingContinuation { continuation in
                waiting.withLock { $0[id] = continuation }
                do {
                    try client.publish(topic: Self.controlTopic, payload: payload)
                } catch {
                    fail(id, error)
                }
            }
        }
    }

    private func fail(_ id: String, _ error: any Error) {
        waiting.withLock { $0.removeValue(forKey: id) }?.resume(throwing: error)
    }

    private func failAll(_ error: any Error) {
        let all = waiting.withLock { w in
            defer { w.removeAll() }
            return Array(w.values)
        }
        for waiter in all { waiter.resume(throwing: error) }
    }
}
