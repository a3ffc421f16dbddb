import Foundation
import Logging
import Synchronization
import TriadClient
import TriadCore

/// A device's agent: it follows one Home Assistant entity by its registry `unique_id` (so a
/// rename does not break it), offers the entity's capabilities as operations, checks their
/// arguments before Home Assistant sees them, and keeps the Resource's status true: `Running`
/// with the entity's state in `status.telemetry`, or `Failed` with a condition saying why.
final class DeviceAgent: ResourceAgent {
    let spec: AgentConfig.Agent
    let device: AgentConfig.Device
    let rest: HomeAssistantREST
    let triad: TriadReporter
    /// What Triad must send to call this agent (its operations' `httpAction.headers`).
    let secret: String
    let logger: Logger

    private struct State {
        var uniqueID: String?
        var entityID: String
        var entity: EntityState?
        var failure: HomeAssistantError? = HomeAssistantError(reason: .unreachable, description: "not connected to Home Assistant yet")
        var location: [String: JSONValue] = [:]
        /// The operations last written to the Resource (rewritten when they change).
        var published: [String]?
    }
    private let state: Mutex<State>

    init(spec: AgentConfig.Agent, device: AgentConfig.Device, rest: HomeAssistantREST, triad: TriadReporter, secret: String, logger: Logger) {
        self.secret = secret
        self.spec = spec
        self.device = device
        self.rest = rest
        self.triad = triad
        self.logger = logger
        state = Mutex(State(entityID: device.entity))
    }

    var name: String { spec.name }

    // MARK: Home Assistant's side

    func handle(_ event: HomeAssistantLink.Event) async {
        switch event {
        case .registry(let table):
            // First sight: learn the entity's unique_id; later, follow it to its current id.
            let entityID: String = state.withLock { s in
                if s.uniqueID == nil { s.uniqueID = table.first { $0.value == s.entityID }?.key }
                if let unique = s.uniqueID, let current = table[unique], current != s.entityID {
                    s.entityID = current
                }
                return s.entityID
            }
            await refresh(entityID)
        case .stateChanged(let changed):
            let mine = state.withLock { s -> Bool in
                guard changed.entityID == s.entityID else { return false }
                s.entity = changed
                s.failure = nil
                return true
            }
            if mine { await report() }
        case .lost(let failure):
            state.withLock { $0.failure = failure }
            await report()
        }
    }

    /// Reads the entity's state now (after a (re)connect or a rename).
    func refresh(_ entityID: String) async {
        do {
            let current = try await rest.state(entityID)
            state.withLock { s in
                s.entity = current
                s.failure = nil
            }
        } catch {
            state.withLock { $0.failure = error }
        }
        await report()
    }

    // MARK: Triad's side

    /// The operations as the Resource lists them, each pointing at this agent.
    func operationSpecs(advertiseURL: String) -> [JSONValue] {
        let attributes = state.withLock { $0.entity?.attributes }
        guard let attributes else { return [] }
        return DeviceCapabilities.operations(type: device.type, attributes: attributes).map { op in
            AgentStatus.operation(
                op.name, price: spec.prices[op.name] ?? 0, description: op.description, agent: spec.name,
                advertiseURL: advertiseURL, secret: secret)
        }
    }

    /// Writes what changed to the Resource: its operations (when the entity's capabilities
    /// change) and its status.
    func report() async {
        let advertise = await triad.advertiseURL
        guard let advertise else { return }
        let operations = operationSpecs(advertiseURL: advertise)
        let names = operations.compactMap { $0["name"]?.stringValue }
        let republish = state.withLock { s -> Bool in
            guard s.published != names else { return false }
            s.published = names
            return true
        }
        if republish {
            await triad.upsert(name: spec.name, kind: "Device", accessMode: spec.accessMode, labels: spec.labels, operations: operations)
        }
        await triad.patchStatus(spec.name, status: statusPatch())
    }

    func statusPatch() -> JSONValue {
        let (entity, failure, location) = state.withLock { ($0.entity, $0.failure, $0.location) }
        let now = Timestamp.format(Date())
        var status: [String: JSONValue] = [
            "phase": .string(failure == nil ? "Running" : "Failed"),
            "conditions": .array([
                AgentStatus.heartbeat(at: now),
                .object([
                    "type": .string("DeviceReachable"), "status": .string(failure == nil ? "True" : "False"),
                    "reason": .string(failure?.reason.rawValue ?? "EntityFollowed"),
                    "message": .string(failure?.description ?? "following \(state.withLock { $0.entityID })"),
                    "lastTransitionTime": .string(now),
                ]),
            ]),
        ]
        if let entity, failure == nil {
            status["telemetry"] = .object(["lastSeen": .string(now), "values": DeviceCapabilities.telemetry(entity)])
        }
        if !location.isEmpty { status["location"] = .object(location) }
        return .object(status)
    }

    // MARK: The agent's own API

    func meta() -> JSONValue {
        let (entity, entityID, location) = state.withLock { ($0.entity, $0.entityID, $0.location) }
        var attributes = entity.map { DeviceCapabilities.telemetry($0).objectValue ?? [:] } ?? [:]
        attributes["entityId"] = .string(entityID)
        return .object(["name": .string(spec.name), "kind": .string("Device"), "attributes": .object(attributes), "location": .object(location)])
    }

    /// A merge patch of the metamodel: a device's `location` may change; its attributes are
    /// Home Assistant's.
    func patchMeta(_ patch: [String: JSONValue]) throws(AgentProblem) -> JSONValue {
        if let extra = patch.keys.sorted().first(where: { $0 != "location" }) {
            throw AgentProblem(
                status: 422, title: "Invalid patch", detail: "a device's metamodel takes location only, not \(extra) (its attributes are Home Assistant's)")
        }
        if let location = patch["location"] {
            guard case .object(let members)? = Optional(MergePatch.apply(location, to: .object(state.withLock { $0.location }))) else {
                throw AgentProblem(status: 422, title: "Invalid patch", detail: "location must be an object")
            }
            // The location is reported as the resource's status.location: refused here, not by the registry later.
            let violations = ResourceValidator.validateStatus(.object(["location": .object(members)]), at: "")
            if !violations.isEmpty {
                throw AgentProblem(status: 422, title: "Invalid patch", detail: violations.map(\.description).joined(separator: "; "))
            }
            state.withLock { $0.location = members }
        }
        return meta()
    }

    func stopped() async {
        await triad.patchStatus(spec.name, status: AgentStatus.stopped())
    }

    func operationList() -> JSONValue {
        let attributes = state.withLock { $0.entity?.attributes } ?? [:]
        return .object([
            "items": .array(
                DeviceCapabilities.operations(type: device.type, attributes: attributes).map { op in
                    .object(["name": .string(op.name), "price": .number(spec.prices[op.name] ?? 0), "description": .string(op.description)])
                })
        ])
    }

    /// Runs `operation` on the entity: arguments checked first (422), an unknown operation 404,
    /// Home Assistant out of reach 503.
    func invoke(_ operation: String, arguments: [String: JSONValue], context: [(String, String)]) async throws(AgentProblem) -> JSONValue {
        let (entity, entityID, failure) = state.withLock { ($0.entity, $0.entityID, $0.failure) }
        guard let entity else {
            if failure?.reason == .entityNotFound {
                throw AgentProblem(status: 404, title: "Entity not found", detail: failure!.description)
            }
            throw AgentProblem(status: 503, title: "Device unavailable", detail: failure?.description ?? "the entity is not known yet")
        }
        let call: (service: String, data: [String: JSONValue])
        do {
            call = try DeviceCapabilities.serviceData(type: device.type, operation: operation, arguments: arguments, attributes: entity.attributes)
        } catch {
            switch error.kind {
            case .unknownOperation: throw AgentProblem(status: 404, title: "Unknown operation", detail: error.description)
            case .invalidArguments: throw AgentProblem(status: 422, title: "Invalid arguments", detail: error.description)
            }
        }
        do {
            // Home Assistant answers with the states the call changed: no second round trip.
            let changed = try await rest.call(device.type.rawValue, call.service, entityID: entityID, data: call.data)
            // The status follows from Home Assistant's state_changed event, not from here.
            let after = state.withLock { s -> EntityState in
                if let mine = changed.first(where: { $0.entityID == entityID }) { s.entity = mine }
                s.failure = nil
                return s.entity ?? entity
            }
            return .object(["entity": .string(entityID), "state": .string(after.state), "attributes": .object(after.attributes)])
        } catch {
            switch error.reason {
            case .entityNotFound: throw AgentProblem(status: 404, title: "Entity not found", detail: error.description)
            case .rejected: throw AgentProblem(status: 422, title: "Rejected by Home Assistant", detail: error.description)
            case .unreachable, .tokenRefused: throw AgentProblem(status: 503, title: "Device unavailable", detail: error.description)
            }
        }
    }
}

/// An RFC 9457 problem an agent answers with.
struct AgentProblem: Error, Sendable {
    var status: Int
    var title: String
    var detail: String
}
