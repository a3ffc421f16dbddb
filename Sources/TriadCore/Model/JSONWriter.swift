import Foundation

/// Writes a `JSONValue` as compact JSON with sorted keys: the same text `JSONCoding.encode` gives
/// through JSONEncoder, several times faster, for the per-sample telemetry path (and every tree).
enum JSONWriter {
    static func write(_ value: JSONValue) -> Data {
        var out: [UInt8] = []
        out.reserveCapacity(128)
        append(value, to: &out)
        return Data(out)
    }

    static func append(_ value: JSONValue, to out: inout [UInt8]) {
        switch value {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .number(let d): appendNumber(d, to: &out)
        case .string(let s): appendString(s, to: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                append(item, to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (i, key) in members.keys.sorted().enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                appendString(key, to: &out)
                out.append(UInt8(ascii: ":"))
                append(members[key]!, to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    static func appendNumber(_ d: Double, to out: inout [UInt8]) {
        // Integers stay integers on the wire, as JSONValue's Encodable conformance does.
        if d.rounded() == d, abs(d) < 9.0e15 {
            out.append(contentsOf: String(Int64(d)).utf8)
        } else if d.isFinite {
            out.append(contentsOf: "\(d)".utf8)
        } else {
            out.append(contentsOf: "null".utf8)  // JSON has no NaN or infinity; the parser never makes them
        }
    }

    static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: #"\""#.utf8)
            case UInt8(ascii: "\\"): out.append(contentsOf: #"\\"#.utf8)
            case 0x0A: out.append(contentsOf: #"\n"#.utf8)
            case 0x0D: out.append(contentsOf: #"\r"#.utf8)
            case 0x09: out.append(contentsOf: #"\t"#.utf8)
            case 0x08: out.append(contentsOf: #"\b"#.utf8)
            case 0x0C: out.append(contentsOf: #"\f"#.utf8)
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out.append(contentsOf: #"\u00"#.utf8)
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0xF)])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
