import Foundation

/// The Resource document (docs/api.md, schemas/resource.schema.json).
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
    case pending = "Pending"
    case running = "Running"
    case failed = "Failed"
}

public enum ProbePhase: String, Codable, Sendable, CaseIterable {
    case notReady = "NotReady"
    case pending = "Pending"
    case synchronous = "Synchronous"
    case failed = "Failed"
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

/// An exclusive lease on a resource (docs/api.md), kept by the server; the controller expires it.
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
    public enum Status: String, Codable, Sendable, CaseIterable {
        case `true` = "True"
        case `false` = "False"
        case unknown = "Unknown"
    }
    public var type: String
    public var status: Status
    public var reason: String?
    public var message: String?
    public var lastTransitionTime: String?
    /// When the reporter last confirmed the condition (agents' heartbeats, as Kubernetes nodes').
    public var lastHeartbeatTime: String?

    public init(
        type: String, status: Status, reason: String? = nil, message: String? = nil, lastTransitionTime: String? = nil,
        lastHeartbeatTime: String? = nil
    ) {
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

public enum Timestamp {
    /// RFC 3339 with milliseconds in UTC (`2026-11-25T10:00:00.000Z`), the form every server-set
    /// time takes. Hand-written: Foundation's formatter and parser cost more than the rest of a
    /// telemetry sample's work.
    public static func format(_ date: Date) -> String {
        let millis = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        let (days, msOfDay) = floorDivMod(millis, 86_400_000)
        let (y, m, d) = civil(fromDays: days)
        let seconds = msOfDay / 1000
        var out = [UInt8]()
        out.reserveCapacity(24)
        func digits(_ value: Int64, _ width: Int) {
            var v = value
            var buffer = [UInt8](repeating: UInt8(ascii: "0"), count: width)
            for i in stride(from: width - 1, through: 0, by: -1) {
                buffer[i] = UInt8(ascii: "0") + UInt8(v % 10)
                v /= 10
            }
            out.append(contentsOf: buffer)
        }
        digits(y, 4)
        out.append(UInt8(ascii: "-"))
        digits(m, 2)
        out.append(UInt8(ascii: "-"))
        digits(d, 2)
        out.append(UInt8(ascii: "T"))
        digits(seconds / 3600, 2)
        out.append(UInt8(ascii: ":"))
        digits(seconds / 60 % 60, 2)
        out.append(UInt8(ascii: ":"))
        digits(seconds % 60, 2)
        out.append(UInt8(ascii: "."))
        digits(msOfDay % 1000, 3)
        out.append(UInt8(ascii: "Z"))
        return String(decoding: out, as: UTF8.self)
    }

    /// Accepts RFC 3339 date-times (`2026-11-25T10:00:00Z`, fractions, numeric offsets).
    public static func isRFC3339(_ s: String) -> Bool {
        parse(s) != nil
    }

    /// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, `t` and `z` in either case; a leap second (60)
    /// counts as 59; impossible dates (February 30) are refused.
    public static func parse(_ s: String) -> Date? {
        let b = Array(s.utf8)
        guard b.count >= 20 else { return nil }
        func number(_ from: Int, _ count: Int) -> Int? {
            var n = 0
            for i in from..<(from + count) {
                let c = b[i]
                guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
                n = n * 10 + Int(c - UInt8(ascii: "0"))
            }
            return n
        }
        guard let year = number(0, 4), b[4] == UInt8(ascii: "-"), let month = number(5, 2), b[7] == UInt8(ascii: "-"),
            let day = number(8, 2), b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t"),
            let hour = number(11, 2), b[13] == UInt8(ascii: ":"), let minute = number(14, 2), b[16] == UInt8(ascii: ":"),
            let second = number(17, 2),
            (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year), hour < 24, minute < 60, second <= 60
        else { return nil }
        var i = 19
        var fraction = 0.0
        if b[i] == UInt8(ascii: ".") {
            i += 1
            var scale = 0.1
            let start = i
            while i < b.count, b[i] >= UInt8(ascii: "0"), b[i] <= UInt8(ascii: "9") {
                fraction += Double(b[i] - UInt8(ascii: "0")) * scale
                scale /= 10
                i += 1
            }
            guard i > start else { return nil }
        }
        guard i < b.count else { return nil }
        var offset = 0
        if b[i] == UInt8(ascii: "Z") || b[i] == UInt8(ascii: "z") {
            guard i + 1 == b.count else { return nil }
        } else {
            guard b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-"), i + 6 == b.count, b[i + 3] == UInt8(ascii: ":"),
                let h = number(i + 1, 2), let m = number(i + 4, 2), h < 24, m < 60
            else { return nil }
            offset = (b[i] == UInt8(ascii: "-") ? -1 : 1) * (h * 3600 + m * 60)
        }
        let days = daysFromCivil(Int64(year), Int64(month), Int64(day))
        let seconds = days * 86_400 + Int64(hour * 3600 + minute * 60 + min(second, 59)) - Int64(offset)
        // An offset can carry year 0000 or 9999 out of the four digits `format` writes
        // (0000-01-01T00:00:00+01:00 is in year -1): such times are refused, not trapped on later.
        guard seconds >= firstRepresentableSecond, seconds <= lastRepresentableSecond else { return nil }
        return Date(timeIntervalSince1970: Double(seconds) + fraction)
    }

    static let firstRepresentableSecond = daysFromCivil(0, 1, 1) * 86_400
    static let lastRepresentableSecond = daysFromCivil(10_000, 1, 1) * 86_400 - 1

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    static func floorDivMod(_ a: Int64, _ b: Int64) -> (Int64, Int64) {
        let q = a / b
        let r = a % b
        return r < 0 ? (q - 1, r + b) : (q, r)
    }

    // Howard Hinnant's civil-calendar algorithms (days since 1970-01-01, proleptic Gregorian).
    static func daysFromCivil(_ y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }
}
