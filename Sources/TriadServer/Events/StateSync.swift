import Foundation
import Logging
import Metrics
import ServiceLifecycle
import TriadCore

/// State sync into the registry (docs/events.md): agents publish partial statuses to the topic
/// exchange `triad.state` with routing key `<name>` and their token in the `authorization`
/// header. Each message is applied as a status merge; one that is malformed, too large,
/// unauthorised, names a missing resource or carries an invalid status is rejected with a reason
/// (the source keeps it as a dead letter). A failing database is not the message's fault: the
/// error leaves the message to be delivered again. The transport is a `StateMessageSource`
/// (RabbitMQ: `AMQPStateSource`).
public final class StateSync: Service, Sendable {
    public static let exchange = "triad.state"

    let source: any StateMessageSource
    /// The largest body applied (the REST body limit); a larger one is rejected `too-large`.
    let maxBodyBytes: Int
    let registry: Registry
    let authority: TokenAuthority
    let written: @Sendable () -> Void
    let logger: Logger

    public init(
        source: any StateMessageSource, maxBodyBytes: Int = 1 << 20, registry: Registry, authority: TokenAuthority,
        written: @escaping @Sendable () -> Void, logger: Logger
    ) {
        self.source = source
        self.maxBodyBytes = maxBodyBytes
        self.registry = registry
        self.authority = authority
        self.written = written
        self.logger = logger
    }

    /// nil while consuming; otherwise why not (for `/readyz`).
    public var health: String? { source.health }

    /// Why a message was rejected: the dead letter's `x-triad-reason`.
    struct Rejection: Error {
        var reason: String
    }

    public func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await self.source.consume { message in
                do {
                    try await self.apply(message)
                    Counter(label: "triad_state_messages_total", dimensions: [("result", "applied")]).increment()
                    return .applied
                } catch let rejection as Rejection {
                    Counter(label: "triad_state_messages_total", dimensions: [("result", "dead")]).increment()
                    return .rejected(reason: rejection.reason)
                }
            }
        }
    }

    private func apply(_ delivery: StateMessage) async throws {
        let name = delivery.routingKey
        guard ResourceValidator.isValidName(name) else {
            throw Rejection(reason: "malformed: the routing key must be a resource name")
        }
        let header = delivery.headers.first { $0.key.lowercased() == "authorization" }?.value ?? ""
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            throw Rejection(reason: "unauthorised: the authorization header must be 'Bearer <token>'")
        }
        guard let principal = try await authority.authenticate(String(parts[1])) else {
            throw Rejection(reason: "unauthorised: unknown or revoked token")
        }
        guard principal.may(.writeStatus(resource: name)) else {
            throw Rejection(reason: "unauthorised: role \(principal.role.rawValue) may not write the status of \(name)")
        }
        guard delivery.body.count <= maxBodyBytes else {
            throw Rejection(reason: "too-large: the body has \(delivery.body.count) bytes; at most \(maxBodyBytes) are applied")
        }
        let status: JSONValue
        do { status = try JSONCoding.parse(Data(delivery.body)) } catch {
            throw Rejection(reason: "malformed: \(error.message)")
        }
        guard case .object = status else { throw Rejection(reason: "malformed: the body must be a JSON object (a partial ResourceStatus)") }
        do {
            _ = try await registry.writeStatus(name, .merge(status), precondition: nil)
            written()
        } catch RegistryError.notFound {
            throw Rejection(reason: "not-found: resource \(name) does not exist")
        } catch RegistryError.invalid(let violations) {
            throw Rejection(reason: "invalid: " + violations.map(\.description).joined(separator: "; "))
        }
    }
}
