import Foundation

/// One thing wrong with a document, located by an RFC 6901 JSON pointer.
public struct Violation: Sendable, Equatable, Codable, CustomStringConvertible {
    public var pointer: String
    public var message: String
    public init(pointer: String, message: String) {
        self.pointer = pointer
        self.message = message
    }
    public var description: String { "\(pointer.isEmpty ? "/" : pointer): \(message)" }
}

/// Limits that protect the server; the same numbers are in `schemas/resource.schema.json`.
public enum ResourceLimits {
    public static let nameMaxLength = 63
    public static let maxLabels = 64
    public static let maxAnnotations = 64
    public static let maxOperations = 64
    public static let operationNameMaxLength = 127
    public static let maxProbeArgs = 64
    public static let maxConditions = 32
    /// The largest status a resource may hold, encoded (status writes beyond it are refused).
    public static let maxStatusBytes = 64 << 10
    /// The largest integer a document may hold (2^53 − 1, exact in every JSON implementation).
    public static let maxInteger: Double = 9_007_199_254_740_991
}

/// Judges a Resource document exactly as `schemas/resource.schema.json` does and reports every
/// violation. A test runs both over the same examples.
public enum ResourceValidator {
    public static func validate(_ document: JSONValue) -> [Violation] {
        var v = Walker()
        v.object(
            document, at: "", required: ["apiVersion", "kind", "metadata", "spec"],
            allowed: ["apiVersion", "kind", "metadata", "spec", "status"]
        ) { members, w in
            if let api = members["apiVersion"] { w.constant(api, Resource.apiVersion, at: "/apiVersion") }
            if let kind = members["kind"] { w.constant(kind, Resource.kindName, at: "/kind") }
            if let meta = members["metadata"] { w.metadata(meta, at: "/metadata") }
            if let spec = members["spec"] { w.spec(spec, at: "/spec") }
            if let status = members["status"] { w.status(status, at: "/status") }
        }
        return v.violations
    }

    /// Status writes: only `status` is read, validated as in a whole document.
    public static func validateStatus(_ status: JSONValue, at pointer: String = "/status") -> [Violation] {
        var v = Walker()
        v.status(status, at: pointer)
        return v.violations
    }

    public static func isValidName(_ name: String) -> Bool {
        name.utf8.count <= ResourceLimits.nameMaxLength && Syntax.isDNSLabel(name)
    }

    public static func isValidOperationName(_ name: String) -> Bool {
        name.utf8.count <= ResourceLimits.operationNameMaxLength && Syntax.isOperationName(name)
    }
}

/// The name syntaxes of `schemas/resource.schema.json`, written out by hand: they run on every
/// request (path names), and Swift's Regex costs microseconds per match.
public enum Syntax {
    private static func isLower(_ b: UInt8) -> Bool { b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z") }
    private static func isUpper(_ b: UInt8) -> Bool { b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") }
    private static func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }
    private static func isAlnum(_ b: UInt8) -> Bool { isLower(b) || isUpper(b) || isDigit(b) }

    /// Whether `s` is `edge`, or `edge inner* edge`; an empty `s` is `empty`. One pass over the
    /// bytes, no copy (these run on every name of every request).
    private static func matches<S: StringProtocol>(_ s: S, empty: Bool, edge: (UInt8) -> Bool, inner: (UInt8) -> Bool) -> Bool {
        var last: UInt8?
        for b in s.utf8 {
            if last == nil { guard edge(b) else { return false } } else { guard inner(b) else { return false } }
            last = b
        }
        guard let last else { return empty }
        return edge(last)
    }

    /// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` (DNS-1123 label, without the length limit).
    static func isDNSLabel<S: StringProtocol>(_ s: S) -> Bool {
        matches(s, empty: false, edge: { isLower($0) || isDigit($0) }, inner: { isLower($0) || isDigit($0) || $0 == UInt8(ascii: "-") })
    }

    /// `[a-z0-9]([-_.a-z0-9]*[a-z0-9])?`: Home Assistant's services (`set_percentage`) and a
    /// person's capabilities (`coffee-3f.brew`) are operation names.
    static func isOperationName<S: StringProtocol>(_ s: S) -> Bool {
        matches(s, empty: false, edge: { isLower($0) || isDigit($0) }) {
            isLower($0) || isDigit($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".")
        }
    }

    /// `(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`
    static func isLabelValue<S: StringProtocol>(_ s: S) -> Bool {
        matches(s, empty: true, edge: isAlnum) { isAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") }
    }

    /// `(dns-subdomain/)?name`, the name 1 to 63 characters of label-value syntax.
    static func isQualifiedKey(_ key: String) -> Bool {
        let parts = key.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let name = parts.count == 2 ? parts[1] : parts[0]
        if parts.count == 2 {
            let labels = parts[0].split(separator: ".", omittingEmptySubsequences: false)
            guard labels.allSatisfy({ isDNSLabel($0) }) else { return false }
        }
        return !name.isEmpty && name.utf8.count <= 63 && !name.utf8.contains(UInt8(ascii: "/")) && isLabelValue(name)
    }

    /// `https?://[^\s/?#]+([/?#]\S*)?`, and a port, when the authority names one, in 1…65535
    /// (an HTTP client handed port 70000 traps rather than refuses).
    public static func isHTTPURL(_ url: String) -> Bool {
        let rest: Substring
        if url.hasPrefix("http://") { rest = url.dropFirst(7) } else if url.hasPrefix("https://") { rest = url.dropFirst(8) } else { return false }
        // The schema's `\S` is Python's: it also refuses the control characters Swift's
        // isWhitespace lets through (U+001C–U+001F); no URL needs any control character.
        // ASCII (every URL in practice) is checked byte by byte: Unicode's property tables cost
        // a tenth of a create when every character was looked up there.
        if rest.utf8.allSatisfy({ $0 < 0x80 }) {
            guard !rest.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F }) else { return false }
        } else {
            guard !rest.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.properties.generalCategory == .control }) else { return false }
        }
        // Bytes, not Characters: the schema's pattern is over code points, and grapheme breaking
        // costs on every write.
        let authority = rest.utf8.prefix { $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: "?") && $0 != UInt8(ascii: "#") }
        var hostAndPort = authority
        if let at = authority.lastIndex(of: UInt8(ascii: "@")) { hostAndPort = authority[authority.index(after: at)...] }
        // An IPv6 literal's colons are inside its brackets; the port follows the `]`.
        let afterHost =
            hostAndPort.first == UInt8(ascii: "[")
            ? hostAndPort.drop { $0 != UInt8(ascii: "]") }.dropFirst() : hostAndPort.drop { $0 != UInt8(ascii: ":") }
        let host = hostAndPort.dropLast(afterHost.count)
        guard !host.isEmpty, !host.elementsEqual("[]".utf8) else { return false }
        if afterHost.isEmpty { return true }
        guard afterHost.first == UInt8(ascii: ":") else { return false }
        let port = afterHost.dropFirst()
        guard (1...5).contains(port.count), port.allSatisfy(isDigit), let number = Int(String(decoding: port, as: UTF8.self)) else { return false }
        return (1...65535).contains(number)
    }
}

/// Escapes a key for use in a JSON pointer (RFC 6901).
func pointerEscape(_ key: String) -> String {
    // Every key of every write comes through here: most need no escaping, and Foundation's
    // replacingOccurrences showed in profiles.
    guard key.utf8.contains(where: { $0 == UInt8(ascii: "~") || $0 == UInt8(ascii: "/") }) else { return key }
    var out = ""
    out.reserveCapacity(key.utf8.count + 2)
    for c in key.unicodeScalars {
        switch c {
        case "~": out += "~0"
        case "/": out += "~1"
        default: out.unicodeScalars.append(c)
        }
    }
    return out
}

/// Walks a JSON document and collects every violation (not only the first): the resource and
/// project validators share it.
struct Walker {
    var violations: [Violation] = []

    mutating func fail(_ pointer: String, _ message: String) {
        violations.append(Violation(pointer: pointer, message: message))
    }

    // `allowed` is an array: a Set literal would be built and hashed on every call, for a
    // handful of names.
    mutating func object(
        _ value: JSONValue, at p: String, required: [String] = [], allowed: [String]?,
        _ body: (([String: JSONValue], inout Walker) -> Void)? = nil
    ) {
        guard case .object(let members) = value else { return fail(p, "must be an object, not \(value.typeName)") }
        for key in required where members[key] == nil { fail("\(p)/\(pointerEscape(key))", "is required") }
        if let allowed, members.keys.contains(where: { !allowed.contains($0) }) {
            for key in members.keys.sorted() where !allowed.contains(key) { fail("\(p)/\(pointerEscape(key))", "is not a known field") }
        }
        body?(members, &self)
    }

    mutating func constant(_ value: JSONValue, _ expected: String, at p: String) {
        if value != .string(expected) { fail(p, "must be \"\(expected)\"") }
    }

    @discardableResult
    mutating func string(_ value: JSONValue, at p: String, maxLength: Int? = nil) -> String? {
        guard case .string(let s) = value else {
            fail(p, "must be a string, not \(value.typeName)")
            return nil
        }
        // JSON Schema's maxLength counts code points; Swift's `count` counts grapheme clusters
        // ("e" and a combining accent are one), which would let a longer string through.
        if let maxLength, s.unicodeScalars.count > maxLength {
            fail(p, "must be at most \(maxLength) characters")
            return nil
        }
        return s
    }

    mutating func oneOf<E: RawRepresentable & CaseIterable>(_ value: JSONValue, _: E.Type, at p: String) where E.RawValue == String {
        guard let s = string(value, at: p) else { return }
        if E(rawValue: s) == nil {
            fail(p, "must be one of \(E.allCases.map { $0.rawValue }.joined(separator: ", ")), not \"\(s)\"")
        }
    }

    mutating func bool(_ value: JSONValue, at p: String) {
        if case .bool = value { return }
        fail(p, "must be a boolean, not \(value.typeName)")
    }

    mutating func integer(_ value: JSONValue, at p: String, minimum: Double) {
        guard case .number(let d) = value, d.rounded() == d else { return fail(p, "must be an integer") }
        if d < minimum { fail(p, "must be at least \(Int(minimum))") }
        // Beyond 2^53 − 1 a JSON number is no longer an exact integer (and would not fit the model).
        if d > ResourceLimits.maxInteger { fail(p, "must be at most \(Int64(ResourceLimits.maxInteger))") }
    }

    mutating func dateTime(_ value: JSONValue, at p: String) {
        guard let s = string(value, at: p) else { return }
        if !Timestamp.isRFC3339(s) { fail(p, "must be an RFC 3339 date-time such as 2026-11-25T10:00:00Z") }
    }

    mutating func stringMap(
        _ value: JSONValue, at p: String, maxEntries: Int?, valueMaxLength: Int?,
        keyRule: ((String) -> String?)? = nil, valueRule: ((String) -> String?)? = nil
    ) {
        guard case .object(let members) = value else { return fail(p, "must be an object of strings, not \(value.typeName)") }
        if let maxEntries, members.count > maxEntries { fail(p, "must have at most \(maxEntries) entries") }
        for key in members.keys.sorted() {
            let cp = "\(p)/\(pointerEscape(key))"
            if let keyRule, let problem = keyRule(key) { fail(cp, problem) }
            guard let s = string(members[key]!, at: cp, maxLength: valueMaxLength) else { continue }
            if let valueRule, let problem = valueRule(s) { fail(cp, problem) }
        }
    }

    mutating func name(_ value: JSONValue, at p: String) {
        guard let s = string(value, at: p, maxLength: ResourceLimits.nameMaxLength) else { return }
        if !Syntax.isDNSLabel(s) {
            fail(p, "must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit")
        }
    }

    mutating func operationName(_ value: JSONValue, at p: String) {
        guard let s = string(value, at: p, maxLength: ResourceLimits.operationNameMaxLength) else { return }
        if !Syntax.isOperationName(s) {
            fail(p, "must be lower-case letters, digits, '-', '_' and '.', starting and ending with a letter or digit")
        }
    }

    static func qualifiedKeyProblem(_ key: String) -> String? {
        if key.unicodeScalars.count > 253 || !Syntax.isQualifiedKey(key) {
            return "key must be a qualified name such as triad.io/space (an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.')"
        }
        return nil
    }

    mutating func metadata(_ value: JSONValue, at p: String) {
        object(
            value, at: p, required: ["name"],
            allowed: ["name", "labels", "annotations", "uid", "resourceVersion", "generation", "creationTimestamp"]
        ) { m, w in
            if let n = m["name"] { w.name(n, at: "\(p)/name") }
            if let labels = m["labels"] {
                w.stringMap(
                    labels, at: "\(p)/labels", maxEntries: ResourceLimits.maxLabels, valueMaxLength: 63,
                    keyRule: Walker.qualifiedKeyProblem
                ) { value in
                    !Syntax.isLabelValue(value)
                        ? "label values must be empty or start and end with a letter or digit, with '-', '_' or '.' between" : nil
                }
            }
            if let annotations = m["annotations"] {
                w.stringMap(
                    annotations, at: "\(p)/annotations", maxEntries: ResourceLimits.maxAnnotations, valueMaxLength: 4096,
                    keyRule: Walker.qualifiedKeyProblem)
            }
            if let uid = m["uid"] { w.string(uid, at: "\(p)/uid") }
            if let rv = m["resourceVersion"] { w.string(rv, at: "\(p)/resourceVersion") }
            if let g = m["generation"] { w.integer(g, at: "\(p)/generation", minimum: 0) }
            if let t = m["creationTimestamp"] { w.dateTime(t, at: "\(p)/creationTimestamp") }
        }
    }

    mutating func spec(_ value: JSONValue, at p: String) {
        object(
            value, at: p, required: ["kind"],
            allowed: ["kind", "icon", "description", "accessMode", "operations", "probeImage", "probeArgs", "probeEnabled", "aliasName"]
        ) { m, w in
            if let kind = m["kind"] { w.oneOf(kind, ResourceKind.self, at: "\(p)/kind") }
            if let icon = m["icon"] { w.string(icon, at: "\(p)/icon", maxLength: 2048) }
            if let d = m["description"] { w.stringMap(d, at: "\(p)/description", maxEntries: 64, valueMaxLength: 4096) }
            if let mode = m["accessMode"] { w.oneOf(mode, ResourceAccessMode.self, at: "\(p)/accessMode") }
            if let ops = m["operations"] { w.operations(ops, at: "\(p)/operations") }
            if let image = m["probeImage"] { w.string(image, at: "\(p)/probeImage", maxLength: 2048) }
            if let args = m["probeArgs"] {
                if case .array(let items) = args {
                    if items.count > ResourceLimits.maxProbeArgs { w.fail("\(p)/probeArgs", "must have at most \(ResourceLimits.maxProbeArgs) items") }
                    for (i, item) in items.enumerated() { w.string(item, at: "\(p)/probeArgs/\(i)") }
                } else {
                    w.fail("\(p)/probeArgs", "must be an array of strings, not \(args.typeName)")
                }
            }
            if let enabled = m["probeEnabled"] { w.bool(enabled, at: "\(p)/probeEnabled") }
            if let alias = m["aliasName"] { w.string(alias, at: "\(p)/aliasName", maxLength: 253) }
        }
    }

    mutating func operations(_ value: JSONValue, at p: String) {
        guard case .array(let items) = value else { return fail(p, "must be an array, not \(value.typeName)") }
        if items.count > ResourceLimits.maxOperations { fail(p, "must have at most \(ResourceLimits.maxOperations) operations") }
        var seen: [String: Int] = [:]
        for (i, item) in items.enumerated() {
            let ip = "\(p)/\(i)"
            object(item, at: ip, required: ["name", "httpAction"], allowed: ["name", "price", "description", "httpAction"]) { m, w in
                if let n = m["name"] {
                    w.operationName(n, at: "\(ip)/name")
                    // Operation names address `/operations/{op}`, so they must be unique (not expressible in the schema).
                    if let s = n.stringValue {
                        if let first = seen[s] { w.fail("\(ip)/name", "duplicates operation \(first)") } else { seen[s] = i }
                    }
                }
                if let price = m["price"] {
                    if case .number(let d) = price {
                        if d < 0 { w.fail("\(ip)/price", "must be at least 0") }
                    } else {
                        w.fail("\(ip)/price", "must be a number, not \(price.typeName)")
                    }
                }
                if let d = m["description"] { w.string(d, at: "\(ip)/description", maxLength: 4096) }
                if let action = m["httpAction"] { w.httpAction(action, at: "\(ip)/httpAction") }
            }
        }
    }

    static let methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]

    mutating func httpAction(_ value: JSONValue, at p: String) {
        object(value, at: p, required: ["action", "url"], allowed: ["action", "url", "query", "headers"]) { m, w in
            if let action = m["action"], let s = w.string(action, at: "\(p)/action"), !Walker.methods.contains(s) {
                w.fail("\(p)/action", "must be one of \(Walker.methods.joined(separator: ", ")), not \"\(s)\"")
            }
            if let url = m["url"], let s = w.string(url, at: "\(p)/url", maxLength: 2048), !Syntax.isHTTPURL(s) {
                w.fail("\(p)/url", "must be an absolute http:// or https:// URL with a host (and a port, if any, in 1-65535)")
            }
            if let q = m["query"] { w.stringMap(q, at: "\(p)/query", maxEntries: nil, valueMaxLength: nil) }
            if let h = m["headers"] { w.stringMap(h, at: "\(p)/headers", maxEntries: nil, valueMaxLength: nil) }
        }
    }

    mutating func status(_ value: JSONValue, at p: String) {
        object(
            value, at: p,
            allowed: [
                "phase", "probePhase", "bound", "binding", "createTime", "startTime", "observedGeneration",
                "conditions", "location", "telemetry",
            ]
        ) { m, w in
            if let v = m["phase"] { w.oneOf(v, ResourcePhase.self, at: "\(p)/phase") }
            if let v = m["probePhase"] { w.oneOf(v, ProbePhase.self, at: "\(p)/probePhase") }
            if let v = m["bound"] { w.bool(v, at: "\(p)/bound") }
            if let v = m["binding"] {
                w.object(
                    v, at: "\(p)/binding", required: ["holder", "acquiredAt", "expiresAt"],
                    allowed: ["holder", "acquiredAt", "expiresAt"]
                ) { bm, w in
                    if let h = bm["holder"] { w.string(h, at: "\(p)/binding/holder", maxLength: 253) }
                    if let t = bm["acquiredAt"] { w.dateTime(t, at: "\(p)/binding/acquiredAt") }
                    if let t = bm["expiresAt"] { w.dateTime(t, at: "\(p)/binding/expiresAt") }
                }
            }
            if let v = m["createTime"] { w.dateTime(v, at: "\(p)/createTime") }
            if let v = m["startTime"] { w.dateTime(v, at: "\(p)/startTime") }
            if let v = m["observedGeneration"] { w.integer(v, at: "\(p)/observedGeneration", minimum: 0) }
            if let v = m["conditions"] { w.conditions(v, at: "\(p)/conditions") }
            if let v = m["location"] {
                w.object(v, at: "\(p)/location", allowed: nil) { lm, w in
                    if let space = lm["space"] { w.string(space, at: "\(p)/location/space") }
                    if let since = lm["since"] { w.dateTime(since, at: "\(p)/location/since") }
                }
            }
            if let v = m["telemetry"] {
                w.object(v, at: "\(p)/telemetry", allowed: ["lastSeen", "values"]) { tm, w in
                    if let t = tm["lastSeen"] { w.dateTime(t, at: "\(p)/telemetry/lastSeen") }
                    if let values = tm["values"] { w.object(values, at: "\(p)/telemetry/values", allowed: nil) }
                }
            }
        }
    }

    mutating func conditions(_ value: JSONValue, at p: String) {
        guard case .array(let items) = value else { return fail(p, "must be an array, not \(value.typeName)") }
        if items.count > ResourceLimits.maxConditions { fail(p, "must have at most \(ResourceLimits.maxConditions) conditions") }
        for (i, item) in items.enumerated() {
            let ip = "\(p)/\(i)"
            object(item, at: ip, required: ["type", "status"], allowed: ["type", "status", "reason", "message", "lastTransitionTime", "lastHeartbeatTime"]) {
                m, w in
                if let t = m["type"] { w.string(t, at: "\(ip)/type", maxLength: 316) }
                if let s = m["status"] { w.oneOf(s, Condition.Status.self, at: "\(ip)/status") }
                if let r = m["reason"] { w.string(r, at: "\(ip)/reason", maxLength: 1024) }
                if let msg = m["message"] { w.string(msg, at: "\(ip)/message", maxLength: 32768) }
                if let t = m["lastTransitionTime"] { w.dateTime(t, at: "\(ip)/lastTransitionTime") }
                if let t = m["lastHeartbeatTime"] { w.dateTime(t, at: "\(ip)/lastHeartbeatTime") }
            }
        }
    }
}
