import Crypto
import Foundation
import Logging
import Synchronization
import TriadCore
import TriadProcess

/// Issues, checks and revokes bearer tokens. Only SHA-256 hashes are stored; secrets are shown
/// once, at creation, and never logged.
public final class TokenAuthority: Sendable {
    private let store: any TokenStore
    /// Recently checked tokens, so a read does not cost a database round trip. Revocation on this
    /// server clears it at once; another replica's revocation takes effect within `cacheTTL`.
    private let cache = Mutex<[String: (principal: Principal?, expires: ContinuousClock.Instant)]>([:])
    private let cacheTTL: Duration = .seconds(5)
    /// With `--mqtt-auth dynsec`: each device token's MQTT client, kept in step with the token.
    let brokerAccess: (any DeviceBrokerAccess)?
    private let logger: Logger

    public init(
        store: any TokenStore, brokerAccess: (any DeviceBrokerAccess)? = nil,
        logger: Logger = Logger(label: "triad.tokens")
    ) {
        self.store = store
        self.brokerAccess = brokerAccess
        self.logger = logger
    }

    public static func hash(_ secret: String) -> String {
        hex(SHA256.hash(data: Data(secret.utf8)))
    }

    public static func generateSecret() -> String {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
        return "triad_" + hex(bytes)
    }

    private static func hex<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public func authenticate(_ secret: String) async throws -> Principal? {
        let hash = Self.hash(secret)
        let now = ContinuousClock.now
        if let hit = cache.withLock({ $0[hash] }), hit.expires > now { return hit.principal }
        let record = try await store.token(secretHash: hash)
        let principal = record.flatMap { $0.revokedAt == nil ? Principal(name: $0.name, role: $0.role, resource: $0.resource) : nil }
        cache.withLock { entries in
            if entries.count > 10_000 { entries.removeAll() }
            entries[hash] = (principal, now + cacheTTL)
        }
        return principal
    }

    /// Creates a token and returns its secret (the only time it exists outside the caller). A
    /// device token gets its MQTT client first (when the broker is managed): if the broker
    /// refuses, no token is made.
    public func create(name: String, role: Role, resource: String?, secret: String = TokenAuthority.generateSecret()) async throws -> (TokenRecord, String) {
        let record = TokenRecord(
            name: name, role: role, resource: resource, secretHash: Self.hash(secret),
            createdAt: Timestamp.format(Date()))
        let brokerClient = role == .device ? brokerAccess : nil
        if let brokerClient, let resource {
            // A taken name is a conflict, not a broker error (the broker may hold its client).
            if try await store.tokens().contains(where: { $0.name == name }) { throw RegistryError.tokenExists(name: name) }
            try await brokerClient.grant(client: name, password: Self.mqttPassword(forSecret: secret), resource: resource)
        }
        do {
            try await store.insertToken(record)
        } catch {
            if let brokerClient { try? await brokerClient.withdraw(client: name) }
            throw error
        }
        cache.withLock { _ = $0.removeValue(forKey: record.secretHash) }
        return (record, secret)
    }

    /// Revokes the token; a device token's MQTT client is removed (and its connections dropped)
    /// at once. If the broker cannot be reached, the removal is retried (`withdrawRevokedClients`).
    public func revoke(name: String) async throws -> TokenRecord? {
        let record = try await store.revokeToken(name: name, at: Timestamp.format(Date()))
        if let record { cache.withLock { _ = $0.removeValue(forKey: record.secretHash) } }
        if let record, record.role == .device, let brokerAccess {
            do { try await brokerAccess.withdraw(client: record.name) } catch {
                logger.warning(
                    "revoked token's MQTT client not removed yet; retrying",
                    metadata: ["token.name": "\(record.name)", "error": "\(error)"])
            }
        }
        return record
    }

    /// Removes the MQTT clients of revoked device tokens that the broker still has (at start and
    /// periodically: a revocation may have happened while the broker was unreachable).
    public func withdrawRevokedClients() async throws {
        guard let brokerAccess else { return }
        let revoked = Set(try await store.tokens().filter { $0.role == .device && $0.revokedAt != nil }.map(\.name))
        let removed = try await brokerAccess.withdrawAny(of: revoked)
        if removed > 0 { logger.notice("removed MQTT clients of revoked tokens", metadata: ["count": "\(removed)"]) }
    }

    public func list() async throws -> [TokenRecord] {
        try await store.tokens()
    }

    /// Revokes the device tokens of `resource`: it was deleted, and a new resource of the same
    /// name must not inherit them. Returns how many.
    @discardableResult
    public func revokeDeviceTokens(of resource: String) async throws -> Int {
        var revoked = 0
        for token in try await store.tokens() where token.role == .device && token.resource == resource && token.revokedAt == nil {
            _ = try await revoke(name: token.name)
            revoked += 1
        }
        return revoked
    }

    /// At start: device tokens whose resource no longer exists (a delete whose revocation did not
    /// happen, e.g. the server died in between) are revoked.
    public func revokeOrphanedDeviceTokens(exists: (String) async throws -> Bool) async throws {
        for token in try await store.tokens() where token.role == .device && token.revokedAt == nil {
            guard let resource = token.resource, try await !exists(resource) else { continue }
            _ = try await revoke(name: token.name)
        }
    }

    public enum Bootstrap: Equatable, Sendable {
        /// A new admin token was written to this file.
        case wroteFile(path: String, secret: String)
        /// `TRIAD_ADMIN_TOKEN` is an active admin token.
        case fromEnvironment
        /// An admin already exists; nothing to do.
        case existing
    }

    /// Ensures an admin can log in (docs/operations.md): `TRIAD_ADMIN_TOKEN` if given, else on the first
    /// start a new token in `<data-dir>/admin.token` (mode 0600).
    public func bootstrap(dataDir: String, environmentToken: String?, logger: Logger) async throws -> Bootstrap {
        if let secret = environmentToken, !secret.isEmpty {
            if let existing = try await store.token(secretHash: Self.hash(secret)) {
                if existing.revokedAt != nil {
                    logger.warning("TRIAD_ADMIN_TOKEN names a revoked token; it stays revoked")
                } else if existing.role != .admin {
                    logger.warning("TRIAD_ADMIN_TOKEN names a token that is not an admin")
                }
                return .fromEnvironment
            }
            let name = try await freeName(base: "env-admin")
            _ = try await create(name: name, role: .admin, resource: nil, secret: secret)
            logger.info("created admin token from TRIAD_ADMIN_TOKEN", metadata: ["token.name": "\(name)"])
            return .fromEnvironment
        }
        guard try await store.activeAdminCount() == 0 else { return .existing }
        let name = try await freeName(base: "admin")
        let (_, secret) = try await create(name: name, role: .admin, resource: nil)
        let path = URL(fileURLWithPath: dataDir).appendingPathComponent("admin.token").path
        try SecretFile.create(path, contents: Data((secret + "\n").utf8))
        logger.info("created bootstrap admin token", metadata: ["token.name": "\(name)", "file": "\(path)"])
        return .wroteFile(path: path, secret: secret)
    }

    private func freeName(base: String) async throws -> String {
        let taken = Set(try await store.tokens().map(\.name))
        if !taken.contains(base) { return base }
        var n = 2
        while taken.contains("\(base)-\(n)") { n += 1 }
        return "\(base)-\(n)"
    }
}
