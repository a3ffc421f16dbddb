import Foundation
import Logging
import NIOHTTP1
import TriadAMQP
import TriadClient
import TriadCore

/// The host's link to the Triad server, with the host's own token: upserts the agents'
/// resources over REST, and reports their status to the exchange `triad.state` when the host
/// is given the server's RabbitMQ (`triad.amqp`), else as REST status merge patches. A report
/// the bus does not confirm goes over REST instead. A failed write is logged and made again by
/// the next report or heartbeat; it never stops an agent.
actor TriadReporter {
    static let stateExchange = "triad.state"

    let client: TriadClient
    let logger: Logger
    /// Where the agents are reached (the resources' `httpAction`s); known once the host listens.
    private(set) var advertiseURL: String?
    /// Fired when the host listens (`advertiseURL` is known).
    nonisolated let listens = OneShot()
    private let bus: AMQPPublisher?
    private var busReady = false
    /// Status reports so far, by the way they went.
    private(set) var reports = (bus: 0, rest: 0)

    init(client: TriadClient, amqp: String?, logger: Logger) {
        self.client = client
        self.logger = logger
        bus = amqp.flatMap { try? AMQPEndpoint(url: $0) }.map { AMQPPublisher(endpoint: $0) }
    }

    deinit { bus?.close() }

    func listening(at url: String) {
        advertiseURL = url
        listens.fire()
    }

    func upsert(name: String, kind: String, accessMode: String, labels: [String: String], operations: [JSONValue]) async {
        var spec: [String: JSONValue] = ["kind": .string(kind), "accessMode": .string(accessMode)]
        if !operations.isEmpty { spec["operations"] = .array(operations) }
        var metadata: [String: JSONValue] = ["name": .string(name)]
        if !labels.isEmpty { metadata["labels"] = .object(labels.mapValues(JSONValue.string)) }
        let document: JSONValue = .object([
            "apiVersion": .string(Resource.apiVersion), "kind": .string("Resource"),
            "metadata": .object(metadata), "spec": .object(spec),
        ])
        do {
            _ = try await client.call(.PUT, "/api/v1/resources/\(name)", body: JSONCoding.encode(document))
            logger.info("resource upserted", metadata: ["agent": "\(name)", "operations": "\(operations.count)"])
        } catch {
            logger.warning("cannot upsert the agent's resource", metadata: ["agent": "\(name)", "error": "\(error)"])
        }
    }

    func patchStatus(_ name: String, status: JSONValue) async {
        if let bus, await publish(status, of: name, on: bus) {
            reports.bus += 1
            return
        }
        reports.rest += 1
        do {
            _ = try await client.call(
                .PATCH, "/api/v1/resources/\(name)/status",
                body: JSONCoding.encode(JSONValue.object(["status": status])),
                contentType: "application/merge-patch+json")
        } catch {
            logger.warning("cannot report the agent's status", metadata: ["agent": "\(name)", "error": "\(error)"])
        }
    }

    /// One partial status to `triad.state`, routing key the resource's name, with the host's
    /// token in the `authorization` header; true once the broker confirmed it.
    private func publish(_ status: JSONValue, of name: String, on bus: AMQPPublisher) async -> Bool {
        do {
            if !busReady {
                try await bus.connect()
                try await bus.declareTopicExchange(Self.stateExchange)
                busReady = true
            }
            try await bus.publishConfirmed([
                AMQPMessage(
                    exchange: Self.stateExchange, routingKey: name, body: Array(JSONCoding.encode(status)),
                    messageID: UUID().uuidString, headers: ["authorization": "Bearer \(client.token ?? "")"])
            ])
            return true
        } catch {
            busReady = false
            logger.warning("cannot report over RabbitMQ; reporting over REST", metadata: ["agent": "\(name)", "error": "\(error.description)"])
            return false
        }
    }
}

/// Status documents every kind of agent writes alike.
enum AgentStatus {
    /// `AgentReady` True with the heartbeat's time: what the controller's heartbeat check reads.
    static func heartbeat(at now: String) -> JSONValue {
        .object([
            "type": .string("AgentReady"), "status": .string("True"), "lastHeartbeatTime": .string(now),
            "reason": .string("Heartbeat"), "message": .string("the agent is running"),
        ])
    }

    /// One of an agent's operations as its Resource lists it: Triad calls
    /// `POST <advertiseURL>/agents/<agent>/operations/<operation>` with the host's secret.
    static func operation(_ operation: String, price: Double, description: String, agent: String, advertiseURL: String, secret: String) -> JSONValue {
        .object([
            "name": .string(operation), "price": .number(price), "description": .string(description),
            "httpAction": .object([
                "action": .string("POST"), "url": .string("\(advertiseURL)/agents/\(agent)/operations/\(operation)"),
                "headers": .object(["Authorization": .string("Bearer \(secret)")]),
            ]),
        ])
    }

    /// The host stopped: `Pending`, and `AgentReady` False saying so.
    static func stopped() -> JSONValue {
        let now = Timestamp.format(Date())
        return .object([
            "phase": .string("Pending"),
            "conditions": .array([
                .object([
                    "type": .string("AgentReady"), "status": .string("False"), "reason": .string("AgentStopped"),
                    "message": .string("the agent host stopped"), "lastTransitionTime": .string(now),
                    "lastHeartbeatTime": .string(now),
                ])
            ]),
        ])
    }
}
