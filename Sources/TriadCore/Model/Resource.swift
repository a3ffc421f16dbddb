import Foundation

/// The Resource document of DESIGN §2. Field names follow the report's tables.
public struct Resource: Codable, Sendable, Equatable {
    public static let apiVersion = "triad.io/v1alpha1"
    public static let kindName = "Resource"

    public var apiVersion: String
    public var kind: String
    public var metadata: ObjectMeta
    public var spec: ResourceSpec
    public var status: ResourceStatus?

    public init(metadata: ObjectMeta, spec: ResourceSpec, status: ResourceStatus? = nil) {
        self.apiVersion = Self.apiVersion
        self.kind = Self.kindName
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }

    public var name: String { metadata.name }
}

public struct ObjectMeta: Codable, Sendable, Equatable {
    public var name: String
    public var labels: [String: String]?
    public var annotations: [String: String]?
    public var uid: String?
    public var resourceVersion: String?
    public var generation: Int64?
    public var creationTimestamp: String?

    public init(name: String, labels: [String: String]? = nil, annotations: [String: String]? = nil) {
        self.name = name
        self.labels = labels
        self.annotations = annotations
    }
}

public enum ResourceKind: String, Codable, Sendable, CaseIterable {
    case device = "Device"
    case person = "Person"
    case space = "Space"

    /// The lower-case form used in routing keys and CloudEvent extensions.
    public var routingName: String { rawValue.lowercased() }
}

public enum ResourceAccessMode: String, Codable, Sendable, CaseIterable {
    case exclusive = "Exclusive"
    case shared = "Shared"
}

public struct ResourceSpec: Codable, Sendable, Equatable {
    public var kind: ResourceKind
    public var icon: String?
    public var description: [String: String]?
    public var accessMode: ResourceAccessMode?
    public var operations: [ResourceOperationSpec]?
    public var probeImage: String?
    public var probeArgs: [String]?
    public var probeEnabled: Bool?
    public var aliasName: String?

    public init(kind: ResourceKind) { self.kind = kind }
}

public struct ResourceOperationSpec: Codable, Sendable, Equatable {
    public var name: String
    public var price: Double?
    public var description: String?
    public var httpAction: HTTPActionSpec

    public init(name: String, price: Double? = nil, description: String? = nil, httpAction: HTTPActionSpec) {
        self.name = name
        self.price = price
        self.description = description
        self.httpAction = httpAction
    }
}

public struct HTTPActionSpec: Codable, Sendable, Equatable {
    /// The HTTP method of the interface.
    public var action: String
    public var url: String
    public var query: [String: String]?
    public var headers: [String: String]?

    public init(action: String, url: String, query: [String: String]? = nil, headers: [String: String]? = nil) {
        self.action = action
        self.url = url
        self.query = query
        self.headers = headers
    }
}

public enum ResourcePhase: String, Codable, Sendable, CaseIterable {
    case pending = "Pending", running = "Running", failed = "Failed"
}

public enum ProbePhase: String, Codable, Sendable, CaseIterable {
    case notReady = "NotReady", pending = "Pending", synchronous = "Synchronous", failed = "Failed"
}

public struct ResourceStatus: Codable, Sendable, Equatable {
    public var phase: ResourcePhase?
    public var probePhase: ProbePhase?
    /// Server-owned: an exclusive lease is held (`binding` says by whom, until when).
    public var bound: Bool?
    public var binding: Binding?
    public var createTime: String?
    public var startTime: String?
    public var observedGeneration: Int64?
    public var conditions: [Condition]?
    /// Spatio-temporal attributes reported by agents: `space`, `since`, and anything else.
    public var location: [String: JSONValue]?
    public var telemetry: TelemetrySnapshot?

    public init() {}
}

/// An exclusive lease on a resource (DESIGN §5), kept by the server; the controller expires it.
public struct Binding: Codable, Sendable, Equatable {
    public var holder: String
    public var acquiredAt: String
    public var expiresAt: String

    public init(holder: String, acquiredAt: String, expiresAt: String) {
        self.holder = holder
        self.acquiredAt = acquiredAt
        self.expiresAt = expiresAt
    }
}

public struct Condition: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable, CaseIterable { case `true` = "True", `false` = "False", unknown = "Unknown" }
    public var type: String
    public var status: Status
    public var reason: String?
    public var message: String?
    public var lastTransitionTime: String?
    /// When the reporter last confirmed the condition (agents' heartbeats, as Kubernetes nodes').
    public var lastHeartbeatTime: String?

    public init(type: String, status: Status, reason: String? = nil, message: String? = nil, lastTransitionTime: String? = nil,
                lastHeartbeatTime: String? = nil) {
        self.type = type
        self.status = status
        self.reason = reason
        self.message = message
        self.lastTransitionTime = lastTransitionTime
        self.lastHeartbeatTime = lastHeartbeatTime
    }
}

public struct TelemetrySnapshot: Codable, Sendable, Equatable {
    public var lastSeen: String?
    public var values: [String: JSONValue]?
}

extension Resource {
    /// Decodes a tree that `ResourceValidator` accepted. Throws only for trees it did not check.
    /// `json`, when given, is the text the tree was parsed from: decoding it directly saves
    /// encoding the tree again.
    public init(validated tree: JSONValue, json: Data? = nil) throws {
        self = try JSONDecoder().decode(Resource.self, from: json ?? JSONCoding.encode(tree))
    }

    public var jsonTree: JSONValue {
        // Round-trips through JSON; our own types always encode and decode.
        (try? JSONDecoder().decode(JSONValue.self, from: JSONCoding.encode(self))) ?? .null
    }
}

public enum Timestamp {
    /// RFC 3339 with fractional seconds in UTC, the form every server-set time takes.
    public static func format(_ date: Date) -> String {
        date.formatted(.iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: true).timeSeparator(.colon).timeZone(separator: .omitted))
    }

    /// Accepts RFC 3339 date-times (`2026-11-25T10:00:00Z`, fractions, numeric offsets).
    public static func isRFC3339(_ s: String) -> Bool {
        parse(s) != nil
    }

    public static func parse(_ s: String) -> Date? {
        let pattern = #/^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/#
        guard let m = s.wholeMatch(of: pattern) else { return nil }
        guard let year = Int(m.1), let month = Int(m.2), let day = Int(m.3),
              let hour = Int(m.4), let minute = Int(m.5), let second = Int(m.6),
              (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second <= 60 else { return nil }
        var components = DateComponents()
        components.year = year; components.month = month; components.day = day
        components.hour = hour; components.minute = minute; components.second = min(second, 59)
        var offset = 0
        let zone = String(m.8)
        if zone != "Z" && zone != "z" {
            let sign = zone.hasPrefix("-") ? -1 : 1
            let parts = zone.dropFirst().split(separator: ":")
            guard let h = Int(parts[0]), let mm = Int(parts[1]), h < 24, mm < 60 else { return nil }
            offset = sign * (h * 3600 + mm * 60)
        }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(secondsFromGMT: 0)!
        guard let date = calendar.date(from: components),
              calendar.component(.day, from: date) == day else { return nil }
        let fraction = m.7.flatMap { Double("0" + $0) } ?? 0
        return date.addingTimeInterval(fraction - Double(offset))
    }
}
