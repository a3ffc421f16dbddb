import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The hosts an operation's `httpAction` may call (`--allowed-hosts`): host names, IP addresses
/// and CIDR ranges. Triad calls only these, so it is never an open proxy. A name in the list
/// allows that name wherever it resolves; any other name is allowed only while it resolves to
/// an allowed address, and the address checked is the one connected to.
public struct AllowedHosts: Sendable, Equatable, CustomStringConvertible {
    public struct Range: Sendable, Equatable {
        /// 4 bytes (IPv4) or 16 (IPv6).
        public var network: [UInt8]
        public var prefix: Int

        func contains(_ address: [UInt8]) -> Bool {
            guard address.count == network.count else { return false }
            var bits = prefix
            for i in 0..<address.count where bits > 0 {
                let take = min(8, bits)
                let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - take))
                if address[i] & mask != network[i] & mask { return false }
                bits -= take
            }
            return true
        }
    }

    public var names: Set<String>
    public var ranges: [Range]
    public let description: String

    /// Loopback only: what a server that was told nothing may call.
    public static let loopback = try! AllowedHosts(parsing: "localhost,127.0.0.0/8,::1")

    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// A comma-separated list: `localhost, 127.0.0.0/8, ::1, api.example.org, 10.1.2.3`.
    public init(parsing text: String) throws {
        var names: Set<String> = []
        var ranges: [Range] = []
        let entries = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !entries.isEmpty else { throw Invalid(description: "allowed hosts: the list is empty (give at least one host, address or CIDR)") }
        for entry in entries {
            let parts = entry.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            if let address = Self.parseAddress(String(parts[0])) {
                let maxPrefix = address.count * 8
                var prefix = maxPrefix
                if parts.count == 2 {
                    guard let p = Int(parts[1]), (0...maxPrefix).contains(p) else {
                        throw Invalid(description: "allowed hosts: \"\(entry)\" has a prefix length outside 0–\(maxPrefix)")
                    }
                    prefix = p
                }
                ranges.append(Range(network: address, prefix: prefix))
            } else {
                let name = entry.lowercased()
                guard parts.count == 1, Self.isHostName(name) else {
                    throw Invalid(description: "allowed hosts: \"\(entry)\" is neither a host name, an IP address nor a CIDR range")
                }
                names.insert(name)
            }
        }
        self.names = names
        self.ranges = ranges
        self.description = entries.joined(separator: ",")
    }

    public func allows(name: String) -> Bool { names.contains(name.lowercased()) }

    public func allows(address: [UInt8]) -> Bool {
        // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is judged as the IPv4 address it is.
        if address.count == 16, address[0..<10].allSatisfy({ $0 == 0 }), address[10] == 0xFF, address[11] == 0xFF {
            return allows(address: Array(address[12..<16]))
        }
        return ranges.contains { $0.contains(address) }
    }

    /// The bytes of an IPv4 or IPv6 literal (brackets allowed), nil for anything else.
    public static func parseAddress(_ text: String) -> [UInt8]? {
        var literal = text
        if literal.hasPrefix("[") && literal.hasSuffix("]") { literal = String(literal.dropFirst().dropLast()) }
        var v4 = in_addr()
        if inet_pton(AF_INET, literal, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, literal, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }

    static func isHostName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 253 else { return false }
        return name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            !label.isEmpty && label.utf8.count <= 63
                && label.utf8.allSatisfy {
                    ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || $0 == UInt8(ascii: "-")
                }
        }
    }
}
