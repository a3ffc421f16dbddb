import Foundation

/// Kubernetes label-selector semantics: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`,
/// requirements joined by commas (all must hold).
public struct LabelSelector: Sendable, Equatable {
    public enum Requirement: Sendable, Equatable {
        case equals(String, String)
        case notEquals(String, String)
        case `in`(String, Set<String>)
        case notIn(String, Set<String>)
        case exists(String)
        case doesNotExist(String)
    }

    public struct ParseError: Error, Sendable, Equatable {
        public var message: String
    }

    public var requirements: [Requirement]

    public static let everything = LabelSelector(requirements: [])

    public init(requirements: [Requirement]) { self.requirements = requirements }

    public init(parsing text: String) throws(ParseError) {
        var reqs: [Requirement] = []
        for clause in Self.splitClauses(text) {
            let c = clause.trimmingCharacters(in: .whitespaces)
            if c.isEmpty { throw ParseError(message: "empty requirement in label selector \"\(text)\"") }
            reqs.append(try Self.parseClause(c))
        }
        self.requirements = reqs
    }

    public func matches(_ labels: [String: String]) -> Bool {
        requirements.allSatisfy { r in
            switch r {
            case .equals(let k, let v): labels[k] == v
            case .notEquals(let k, let v): labels[k] != v
            case .in(let k, let vs): labels[k].map(vs.contains) ?? false
            case .notIn(let k, let vs): labels[k].map { !vs.contains($0) } ?? true
            case .exists(let k): labels[k] != nil
            case .doesNotExist(let k): labels[k] == nil
            }
        }
    }

    /// Splits on commas that are not inside `( … )`.
    private static func splitClauses(_ text: String) -> [String] {
        if text.trimmingCharacters(in: .whitespaces).isEmpty { return [] }
        var parts: [String] = []
        var current = ""
        var depth = 0
        for ch in text {
            if ch == "(" { depth += 1 }
            if ch == ")" { depth -= 1 }
            if ch == "," && depth == 0 {
                parts.append(current)
                current = ""
            } else {
                current.append(ch)
            }
        }
        parts.append(current)
        return parts
    }

    private static func checkKey(_ key: String, in clause: String) throws(ParseError) -> String {
        let k = key.trimmingCharacters(in: .whitespaces)
        if k.isEmpty || k.count > 253 || !Syntax.isQualifiedKey(k) {
            throw ParseError(message: "invalid label key \"\(k)\" in \"\(clause)\"")
        }
        return k
    }

    private static func checkValue(_ value: String, in clause: String) throws(ParseError) -> String {
        let v = value.trimmingCharacters(in: .whitespaces)
        if v.count > 63 || !Syntax.isLabelValue(v) {
            throw ParseError(message: "invalid label value \"\(v)\" in \"\(clause)\"")
        }
        return v
    }

    private static func parseClause(_ c: String) throws(ParseError) -> Requirement {
        if c.hasPrefix("!") {
            return .doesNotExist(try checkKey(String(c.dropFirst()), in: c))
        }
        if let r = c.range(of: "!=") {
            return .notEquals(try checkKey(String(c[..<r.lowerBound]), in: c), try checkValue(String(c[r.upperBound...]), in: c))
        }
        if let r = c.range(of: "==") ?? c.range(of: "=") {
            return .equals(try checkKey(String(c[..<r.lowerBound]), in: c), try checkValue(String(c[r.upperBound...]), in: c))
        }
        let setPattern = #/^(\S+)\s+(in|notin)\s*\((.*)\)$/#
        if let m = c.wholeMatch(of: setPattern) {
            let key = try checkKey(String(m.1), in: c)
            var values = Set<String>()
            for raw in m.3.split(separator: ",", omittingEmptySubsequences: false) {
                values.insert(try checkValue(String(raw), in: c))
            }
            return m.2 == "in" ? .in(key, values) : .notIn(key, values)
        }
        if c.contains(" ") || c.contains("(") {
            throw ParseError(message: "cannot parse label selector requirement \"\(c)\"")
        }
        return .exists(try checkKey(c, in: c))
    }
}
