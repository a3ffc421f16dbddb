import Foundation

/// Resource ↔ JSON tree, written out by hand: every write decodes the document it was sent and
/// encodes the one it stores, and Foundation's JSONDecoder and JSONEncoder cost more than the
/// rest of a create. The text is the one the Codable conformance gives (keys sorted, absent
/// optionals left out, integers without a fraction); `ResourceTreeTests` holds the two together.
extension Resource {
    /// The document as a tree.
    public var jsonTree: JSONValue {
        var members: [String: JSONValue] = [
            "apiVersion": .string(apiVersion), "kind": .string(kind),
            "metadata": metadata.jsonTree, "spec": spec.jsonTree,
        ]
        members["status"] = status?.jsonTree
        return .object(members)
    }

    /// Decodes a tree that `ResourceValidator` accepted (or a stored document). Throws only for
    /// trees it did not check. Unknown members are ignored, as the Codable conformance ignores them.
    public init(validated tree: JSONValue) throws {
        let r = try TreeReader(tree, at: "")
        self.init(metadata: try ObjectMeta(r.required("metadata")), spec: try ResourceSpec(r.required("spec")))
        apiVersion = try r.string("apiVersion")
        kind = try r.string("kind")
        status = try r.optional("status").map(ResourceStatus.init)
    }
}

extension StoredResource {
    public init(_ resource: Resource, revision: Int64) {
        self.init(
            name: resource.name, kind: resource.spec.kind, labels: resource.metadata.labels ?? [:],
            revision: revision, document: JSONCoding.encode(resource.jsonTree))
        remember(resource)
    }

    public func decode() throws -> Resource {
        if let decoded { return decoded }
        return try Resource(validated: JSONCoding.parse(document))
    }
}

/// A tree that is not the shape a Resource has (a stored document from elsewhere, a tree nobody
/// validated).
public struct ResourceTreeError: Error, CustomStringConvertible {
    public var pointer: String
    public var expected: String
    public var description: String { "\(pointer.isEmpty ? "/" : pointer): expected \(expected)" }
}

/// Reads one object's members, each by its expected type; `at` is the object's JSON pointer.
private struct TreeReader {
    let members: [String: JSONValue]
    let at: String

    init(_ value: JSONValue, at: String) throws {
        guard case .object(let m) = value else { throw ResourceTreeError(pointer: at, expected: "an object") }
        members = m
        self.at = at
    }

    /// A present member; JSON null counts as absent, as for `decodeIfPresent`.
    func optional(_ key: String) -> (JSONValue, String)? {
        guard let v = members[key], v != .null else { return nil }
        return (v, at + "/" + key)
    }

    func required(_ key: String) throws -> (JSONValue, String) {
        guard let v = optional(key) else { throw ResourceTreeError(pointer: at + "/" + key, expected: "a value") }
        return v
    }

    func string(_ key: String) throws -> String { try Self.string(required(key)) }
    func optionalString(_ key: String) throws -> String? { try optional(key).map(Self.string) }

    func optionalInt64(_ key: String) throws -> Int64? {
        try optional(key).map { v, p in
            guard case .number(let d) = v, d.rounded() == d, let i = Int64(exactly: d) else { throw ResourceTreeError(pointer: p, expected: "an integer") }
            return i
        }
    }

    func optionalDouble(_ key: String) throws -> Double? {
        try optional(key).map { v, p in
            guard case .number(let d) = v else { throw ResourceTreeError(pointer: p, expected: "a number") }
            return d
        }
    }

    func optionalBool(_ key: String) throws -> Bool? {
        try optional(key).map { v, p in
            guard case .bool(let b) = v else { throw ResourceTreeError(pointer: p, expected: "a boolean") }
            return b
        }
    }

    func optionalStringMap(_ key: String) throws -> [String: String]? {
        try optional(key).map { v, p in
            guard case .object(let m) = v else { throw ResourceTreeError(pointer: p, expected: "an object of strings") }
            return try m.reduce(into: [:]) { out, entry in out[entry.key] = try Self.string((entry.value, p + "/" + entry.key)) }
        }
    }

    func optionalObject(_ key: String) throws -> [String: JSONValue]? {
        try optional(key).map { v, p in
            guard case .object(let m) = v else { throw ResourceTreeError(pointer: p, expected: "an object") }
            return m
        }
    }

    func optionalArray<T>(_ key: String, _ item: ((JSONValue, String)) throws -> T) throws -> [T]? {
        try optional(key).map { v, p in
            guard case .array(let items) = v else { throw ResourceTreeError(pointer: p, expected: "an array") }
            return try items.enumerated().map { i, element in try item((element, "\(p)/\(i)")) }
        }
    }

    func optionalEnum<E: RawRepresentable<String>>(_ key: String, _: E.Type) throws -> E? {
        try optional(key).map { try Self.enumValue($0) }
    }

    func enumValue<E: RawRepresentable<String>>(_ key: String, _: E.Type) throws -> E {
        try Self.enumValue(required(key))
    }

    static func string(_ v: (JSONValue, String)) throws -> String {
        guard case .string(let s) = v.0 else { throw ResourceTreeError(pointer: v.1, expected: "a string") }
        return s
    }

    static func enumValue<E: RawRepresentable<String>>(_ v: (JSONValue, String)) throws -> E {
        guard let e = E(rawValue: try string(v)) else { throw ResourceTreeError(pointer: v.1, expected: "one of the allowed values") }
        return e
    }
}

/// Tree members of optional values: absent ones are left out.
private func tree(_ members: [(String, JSONValue?)]) -> JSONValue {
    var out: [String: JSONValue] = [:]
    out.reserveCapacity(members.count)
    for (key, value) in members { if let value { out[key] = value } }
    return .object(out)
}

private func tree(_ map: [String: String]?) -> JSONValue? {
    map.map { .object($0.mapValues(JSONValue.string)) }
}

private func tree(_ number: Int64?) -> JSONValue? { number.map { .number(Double($0)) } }
private func tree(_ string: String?) -> JSONValue? { string.map(JSONValue.string) }

extension ObjectMeta {
    var jsonTree: JSONValue {
        tree([
            ("name", .string(name)), ("labels", tree(labels)), ("annotations", tree(annotations)), ("uid", tree(uid)),
            ("resourceVersion", tree(resourceVersion)), ("generation", tree(generation)),
            ("creationTimestamp", tree(creationTimestamp)),
        ])
    }

    fileprivate init(_ v: (JSONValue, String)) throws {
        let r = try TreeReader(v.0, at: v.1)
        self.init(name: try r.string("name"), labels: try r.optionalStringMap("labels"), annotations: try r.optionalStringMap("annotations"))
        uid = try r.optionalString("uid")
        resourceVersion = try r.optionalString("resourceVersion")
        generation = try r.optionalInt64("generation")
        creationTimestamp = try r.optionalString("creationTimestamp")
    }
}

extension ResourceSpec {
    var jsonTree: JSONValue {
        tree([
            ("kind", .string(kind.rawValue)), ("icon", tree(icon)), ("description", tree(description)),
            ("accessMode", tree(accessMode?.rawValue)), ("operations", operations.map { .array($0.map(\.jsonTree)) }),
            ("probeImage", tree(probeImage)), ("probeArgs", probeArgs.map { .array($0.map(JSONValue.string)) }),
            ("probeEnabled", probeEnabled.map(JSONValue.bool)), ("aliasName", tree(aliasName)),
        ])
    }

    fileprivate init(_ v: (JSONValue, String)) throws {
        let r = try TreeReader(v.0, at: v.1)
        self.init(kind: try r.enumValue("kind", ResourceKind.self))
        icon = try r.optionalString("icon")
        description = try r.optionalStringMap("description")
        accessMode = try r.optionalEnum("accessMode", ResourceAccessMode.self)
        operations = try r.optionalArray("operations", ResourceOperationSpec.init)
        probeImage = try r.optionalString("probeImage")
        probeArgs = try r.optionalArray("probeArgs", TreeReader.string)
        probeEnabled = try r.optionalBool("probeEnabled")
        aliasName = try r.optionalString("aliasName")
    }
}

extension ResourceOperationSpec {
    var jsonTree: JSONValue {
        tree([
            ("name", .string(name)), ("price", price.map(JSONValue.number)), ("description", tree(description)),
            ("httpAction", httpAction.jsonTree),
        ])
    }

    fileprivate init(_ v: (JSONValue, String)) throws {
        let r = try TreeReader(v.0, at: v.1)
        self.init(
            name: try r.string("name"), price: try r.optionalDouble("price"), description: try r.optionalString("description"),
            httpAction: try HTTPActionSpec(r.required("httpAction")))
    }
}

extension HTTPActionSpec {
    var jsonTree: JSONValue {
        tree([("action", .string(action)), ("url", .string(url)), ("query", tree(query)), ("headers", tree(headers))])
    }

    fileprivate init(_ v: (JSONValue, String)) throws {
        let r = try TreeReader(v.0, at: v.1)
        self.init(
            action: try r.string("action"), url: try r.string("url"), query: try r.optionalStringMap("query"),
            headers: try r.optionalStringMap("headers"))
    }
}

extension ResourceStatus {
    var jsonTree: JSONValue {
        tree([
            ("phase", tree(phase?.rawValue)), ("probePhase", tree(probePhase?.rawValue)), ("bound", bound.map(JSONValue.bool)),
            ("binding", binding.map(\.jsonTree)), ("createTime", tree(createTime)), ("startTime", tree(startTime)),
            ("observedGeneration", tree(observedGeneration)), ("conditions", conditions.map { .array($0.map(\.jsonTree)) }),
            ("location", location.map(JSONValue.object)), ("telemetry", telemetry.map(\.jsonTree)),
        ])
    }

    /// Decodes a status tree that `ResourceValidator.validateStatus` accepted.
    public init(validated tree: JSONValue) throws {
        try self.init((tree, "/status"))
    }

    fileprivate init(_ v: (JSONValue, String)) throws {
        let r = try TreeReader(v.0, at: v.1)
        self.init()
        phase = try r.optionalEnum("phase", ResourcePhase.self)
        probePhase = try r.optionalEnum("probePhase", ProbePhase.self)
        bound = try r.optionalBool("bound")
        binding = try r.optional("binding").map(Binding.init)
        createTime = try r.optionalString("createTime")
        startTime = try r.optionalString("startTime")
        observedGeneration = try r.optionalInt64("observedGeneration")
        conditions = try r.optionalArray("conditions", Condition.init)
        location = try r.optionalObject("location")
        telemetry = try r.optional("telemetry").map(TelemetrySnapshot.init)
    }
}

extension Binding {
    var jsonTree: JSONValue {
        .object(["holder": .string(holder), "acquiredAt": .string(acquiredAt), "expiresAt": .string(expiresAt)])
    }

    fileprivate init(_ v: (JSONValue, String)) throws {
        let r = try TreeReader(v.0, at: v.1)
        self.init(holder: try r.string("holder"), acquiredAt: try r.string("acquiredAt"), expiresAt: try r.string("expiresAt"))
    }
}

extension Condition {
    var jsonTree: JSONValue {
        tree([
            ("type", .string(type)), ("status", .string(status.rawValue)), ("reason", tree(reason)), ("message", tree(message)),
            ("lastTransitionTime", tree(lastTransitionTime)), ("lastHeartbeatTime", tree(lastHeartbeatTime)),
        ])
    }

    fileprivate init(_ v: (JSONValue, String)) throws {
        let r = try TreeReader(v.0, at: v.1)
        self.init(
            type: try r.string("type"), status: try r.enumValue("status", Status.self), reason: try r.optionalString("reason"),
            message: try r.optionalString("message"), lastTransitionTime: try r.optionalString("lastTransitionTime"),
            lastHeartbeatTime: try r.optionalString("lastHeartbeatTime"))
    }
}

extension TelemetrySnapshot {
    var jsonTree: JSONValue {
        tree([("lastSeen", tree(lastSeen)), ("values", values.map(JSONValue.object))])
    }

    fileprivate init(_ v: (JSONValue, String)) throws {
        let r = try TreeReader(v.0, at: v.1)
        self.init(lastSeen: try r.optionalString("lastSeen"), values: try r.optionalObject("values"))
    }
}
