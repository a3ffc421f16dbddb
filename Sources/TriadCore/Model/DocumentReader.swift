import CYaml
import Foundation
import Yams

/// Reads request bodies and files (JSON, YAML, multi-document YAML) into JSON trees.
public enum DocumentReader {
    public enum Format: Sendable { case json, yaml }

    /// One document. YAML with more than one document is an error here.
    public static func read(_ data: Data, format: Format) throws(DocumentSyntaxError) -> JSONValue {
        switch format {
        case .json: return try JSONCoding.parse(data)
        case .yaml:
            let docs = try readAll(data, format: .yaml)
            guard docs.count == 1 else { throw DocumentSyntaxError("expected exactly one YAML document, found \(docs.count)") }
            return docs[0]
        }
    }

    /// Every document in a file: a JSON value (a `List` is not unpacked here) or each YAML document.
    public static func readAll(_ data: Data, format: Format) throws(DocumentSyntaxError) -> [JSONValue] {
        switch format {
        case .json: return [try JSONCoding.parse(data)]
        case .yaml:
            guard let text = String(data: data, encoding: .utf8) else { throw DocumentSyntaxError("body is not UTF-8 text") }
            if hasAnchorsOrAliases(text) { throw DocumentSyntaxError("YAML anchors and aliases are not supported") }
            var nodes: [Node] = []
            var parser: Parser?
            do {
                // Parser.nextRoot reports errors; iterating compose_all would end silently on them.
                parser = try Parser(yaml: text)
                while let node = try parser?.nextRoot() { nodes.append(node) }
            } catch let error as YamlError {
                throw DocumentSyntaxError("body is not valid YAML: \(yamlProblem(error))")
            } catch {
                throw DocumentSyntaxError("body is not valid YAML")
            }
            // The parser owns the nodes' anchors (nodes hold them weakly): it must outlive the check.
            var budget = Budget()
            let values = try nodes.map { node throws(DocumentSyntaxError) in try value(of: node, depth: 0, budget: &budget) }
            withExtendedLifetime(parser) {}
            return values
        }
    }

    /// Whether libyaml's scanner, which only splits the text into tokens (linear time), meets an
    /// anchor or an alias. Checked before Yams composes the nodes: composing looks for duplicate
    /// keys by hashing them, and a key that aliases nested anchors costs exponential time there.
    static func hasAnchorsOrAliases(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty else { return false }
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { return false }
        defer { yaml_parser_delete(&parser) }
        return bytes.withUnsafeBufferPointer { buffer in
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            while true {
                var token = yaml_token_t()
                // A syntax error ends the scan; the parse that follows reports it with its place.
                guard yaml_parser_scan(&parser, &token) == 1 else { return false }
                defer { yaml_token_delete(&token) }
                switch token.type {
                case YAML_ANCHOR_TOKEN, YAML_ALIAS_TOKEN: return true
                case YAML_STREAM_END_TOKEN: return false
                default: continue
                }
            }
        }
    }

    /// Guesses the format of a file: JSON when it starts with `{` or `[`.
    public static func sniff(_ data: Data) -> Format {
        for byte in data {
            switch byte {
            case UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"): continue
            case UInt8(ascii: "{"), UInt8(ascii: "["): return .json
            default: return .yaml
            }
        }
        return .yaml
    }

    private static func yamlProblem(_ error: YamlError) -> String {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _):
            let where_ = "line \(mark.line), column \(mark.column)"
            if let context { return "\(problem) \(context.text) at \(where_)" }
            return "\(problem) at \(where_)"
        default:
            return "syntax error"
        }
    }

    /// Limits on what one body may expand to (the JSON parser has its own depth limit).
    static let maxDepth = 128
    static let maxNodes = 200_000

    struct Budget { var nodes = 0 }

    private static func value(of node: Node, depth: Int, budget: inout Budget) throws(DocumentSyntaxError) -> JSONValue {
        // Anchors are refused outright: the composer resolves each alias to its anchored node, so
        // a 1 KB "billion laughs" body would otherwise expand to gigabytes here.
        if node.anchor != nil { throw DocumentSyntaxError("YAML anchors and aliases are not supported") }
        budget.nodes += 1
        if budget.nodes > maxNodes { throw DocumentSyntaxError("the document has more than \(maxNodes) values") }
        if depth > maxDepth { throw DocumentSyntaxError("nesting deeper than \(maxDepth) levels") }
        switch node {
        case .scalar(let scalar):
            // Quoted scalars are always strings; plain ones follow the YAML 1.2 core schema,
            // except timestamps, which stay strings (the model keeps RFC 3339 text as written).
            if scalar.style != .plain { return .string(scalar.string) }
            switch node.tag.description {
            case Tag.Name.null.rawValue: return .null
            case Tag.Name.bool.rawValue: return .bool(Bool.construct(from: scalar) ?? false)
            case Tag.Name.int.rawValue:
                guard let i = integer(scalar) else { throw DocumentSyntaxError("integer out of range: \(scalar.string)") }
                return .number(Double(i))
            case Tag.Name.float.rawValue:
                guard let d = Double.construct(from: scalar), d.isFinite else { throw DocumentSyntaxError("numbers must be finite: \(scalar.string)") }
                return .number(d)
            default: return .string(scalar.string)
            }
        case .sequence(let seq):
            var items: [JSONValue] = []
            for child in seq { items.append(try value(of: child, depth: depth + 1, budget: &budget)) }
            return .array(items)
        case .mapping(let map):
            var members: [String: JSONValue] = [:]
            for (k, v) in map {
                guard case .scalar(let key) = k else { throw DocumentSyntaxError("mapping keys must be strings") }
                guard members[key.string] == nil else { throw DocumentSyntaxError("duplicate key \"\(key.string)\"") }
                members[key.string] = try value(of: v, depth: depth + 1, budget: &budget)
            }
            return .object(members)
        case .alias:
            throw DocumentSyntaxError("YAML aliases are not supported")
        }
    }

    /// A YAML 1.1 integer. Base 60 (`1:30`) is summed here with overflow checks: Yams multiplies
    /// without them, so a long base-60 scalar in a body would trap the server.
    static func integer(_ scalar: Node.Scalar) -> Int? {
        let text = scalar.string.replacingOccurrences(of: "_", with: "")
        guard text.contains(":") else { return Int.construct(from: scalar) }
        let negative = text.hasPrefix("-")
        let digits = text.drop { $0 == "-" || $0 == "+" }
        guard text.count - digits.count <= 1 else { return nil }
        var total = 0
        for part in digits.split(separator: ":", omittingEmptySubsequences: false) {
            guard let place = Int(part, radix: 10), place >= 0 else { return nil }
            let shifted = total.multipliedReportingOverflow(by: 60)
            let summed = shifted.partialValue.addingReportingOverflow(place)
            guard !shifted.overflow, !summed.overflow else { return nil }
            total = summed.partialValue
        }
        return negative ? -total : total
    }
}

/// Writes a JSON tree as block-style YAML with Yams (libyaml's emitter): keys sorted, strings
/// quoted where YAML would read them as something else, no line folding (`triad get -o yaml`).
public enum DocumentWriter {
    public static func yaml(_ value: JSONValue) -> String {
        // A JSON tree always has a YAML form; were the emitter ever to refuse one, JSON is YAML too.
        (try? Yams.serialize(node: node(value), indent: 2, width: -1, allowUnicode: true))
            ?? String(decoding: JSONCoding.encode(value), as: UTF8.self) + "\n"
    }

    static func node(_ value: JSONValue) -> Node {
        switch value {
        case .null: return Node("null", Tag(.null))
        case .bool(let b): return Node(b ? "true" : "false", Tag(.bool))
        case .number(let d): return d.rounded() == d && abs(d) < 9e15 ? Node(String(Int64(d)), Tag(.int)) : Node(String(d), Tag(.float))
        case .string(let s): return string(s)
        case .array(let items): return Node(items.map(node))
        case .object(let members): return Node(members.keys.sorted().map { (string($0), node(members[$0]!)) })
        }
    }

    /// A string YAML reads back as this string: plain when it would, else single-quoted ("true",
    /// "42", "null", "" would otherwise come back as other types).
    public static func string(_ s: String) -> Node {
        Resolver.default.resolveTag(of: Node(s)) == .str ? Node(s, Tag(.str)) : Node(s, Tag(.str), .singleQuoted)
    }
}
