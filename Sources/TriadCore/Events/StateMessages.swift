/// A partial status an agent published for a resource (docs/events.md, `triad.state`): the
/// resource it names (the routing key), its headers (the agent's token among them) and its body.
/// The transport behind it is a `StateMessageSource`.
public struct StateMessage: Sendable, Equatable {
    public var routingKey: String
    public var headers: [String: String]
    public var body: [UInt8]

    public init(routingKey: String, headers: [String: String], body: [UInt8]) {
        self.routingKey = routingKey
        self.headers = headers
        self.body = body
    }
}

/// What became of one state message: applied, or refused for a reason (kept aside as a dead
/// letter, never delivered again).
public enum StateMessageOutcome: Sendable, Equatable {
    case applied
    case rejected(reason: String)
}

/// Delivers the state messages agents publish, one at a time, each settled by what `handle`
/// returns. An error thrown by `handle` (a database that is down: not the message's fault)
/// leaves the message to be delivered again.
public protocol StateMessageSource: Sendable {
    /// nil while consuming; otherwise why not (for readiness).
    var health: String? { get }
    /// Consumes until cancelled, reconnecting after failures.
    func consume(_ handle: @escaping @Sendable (StateMessage) async throws -> StateMessageOutcome) async throws
}
