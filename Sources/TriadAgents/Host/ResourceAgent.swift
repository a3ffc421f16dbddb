import TriadCore

/// What the host serves for each agent under `/agents/<name>/`, whatever resource it carries.
protocol ResourceAgent: Sendable {
    var name: String { get }
    /// `GET /meta`: attributes and `location`.
    func meta() async -> JSONValue
    /// `PATCH /meta`: a merge patch; answers the metamodel after it.
    func patchMeta(_ patch: [String: JSONValue]) async throws(AgentProblem) -> JSONValue
    /// `GET /operations`.
    func operationList() async -> JSONValue
    /// `POST /operations/{op}`. `context`: the headers Triad sent with the call that the agent
    /// passes on when it calls Triad for it (its trace, and the link that makes Triad record
    /// such a call as made for this one).
    func invoke(_ operation: String, arguments: [String: JSONValue], context: [(String, String)]) async throws(AgentProblem) -> JSONValue
    /// Writes the Resource's status (each heartbeat, and after a change).
    func report() async
    /// The host stops: the Resource says so.
    func stopped() async
}
