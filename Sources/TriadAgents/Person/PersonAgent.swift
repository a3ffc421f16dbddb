import Foundation
import Logging
import NIOHTTP1
import Synchronization
import TriadClient
import TriadCore

/// A person's agent: the person's capabilities follow where they are. In a space, the person's
/// Resource offers `<device>.<op>` for each operation of each resource labelled
/// `triad.io/space=<space>`, at the device's price, each pointing back at this agent; invoked,
/// the agent runs the device's operation through Triad with the person's own token (their
/// binding, their ledger entry). The location changes by `PATCH /meta` or by a `location` in the
/// person's telemetry (a badge reader publishing on the person's MQTT topic).
///
/// The agent holds the lease of the person's own Resource with the person's token, so Triad lets
/// only the person invoke what the person may do.
final class PersonAgent: ResourceAgent {
    struct Offer: Sendable, Equatable {
        var device: String
        var operation: String
        var price: Double
    }

    private struct State {
        var space: String?
        var since: String?
        var attributes: [String: JSONValue] = [:]
        /// What the Resource offers now, by operation name.
        var offered: [String: Offer] = [:]
        /// As last written to the Resource (nil: not yet).
        var written: [String: Offer]?
        /// The last `location` read from the person's telemetry.
        var telemetryLocation: JSONValue?
        /// Why the last location from telemetry was refused.
        var refused: String?
        var leaseProblem: String?
    }

    let spec: AgentConfig.Agent
    let triad: TriadReporter
    /// The person's own token: leases and invocations in the person's name.
    let own: TriadClient
    let directory: RegistryFollower
    let secret: String
    let leaseSeconds: Int
    let startedAt = Date()
    let logger: Logger
    private let state: Mutex<State>
    private let wakeups = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))

    init(
        spec: AgentConfig.Agent, person: AgentConfig.Person, triad: TriadReporter, own: TriadClient, directory: RegistryFollower,
        secret: String, heartbeatSeconds: Double, logger: Logger
    ) {
        self.spec = spec
        self.triad = triad
        self.own = own
        self.directory = directory
        self.secret = secret
        // Outlives a missed heartbeat or two; renewed on each.
        leaseSeconds = max(60, Int(heartbeatSeconds * 3))
        self.logger = logger
        state = Mutex(State(space: person.location, since: person.location.map { _ in Timestamp.format(Date()) }))
        wakeups.continuation.yield()
    }

    var name: String { spec.name }
    var space: String? { state.withLock { $0.space } }

    /// The operations should be computed and written again.
    func wake() { wakeups.continuation.yield() }

    /// Until cancelled: writes the person's Resource whenever what it offers may have changed.
    /// One writer, so an older computation never overwrites a newer one.
    func run() async {
        // Where the configuration puts the person must be a space too.
        if let initial = space {
            do { try await checkSpace(initial) } catch {
                logger.warning("the configured location is refused", metadata: ["agent": "\(name)", "reason": "\(error.detail)"])
                state.withLock { s in
                    (s.space, s.since, s.refused) = (nil, nil, error.detail)
                }
            }
        }
        await withTaskCancellationHandler {
            for await _ in wakeups.stream { await publish() }
        } onCancel: {
            wakeups.continuation.finish()
        }
    }

    // MARK: What the person may do

    func offers() -> [String: Offer] {
        guard let space else { return [:] }
        var offers: [String: Offer] = [:]
        for (device, placed) in directory.resources(in: space) where device != name && placed.kind != "Person" && placed.kind != "Space" {
            for op in placed.operations {
                let opName = "\(device).\(op.name)"
                guard ResourceValidator.isValidOperationName(opName) else { continue }
                offers[opName] = Offer(device: device, operation: op.name, price: op.price)
            }
        }
        return offers
    }

    /// Writes the person's Resource with what the person may do now: read, changed, written
    /// with its `resourceVersion`, again on a conflict.
    func publish() async {
        // The operations point at the host: wait until it listens.
        await triad.listens.wait()
        guard let advertise = await triad.advertiseURL else { return }
        let offers = offers()
        state.withLock { $0.offered = offers }
        if state.withLock({ $0.written }) == offers { return }
        let operations: [JSONValue] = offers.keys.sorted().map { opName in
            let offer = offers[opName]!
            return AgentStatus.operation(
                opName, price: offer.price, description: "\(offer.operation) on \(offer.device), in \(space ?? "")",
                agent: name, advertiseURL: advertise, secret: secret)
        }
        for _ in 0..<8 {
            do {
                let current = try await triad.client.send(.GET, "/api/v1/resources/\(name)")
                var metadata: [String: JSONValue] = ["name": .string(name)]
                if !spec.labels.isEmpty { metadata["labels"] = .object(spec.labels.mapValues(JSONValue.string)) }
                if current.status == 200, let version = current.json?["metadata"]?["resourceVersion"] { metadata["resourceVersion"] = version }
                var resourceSpec: [String: JSONValue] = ["kind": .string("Person"), "accessMode": .string("Exclusive")]
                if !operations.isEmpty { resourceSpec["operations"] = .array(operations) }
                let document: JSONValue = .object([
                    "apiVersion": .string(Resource.apiVersion), "kind": .string("Resource"),
                    "metadata": .object(metadata), "spec": .object(resourceSpec),
                ])
                let reply = try await triad.client.send(.PUT, "/api/v1/resources/\(name)", body: JSONCoding.encode(document))
                if reply.status == 409 || reply.status == 412 { continue }
                guard (200..<300).contains(reply.status) else {
                    logger.warning(
                        "the person's resource was refused; trying again on the next change",
                        metadata: ["agent": "\(name)", "status": "\(reply.status)", "problem": "\(reply.json?["detail"]?.stringValue ?? "")"])
                    return
                }
                let first = state.withLock { s -> Bool in
                    defer { s.written = offers }
                    return s.written == nil
                }
                logger.info("person's operations written", metadata: ["agent": "\(name)", "space": "\(space ?? "-")", "operations": "\(offers.count)"])
                if first { await report() }
                return
            } catch {
                logger.warning(
                    "cannot write the person's resource; trying again on the next change or heartbeat",
                    metadata: ["agent": "\(name)", "error": "\(error)"])
                return
            }
        }
    }

    // MARK: Where the person is

    /// Moves the person to `space` (nil: nowhere). A location names an existing Space resource.
    func setLocation(_ space: String?) async throws(AgentProblem) {
        if let space { try await checkSpace(space) }
        let moved = state.withLock { s -> Bool in
            guard s.space != space else { return false }
            s.space = space
            s.since = space.map { _ in Timestamp.format(Date()) }
            s.refused = nil
            return true
        }
        if moved {
            logger.info("person moved", metadata: ["agent": "\(name)", "space": "\(space ?? "-")"])
            wake()
            await report()
        }
    }

    /// A location names an existing Space resource.
    func checkSpace(_ space: String) async throws(AgentProblem) {
        guard ResourceValidator.isValidName(space) else {
            throw AgentProblem(status: 422, title: "Invalid location", detail: "a location names a Space resource; \(space) is not a resource name")
        }
        let reply: TriadClient.Reply
        do { reply = try await triad.client.send(.GET, "/api/v1/resources/\(space)") } catch {
            throw AgentProblem(status: 503, title: "Triad unavailable", detail: "cannot check the space \(space): \(error)")
        }
        switch reply.status {
        case 200:
            let kind = reply.json?["spec"]?["kind"]?.stringValue ?? "resource without a kind"
            guard kind == "Space" else {
                throw AgentProblem(status: 422, title: "Invalid location", detail: "\(space) is a \(kind), not a Space")
            }
        case 404:
            throw AgentProblem(status: 422, title: "Invalid location", detail: "there is no Space named \(space)")
        default:
            throw AgentProblem(status: 502, title: "Triad unavailable", detail: "checking the space \(space) answered HTTP \(reply.status)")
        }
    }

    /// The newest document of a resource: the person's own carries locations sent as telemetry.
    func observe(_ document: JSONValue?) async {
        guard let values = document?["status"]?["telemetry"], let location = values["values"]?["location"] else { return }
        // Only what was sent since the agent started: an old reading is not where the person is now.
        guard let seen = values["lastSeen"]?.stringValue.flatMap(Timestamp.parse), seen >= startedAt.addingTimeInterval(-1) else { return }
        let fresh = state.withLock { s -> Bool in
            guard s.telemetryLocation != location else { return false }
            s.telemetryLocation = location
            return true
        }
        guard fresh else { return }
        do throws(AgentProblem) {
            switch location {
            case .null: try await setLocation(nil)
            case .string(let space) where !space.isEmpty: try await setLocation(space)
            default: throw AgentProblem(status: 422, title: "Invalid location", detail: "a location in telemetry is a space's name or null")
            }
            state.withLock { $0.refused = nil }
        } catch {
            logger.warning("location from telemetry refused", metadata: ["agent": "\(name)", "reason": "\(error.detail)"])
            state.withLock { $0.refused = error.detail }
            await report()
        }
    }

    // MARK: The agent's own API

    func meta() -> JSONValue {
        let (space, since, attributes) = state.withLock { ($0.space, $0.since, $0.attributes) }
        var location: [String: JSONValue] = [:]
        if let space { location["space"] = .string(space) }
        if let since { location["since"] = .string(since) }
        return .object(["name": .string(name), "kind": .string("Person"), "attributes": .object(attributes), "location": .object(location)])
    }

    /// A merge patch: `location` (a space's name, `{"space": …}`, or null to leave) and
    /// `attributes` (free-form).
    func patchMeta(_ patch: [String: JSONValue]) async throws(AgentProblem) -> JSONValue {
        if let extra = patch.keys.sorted().first(where: { !["location", "attributes"].contains($0) }) {
            throw AgentProblem(status: 422, title: "Invalid patch", detail: "a person's metamodel takes location and attributes, not \(extra)")
        }
        var attributes: [String: JSONValue]?
        if let patchAttributes = patch["attributes"] {
            guard case .object = patchAttributes, case .object(let merged) = MergePatch.apply(patchAttributes, to: .object(state.withLock { $0.attributes }))
            else {
                throw AgentProblem(status: 422, title: "Invalid patch", detail: "attributes must be an object")
            }
            attributes = merged
        }
        if let location = patch["location"] {
            let space: String?
            switch location {
            case .null: space = nil
            case .string(let s): space = s
            case .object(let members) where members.keys.allSatisfy({ $0 == "space" }):
                switch members["space"] {
                case .string(let s)?: space = s
                case .null?, nil: space = nil
                default: throw AgentProblem(status: 422, title: "Invalid location", detail: "location.space is a space's name or null")
                }
            default:
                throw AgentProblem(status: 422, title: "Invalid location", detail: "location is a space's name, {\"space\": name}, or null")
            }
            // Checked before anything changes: a refused patch changes nothing.
            try await setLocation(space)
        }
        if let attributes { state.withLock { $0.attributes = attributes } }
        return meta()
    }

    func operationList() -> JSONValue {
        let offered = state.withLock { $0.offered }
        return .object([
            "items": .array(
                offered.keys.sorted().map { opName in
                    let offer = offered[opName]!
                    return .object([
                        "name": .string(opName), "price": .number(offer.price), "device": .string(offer.device), "operation": .string(offer.operation),
                    ])
                })
        ])
    }

    /// Runs `<device>.<op>` as the person: on an `Exclusive` device the person's lease is taken
    /// for the call and given back after (unless the person already held it), then the device's
    /// operation is invoked through Triad with the person's token, passing on the call's trace and
    /// link, so the ledger records it as made for that call (charged there, once).
    func invoke(_ operation: String, arguments: [String: JSONValue], context: [(String, String)]) async throws(AgentProblem) -> JSONValue {
        let (offer, space) = state.withLock { ($0.offered[operation], $0.space) }
        guard let offer else {
            throw AgentProblem(
                status: 404, title: "Unknown operation",
                detail: "\(name) cannot \(operation) \(space.map { "in \($0)" } ?? "while in no space")")
        }
        var tookLease = false
        if directory.placement(of: offer.device)?.accessMode == "Exclusive" {
            let lease = try await ask(.POST, "/api/v1/resources/\(offer.device)/binding", body: .object(["ttlSeconds": .number(60)]))
            switch lease.status {
            case 201: tookLease = true
            case 200: break  // the person held it already, and keeps it
            default: throw Self.problem(lease, doing: "binding \(offer.device)")
            }
        }
        let reply: TriadClient.Reply
        do throws(AgentProblem) {
            reply = try await ask(
                .POST, "/api/v1/resources/\(offer.device)/operations/\(offer.operation)", body: .object(arguments),
                headers: context)
        } catch {
            if tookLease { _ = try? await own.send(.DELETE, "/api/v1/resources/\(offer.device)/binding") }
            throw error
        }
        if tookLease { _ = try? await own.send(.DELETE, "/api/v1/resources/\(offer.device)/binding") }
        guard (200..<300).contains(reply.status) else { throw Self.problem(reply, doing: "invoking \(offer.device).\(offer.operation)") }
        return reply.json ?? .object([:])
    }

    private func ask(_ method: HTTPMethod, _ path: String, body: JSONValue, headers: [(String, String)] = []) async throws(AgentProblem) -> TriadClient.Reply {
        do { return try await own.send(method, path, body: JSONCoding.encode(body), headers: headers) } catch {
            throw AgentProblem(status: 503, title: "Triad unavailable", detail: "\(error)")
        }
    }

    /// Triad's refusal, passed on: its status (a 5xx becomes 502) and its words.
    static func problem(_ reply: TriadClient.Reply, doing what: String) -> AgentProblem {
        let problem = reply.json
        return AgentProblem(
            status: reply.status >= 500 ? 502 : reply.status, title: problem?["title"]?.stringValue ?? "HTTP \(reply.status)",
            detail: "\(what): " + (problem?["detail"]?.stringValue ?? "Triad answered HTTP \(reply.status)"))
    }

    // MARK: Status

    /// Renews the person's lease, then writes phase, location and conditions.
    func report() async {
        guard state.withLock({ $0.written != nil }) else { return }
        let problem: String?
        do {
            let lease = try await own.send(
                .POST, "/api/v1/resources/\(name)/binding", body: JSONCoding.encode(JSONValue.object(["ttlSeconds": .number(Double(leaseSeconds))])))
            problem = (200..<300).contains(lease.status) ? nil : Self.problem(lease, doing: "holding \(name)'s lease").detail
        } catch {
            problem = "cannot renew \(name)'s lease: \(error)"
        }
        let (space, since, refused) = state.withLock { s in
            s.leaseProblem = problem
            return (s.space, s.since, s.refused)
        }
        let now = Timestamp.format(Date())
        var conditions: [JSONValue] = [
            AgentStatus.heartbeat(at: now),
            .object([
                "type": .string("Leased"), "status": .string(problem == nil ? "True" : "False"),
                "reason": .string(problem == nil ? "HeldForThePerson" : "LeaseRefused"),
                "message": .string(problem ?? "only \(name)'s own token invokes \(name)'s operations"), "lastTransitionTime": .string(now),
            ]),
            .object([
                "type": .string("LocationAccepted"), "status": .string(refused == nil ? "True" : "False"),
                "reason": .string(refused == nil ? "Located" : "NotASpace"),
                "message": .string(refused ?? (space.map { "in \($0)" } ?? "in no space")), "lastTransitionTime": .string(now),
            ]),
        ]
        if problem != nil { logger.warning("person's lease refused", metadata: ["agent": "\(name)", "reason": "\(problem!)"]) }
        var location: JSONValue = .null
        if let space { location = .object(["space": .string(space), "since": .string(since ?? now)]) }
        conditions.sort { ($0["type"]?.stringValue ?? "") < ($1["type"]?.stringValue ?? "") }
        await triad.patchStatus(name, status: .object(["phase": .string("Running"), "location": location, "conditions": .array(conditions)]))
    }

    func stopped() async {
        _ = try? await own.send(.DELETE, "/api/v1/resources/\(name)/binding")
        await triad.patchStatus(name, status: AgentStatus.stopped())
    }
}
