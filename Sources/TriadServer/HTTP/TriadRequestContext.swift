import Hummingbird
import NIOCore
import TriadCore

public struct TriadRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Set by `AuthMiddleware` for every route but the open ones.
    public var principal: Principal?
    /// The bearer secret the principal was authenticated with: long-lived responses (event
    /// streams) check it again, so a revoked token's stream ends.
    var bearerSecret: String?
    /// The event loop of the caller's connection: an upstream call made for this request keeps
    /// its connection there, so the answer needs no hop between loops.
    let eventLoop: any EventLoop

    public init(source: Source) {
        self.coreContext = .init(source: source)
        self.principal = nil
        self.eventLoop = source.channel.eventLoop
    }

    /// The caller, if allowed to do `action`; otherwise the problem to answer with.
    func require(_ action: Action) throws -> Principal {
        guard let principal else { throw Problem.unauthorized("a bearer token is required") }
        guard principal.may(action) else {
            throw Problem.forbidden("role \(principal.role.rawValue) may not \(Self.describe(action))")
        }
        return principal
    }

    static func describe(_ action: Action) -> String {
        switch action {
        case .readResources: "read resources"
        case .writeResources: "write resources"
        case .writeProbes: "set what a probe runs (spec.probeImage, probeArgs, probeEnabled)"
        case .invokeOperations: "invoke operations"
        case .readAllInvocations: "read other callers' invocations"
        case .writeStatus(let name): "write the status of \(name)"
        case .readEvents: "read events"
        case .readProjects: "read projects"
        case .writeProjects: "write projects"
        case .bindResources: "bind resources"
        case .manageTokens: "manage tokens"
        case .readServerInfo: "read server information"
        }
    }
}
