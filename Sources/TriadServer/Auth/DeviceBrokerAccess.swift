import Crypto
import Foundation
import Logging
import ServiceLifecycle
import TriadCore
import TriadMQTT

/// Keeps the MQTT broker's own clients in step with device tokens (docs/mqtt.md): each device
/// token gets a client, named as the token, that may publish only under its resource's topics;
/// revoking the token removes the client.
public protocol DeviceBrokerAccess: Sendable {
    /// Lets `client` (with `password`) publish under `triad/v1/resources/<resource>/`.
    func grant(client: String, password: String, resource: String) async throws
    /// Removes `client`; the broker drops its connections at once. Removing one that does not
    /// exist is not an error.
    func withdraw(client: String) async throws
    /// Removes every broker client among `names` that still exists (revocations that could not
    /// reach the broker when they happened).
    func withdrawAny(of names: Set<String>) async throws -> Int
}

extension TokenAuthority {
    /// A device's MQTT password: derived from its token, so the device can compute it, while the
    /// token itself never reaches the broker. `hex(HMAC-SHA256(key: token, "triad-mqtt-v1"))`.
    public static func mqttPassword(forSecret secret: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data("triad-mqtt-v1".utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return mac.map { String(format: "%02x", $0) }.joined()
    }
}

/// `--mqtt-auth dynsec`: device clients managed through Mosquitto's dynamic-security plugin, each
/// with a role of its own (`triad-device-<token>`) allowing `publishClientSend` on its
/// resource's topics only. The broker's default refuses everything else.
public final class DynamicSecurityAccess: DeviceBrokerAccess, Service {
    let admin: DynamicSecurityAdmin
    let logger: Logger

    public init(url: String, logger: Logger) throws {
        admin = try DynamicSecurityAdmin(endpoint: try MQTTEndpoint(url: url))
        self.logger = logger
    }

    /// nil when connected; otherwise why not (for `/readyz`).
    public var health: String? { admin.health }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await admin.run()
        } onGracefulShutdown: { [admin] in
            admin.stop()
        }
    }

    static func role(of client: String) -> String { "triad-device-\(client)" }

    public func grant(client: String, password: String, resource: String) async throws {
        let role = Self.role(of: client)
        let answers = try await admin.execute([
            .init(
                "createRole", rolename: role,
                acls: [.init("publishClientSend", topic: "\(Telemetry.topicPrefix)\(resource)/#", allow: true)]),
            .init("createClient", username: client, password: password, roles: [.init(role)]),
        ])
        if let failed = answers.first(where: { $0.error != nil }) {
            // Half done is not left behind.
            _ = try? await admin.execute([.init("deleteClient", username: client), .init("deleteRole", rolename: role)])
            throw BrokerRefused(description: "the MQTT broker refused to \(failed.command): \(failed.error ?? "")")
        }
        logger.info("MQTT client granted", metadata: ["mqtt.client": "\(client)", "resource": "\(resource)"])
    }

    public func withdraw(client: String) async throws {
        let answers = try await admin.execute([.init("deleteClient", username: client), .init("deleteRole", rolename: Self.role(of: client))])
        // "not found" means it is already gone, which is what was asked.
        if let failed = answers.first(where: { ($0.error ?? "not found").lowercased().contains("not found") == false }) {
            throw BrokerRefused(description: "the MQTT broker refused to \(failed.command): \(failed.error ?? "")")
        }
        logger.info("MQTT client withdrawn", metadata: ["mqtt.client": "\(client)"])
    }

    public func withdrawAny(of names: Set<String>) async throws -> Int {
        let answers = try await admin.execute([.init("listClients")])
        let existing = Set(answers.first?.data?.clients ?? [])
        var removed = 0
        for client in existing.intersection(names).sorted() {
            try await withdraw(client: client)
            removed += 1
        }
        return removed
    }
}

struct BrokerRefused: Error, CustomStringConvertible {
    var description: String
}
