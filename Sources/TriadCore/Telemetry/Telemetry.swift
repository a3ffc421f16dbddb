import Foundation

/// One telemetry sample (docs/mqtt.md), as validated and stamped by the server.
public struct TelemetrySample: Sendable, Equatable {
    public var resource: String
    /// When the device measured it (RFC 3339, UTC); the receive time when it did not say.
    public var time: String
    public var receivedAt: String
    /// The `values` object, as canonical JSON.
    public var values: Data

    public init(resource: String, time: String, receivedAt: String, values: Data) {
        self.resource = resource
        self.time = time
        self.receivedAt = receivedAt
        self.values = values
    }
}

/// Why a sample or probe message was refused; the raw value is the `reason` label of
/// `triad_telemetry_rejected_total`.
public enum TelemetryRejection: String, Sendable, CaseIterable, Error {
    case malformedTopic = "malformed-topic"
    case unknownResource = "unknown-resource"
    case invalidJSON = "invalid-json"
    case valuesNotObject = "values-not-object"
    case tooDeep = "too-deep"
    case invalidTimestamp = "invalid-timestamp"
    case tooLarge = "too-large"
    case rateLimited = "rate-limited"
    case invalidProbeState = "invalid-probe-state"
    case forbidden = "forbidden"

    public var message: String {
        switch self {
        case .malformedTopic: "the topic must be triad/v1/resources/<name>/telemetry or …/probe, with a DNS-1123 name"
        case .unknownResource: "no resource has this name"
        case .invalidJSON: "the payload is not a JSON object"
        case .valuesNotObject: "`values` must be a JSON object"
        case .tooDeep: "`values` nest deeper than \(Telemetry.maxValuesDepth) levels"
        case .invalidTimestamp: "`ts` must be an RFC 3339 date-time or milliseconds since the epoch"
        case .tooLarge: "the payload is over \(Telemetry.maxPayloadBytes / 1024) KiB"
        case .rateLimited: "this resource sends more samples per second than the server accepts"
        case .invalidProbeState: "a probe message must be `online` or `offline`"
        case .forbidden: "this token may not report for this resource"
        }
    }
}

public enum Telemetry {
    public static let maxPayloadBytes = 256 * 1024
    /// Values become `status.telemetry.values` of the resource: bounded well below the document
    /// parser's own depth limit, so the resource stays readable wherever it is parsed again.
    public static let maxValuesDepth = 32
    public static let topicPrefix = "triad/v1/resources/"

    public enum Channel: String, Sendable { case telemetry, probe }

    /// The subscriptions a server makes; `$share/triad/…` lets replicas split the stream.
    public static func subscriptions(shared: Bool) -> [String] {
        let topics = ["\(topicPrefix)+/telemetry", "\(topicPrefix)+/probe"]
        return shared ? topics.map { "$share/triad/\($0)" } : topics
    }

    public static func topic(_ name: String, _ channel: Channel) -> String { "\(topicPrefix)\(name)/\(channel.rawValue)" }

    /// The resource and channel a topic names, or nil when it is not one of ours.
    public static func parseTopic(_ topic: String) -> (name: String, channel: Channel)? {
        guard topic.hasPrefix(topicPrefix) else { return nil }
        let rest = topic.dropFirst(topicPrefix.count).split(separator: "/", omittingEmptySubsequences: false)
        guard rest.count == 2, let channel = Channel(rawValue: String(rest[1])) else { return nil }
        let name = String(rest[0])
        guard ResourceValidator.isValidName(name) else { return nil }
        return (name, channel)
    }

    /// Parses a telemetry payload: `{"ts": RFC 3339 | epoch-ms, "values": {…}}`, or a bare
    /// object of values stamped with `receivedAt`.
    public static func parseSample(_ payload: [UInt8], resource: String, receivedAt: Date) throws(TelemetryRejection) -> TelemetrySample {
        guard payload.count <= maxPayloadBytes else { throw .tooLarge }
        guard case .object(let object)? = try? JSONParser.parse(Data(payload)) else { throw .invalidJSON }
        let received = Timestamp.format(receivedAt)
        // The wrapped form is recognised by its `values` key; anything else is a bare object.
        guard let values = object["values"] else {
            guard depth(of: .object(object)) <= maxValuesDepth else { throw .tooDeep }
            return TelemetrySample(resource: resource, time: received, receivedAt: received, values: JSONCoding.encode(JSONValue.object(object)))
        }
        guard case .object = values else { throw .valuesNotObject }
        guard depth(of: values) <= maxValuesDepth else { throw .tooDeep }
        var time = received
        switch object["ts"] {
        case nil, .null?: break
        case .string(let text)?:
            guard let date = Timestamp.parse(text) else { throw .invalidTimestamp }
            time = Timestamp.format(date)
        case .number(let ms)? where ms.isFinite && ms >= 0 && ms < 253_402_300_800_000:  // before year 10000
            time = Timestamp.format(Date(timeIntervalSince1970: ms / 1000))
        default: throw .invalidTimestamp
        }
        return TelemetrySample(resource: resource, time: time, receivedAt: received, values: JSONCoding.encode(values))
    }

    /// Levels of arrays and objects: `{}` is 1, `{"a":[1]}` is 2.
    static func depth(of value: JSONValue) -> Int {
        switch value {
        case .object(let members): 1 + (members.values.map(depth(of:)).max() ?? 0)
        case .array(let items): 1 + (items.map(depth(of:)).max() ?? 0)
        default: 0
        }
    }

    public enum ProbeState: String, Sendable { case online, offline }

    public static func parseProbeState(_ payload: [UInt8]) throws(TelemetryRejection) -> ProbeState {
        let text = String(decoding: payload, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let state = ProbeState(rawValue: text) else { throw .invalidProbeState }
        return state
    }

    /// The CloudEvent of a sample (`io.triad.telemetry`); `id` is the server's own sequence,
    /// since samples are not in the outbox.
    public static func cloudEvent(_ sample: TelemetrySample, kind: ResourceKind, id: String) -> Data {
        let header: [String: String] = [
            "specversion": "1.0",
            "id": id,
            "source": "/triad/resources/\(sample.resource)",
            "type": "io.triad.telemetry",
            "subject": sample.resource,
            "time": sample.time,
            "datacontenttype": "application/json",
            "resourcekind": kind.routingName,
        ]
        var out = JSONCoding.encode(JSONValue.object(header.mapValues(JSONValue.string)))
        out.removeLast()
        out.append(contentsOf: Array(#","data":{"ts":"#.utf8))
        out.append(JSONCoding.encode(JSONValue.string(sample.time)))
        out.append(contentsOf: Array(#","values":"#.utf8))
        out.append(sample.values)
        out.append(contentsOf: Array("}}".utf8))
        return out
    }

    public static func routingKey(resource: String, kind: ResourceKind) -> String {
        "\(kind.routingName).\(resource).telemetry"
    }
}

/// A token bucket per key: `rate` samples per second, bursts up to `burst`. Pure: the caller
/// passes the time, so tests need no clock.
public struct RateLimiter: Sendable {
    public let rate: Double
    public let burst: Double
    private var buckets: [String: (tokens: Double, at: Double)] = [:]

    public init(rate: Double, burst: Double) {
        self.rate = rate
        self.burst = burst
    }

    /// Takes one token for `key` at time `now` (seconds); false when the bucket is empty.
    public mutating func allow(_ key: String, now: Double) -> Bool {
        var bucket = buckets[key] ?? (burst, now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        let allowed = bucket.tokens >= 1
        if allowed { bucket.tokens -= 1 }
        buckets[key] = bucket
        // Keep the table bounded: full buckets carry no information.
        if buckets.count > 100_000 { buckets = buckets.filter { $0.value.tokens < burst } }
        return allowed
    }

    /// Forgets the buckets that have refilled by `now` (their senders went quiet): a full bucket
    /// and no bucket mean the same.
    public mutating func evictIdle(now: Double) {
        buckets = buckets.filter { $0.value.tokens + (now - $0.value.at) * rate < burst }
    }

    public var count: Int { buckets.count }
}
