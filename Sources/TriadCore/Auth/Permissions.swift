/// What a request wants to do; `Role.allows` is the whole access policy (docs/api.md).
public enum Action: Sendable, Equatable {
    case readResources
    case writeResources
    /// Set what a probe runs (`spec.probeImage`, `probeArgs`, `probeEnabled`): admins only,
    /// since the server starts it.
    case writeProbes
    /// Invoke a resource's operations (`POST …/operations/{op}`).
    case invokeOperations
    /// Read the ledger of every caller (apps read only their own invocations).
    case readAllInvocations
    /// Status of one resource (agents, controller, devices).
    case writeStatus(resource: String)
    case readEvents
    /// Projects (docs/projects.md): their repositories and build settings are the operators'.
    case readProjects
    case writeProjects
    /// Take and give back bindings (exclusive leases).
    case bindResources
    case manageTokens
    /// /metrics and /openapi.yaml: any authenticated caller.
    case readServerInfo
}

public struct Principal: Sendable, Equatable {
    public var name: String
    public var role: Role
    public var resource: String?

    public init(name: String, role: Role, resource: String? = nil) {
        self.name = name
        self.role = role
        self.resource = resource
    }

    public func may(_ action: Action) -> Bool {
        switch (role, action) {
        case (.admin, _): true
        case (_, .readServerInfo): true
        case (.`operator`, .readResources), (.`operator`, .writeResources), (.`operator`, .writeStatus), (.`operator`, .readEvents): true
        case (.app, .readResources), (.app, .bindResources), (.`operator`, .bindResources): true
        case (.app, .invokeOperations), (.`operator`, .invokeOperations): true
        case (.`operator`, .readAllInvocations), (.integrator, .readAllInvocations): true
        case (.integrator, .readResources), (.integrator, .readEvents): true
        case (.`operator`, .readProjects), (.`operator`, .writeProjects), (.integrator, .readProjects): true
        // Whoever may read may watch: apps every resource's events, a device its own resource's
        // (the event stream filters them).
        case (.app, .readEvents), (.device, .readEvents): true
        // A device reads and reports the one resource it was created for.
        case (.device, .writeStatus(let name)): name == resource
        default: false
        }
    }

    /// A device token may read only its own resource.
    public func mayRead(resource name: String) -> Bool {
        may(.readResources) || (role == .device && resource == name)
    }
}
