import Foundation
import Logging
import TriadClient
import TriadCore

/// The host's link to the Triad server, with the host's own token: upserts the agents'
/// resources and patches their status over REST. A failed write is logged and made again by the
/// next report or heartbeat; it never stops an agent.
actor TriadReporter {
    let client: TriadClient
    let logger: Logger
    /// Where the agents are reached (the resources' `httpAction`s); known once the host listens.
    private(set) var advertiseURL: String?

    init(client: TriadClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    func listening(at url: String) { advertiseURL = url }

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
        do {
            _ = try await client.call(.PATCH, "/api/v1/resources/\(name)/status",
                                      body: JSONCoding.encode(JSONValue.object(["status": status])),
                                      contentType: "application/merge-patch+json")
        } catch {
            logger.warning("cannot report the agent's status", metadata: ["agent": "\(name)", "error": "\(error)"])
        }
    }
}

/// Status documents every kind of agent writes alike.
enum AgentStatus {
    /// The host stopped: `Pending`, and `AgentReady` False saying so.
    static func stopped() -> JSONValue {
        let now = Timestamp.format(Date())
        return .object([
            "phase": .string("Pending"),
            "conditions": .array([.object(["type": .string("AgentReady"), "status": .string("False"), "reason": .string("AgentStopped"),
                                           "message": .string("the agent host stopped"), "lastTransitionTime": .string(now),
                                           "lastHeartbeatTime": .string(now)])]),
        ])
    }
}
