import Foundation

/// The part of MessagePack that Envoy's fluentd access logger writes (Forward protocol).
public indirect enum MsgPackValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case string(String)
    case binary([UInt8])
    case array([MsgPackValue])
    case map([(MsgPackValue, MsgPackValue)])
    case ext(Int8, [UInt8])

    public static func == (a: MsgPackValue, b: MsgPackValue) -> Bool {
        switch (a, b) {
        case (.null, .null): true
        case (.bool(let x), .bool(let y)): x == y
        case (.int(let x), .int(let y)): x == y
        case (.uint(let x), .uint(let y)): x == y
        case (.double(let x), .double(let y)): x == y
        case (.string(let x), .string(let y)): x == y
        case (.binary(let x), .binary(let y)): x == y
        case (.array(let x), .array(let y)): x == y
        case (.map(let x), .map(let y)): x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        case (.ext(let t, let x), .ext(let u, let y)): t == u && x == y
        default: false
        }
    }

    /// A record field as text: Envoy sends numeric-looking values as numbers.
    public var text: String? {
        switch self {
        case .string(let s): s
        case .int(let i): String(i)
        case .uint(let u): String(u)
        case .double(let d): String(d)
        case .bool(let b): String(b)
        default: nil
        }
    }
}

public enum MsgPackDecoder {
    public struct Malformed: Error {}

    /// Decodes one value from `bytes` at `offset`; nil when the bytes end before the value does.
    public static func decode(_ bytes: UnsafeRawBufferPointer, offset: inout Int, depth: Int = 0) throws -> MsgPackValue? {
        guard depth < 64 else { throw Malformed() }
        func need(_ n: Int) -> Bool { offset + n <= bytes.count }
        func be(_ n: Int) -> UInt64 {
            var v: UInt64 = 0
            for i in 0..<n { v = v << 8 | UInt64(bytes[offset + i]) }
            offset += n
            return v
        }
        func raw(_ n: Int) -> [UInt8]? {
            guard need(n) else { return nil }
            defer { offset += n }
            return Array(bytes[offset..<offset + n])
        }
        guard need(1) else { return nil }
        let start = offset
        let b = bytes[offset]
        offset += 1
        func restart() -> MsgPackValue? {
            offset = start
            return nil
        }
        func sized(_ width: Int) -> Int? { need(width) ? Int(be(width)) : nil }
        func str(_ n: Int?) -> MsgPackValue? {
            guard let n, let r = raw(n) else { return restart() }
            return .string(String(decoding: r, as: UTF8.self))
        }
        func bin(_ n: Int?) -> MsgPackValue? {
            guard let n, let r = raw(n) else { return restart() }
            return .binary(r)
        }
        func array(_ n: Int?) throws -> MsgPackValue? {
            guard let n else { return restart() }
            var items: [MsgPackValue] = []
            items.reserveCapacity(min(n, 1024))
            for _ in 0..<n {
                guard let v = try decode(bytes, offset: &offset, depth: depth + 1) else { return restart() }
                items.append(v)
            }
            return .array(items)
        }
        func map(_ n: Int?) throws -> MsgPackValue? {
            guard let n else { return restart() }
            var pairs: [(MsgPackValue, MsgPackValue)] = []
            for _ in 0..<n {
                guard let k = try decode(bytes, offset: &offset, depth: depth + 1),
                    let v = try decode(bytes, offset: &offset, depth: depth + 1)
                else { return restart() }
                pairs.append((k, v))
            }
            return .map(pairs)
        }
        func ext(_ n: Int?) -> MsgPackValue? {
            guard let n, need(1 + n) else { return restart() }
            let type = Int8(bitPattern: bytes[offset])
            offset += 1
            return .ext(type, raw(n)!)
        }
        switch b {
        case 0x00...0x7f: return .uint(UInt64(b))
        case 0x80...0x8f: return try map(Int(b & 0x0f))
        case 0x90...0x9f: return try array(Int(b & 0x0f))
        case 0xa0...0xbf: return str(Int(b & 0x1f))
        case 0xc0: return .null
        case 0xc2: return .bool(false)
        case 0xc3: return .bool(true)
        case 0xc4: return bin(sized(1))
        case 0xc5: return bin(sized(2))
        case 0xc6: return bin(sized(4))
        case 0xc7: return ext(sized(1))
        case 0xc8: return ext(sized(2))
        case 0xc9: return ext(sized(4))
        case 0xca:
            guard need(4) else { return restart() }
            return .double(Double(Float(bitPattern: UInt32(be(4)))))
        case 0xcb:
            guard need(8) else { return restart() }
            return .double(Double(bitPattern: be(8)))
        case 0xcc, 0xcd, 0xce, 0xcf:
            let width = 1 << Int(b - 0xcc)
            guard need(width) else { return restart() }
            return .uint(be(width))
        case 0xd0, 0xd1, 0xd2, 0xd3:
            let width = 1 << Int(b - 0xd0)
            guard need(width) else { return restart() }
            let v = be(width)
            let shift = UInt64(64 - 8 * width)
            return .int(Int64(bitPattern: v << shift) >> Int64(shift))
        case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: return ext(1 << Int(b - 0xd4))
        case 0xd9: return str(sized(1))
        case 0xda: return str(sized(2))
        case 0xdb: return str(sized(4))
        case 0xdc: return try array(sized(2))
        case 0xdd: return try array(sized(4))
        case 0xde: return try map(sized(2))
        case 0xdf: return try map(sized(4))
        case 0xe0...0xff: return .int(Int64(Int8(bitPattern: b)))
        default: throw Malformed()  // 0xc1 is never used
        }
    }
}

/// One access-log entry: which Envoy listener sent it (the fluentd tag) and its fields.
public struct LogRecord: Sendable, Equatable {
    public var tag: String
    public var fields: [String: String]

    public init(tag: String, fields: [String: String]) {
        self.tag = tag
        self.fields = fields
    }

    /// The entries of one Forward-protocol message: `[tag, [[time, record], ...], option?]`,
    /// or Message mode `[tag, time, record, option?]`.
    public static func entries(of message: MsgPackValue) -> [LogRecord] {
        guard case .array(let parts) = message, parts.count >= 2, case .string(let tag) = parts[0] else { return [] }
        func record(_ v: MsgPackValue) -> LogRecord? {
            guard case .map(let pairs) = v else { return nil }
            var fields: [String: String] = [:]
            for (k, v) in pairs { if case .string(let key) = k, let text = v.text { fields[key] = text } }
            return LogRecord(tag: tag, fields: fields)
        }
        if case .array(let entries) = parts[1] {
            return entries.compactMap { entry in
                guard case .array(let pair) = entry, pair.count >= 2 else { return nil }
                return record(pair[1])
            }
        }
        if parts.count >= 3, let r = record(parts[2]) { return [r] }
        return []
    }
}
