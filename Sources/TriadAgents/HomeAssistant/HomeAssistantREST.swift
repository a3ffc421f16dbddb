import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationEssentialsCompat
import NIOHTTP1
import TriadCore

/// An entity's state as Home Assistant reports it.
public struct EntityState: Sendable, Equatable {
    public var entityID: String
    public var state: String
    public var attributes: [String: JSONValue]
    public var lastUpdated: String?

    init?(_ tree: JSONValue) {
        guard let id = tree["entity_id"]?.stringValue, let state = tree["state"]?.stringValue else { return nil }
        entityID = id
        self.state = state
        attributes = tree["attributes"]?.objectValue ?? [:]
        lastUpdated = tree["last_updated"]?.stringValue
    }
}

/// Why Home Assistant could not be used; `reason` names it for a condition.
public struct HomeAssistantError: Error, Sendable, CustomStringConvertible {
    public enum Reason: String, Sendable {
        case unreachable = "HomeAssistantUnreachable"
        case tokenRefused = "HomeAssistantTokenRefused"
        case entityNotFound = "EntityNotFound"
        case rejected = "HomeAssistantRejected"
    }
    public var reason: Reason
    public var description: String
}

/// Home Assistant's REST API with a long-lived token (never logged): states and service calls.
public struct HomeAssistantREST: Sendable {
    let baseURL: String
    let token: String
    let http: HTTPClient
    let timeout: TimeAmount = .seconds(10)

    public init(baseURL: String, token: String, http: HTTPClient) {
        self.baseURL = baseURL
        self.token = token
        self.http = http
    }

    func send(_ method: HTTPMethod, _ path: String, body: JSONValue? = nil) async throws(HomeAssistantError) -> (status: UInt, tree: JSONValue?) {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: JSONCoding.encode(body)))
        }
        do {
            let response = try await http.execute(request, timeout: timeout)
            let bytes = try await response.body.collect(upTo: 4 << 20)
            let status = response.status.code
            if status == 401 || status == 403 {
                throw HomeAssistantError(reason: .tokenRefused, description: "Home Assistant refused the token (\(status))")
            }
            let tree = bytes.readableBytes > 0 ? try? JSONCoding.parse(Data(buffer: bytes)) : nil
            return (status, tree)
        } catch let error as HomeAssistantError {
            throw error
        } catch {
            throw HomeAssistantError(reason: .unreachable, description: "Home Assistant at \(baseURL) is unreachable: \(error)")
        }
    }

    /// The entity's state; `.entityNotFound` when Home Assistant has no such entity.
    public func state(_ entityID: String) async throws(HomeAssistantError) -> EntityState {
        let (status, tree) = try await send(.GET, "/api/states/\(entityID)")
        if status == 404 { throw HomeAssistantError(reason: .entityNotFound, description: "Home Assistant has no entity \(entityID)") }
        guard status == 200, let tree, let state = EntityState(tree) else {
            throw HomeAssistantError(reason: .rejected, description: "Home Assistant answered \(status) for the state of \(entityID)")
        }
        return state
    }

    /// Calls `domain.service` on the entity with `data`; returns the states the call changed
    /// (empty when nothing changed).
    public func call(_ domain: String, _ service: String, entityID: String, data: [String: JSONValue]) async throws(HomeAssistantError) -> [EntityState] {
        var body = data
        body["entity_id"] = .string(entityID)
        let (status, tree) = try await send(.POST, "/api/services/\(domain)/\(service)", body: .object(body))
        guard status == 200 else {
            throw HomeAssistantError(reason: .rejected, description: "Home Assistant answered \(status) to \(domain).\(service)")
        }
        return tree?.arrayValue?.compactMap(EntityState.init) ?? []
    }
}
