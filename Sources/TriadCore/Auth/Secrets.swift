/// Small tools for secrets that several parts of Triad hand out and check.
public enum Secrets {
    /// Compares every byte whatever the first difference, so the answer's timing does not tell
    /// how much of a guessed secret was right.
    public static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        var difference = UInt8(x.count == y.count ? 0 : 1)
        for i in 0..<max(x.count, y.count) {
            difference |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
        }
        return difference == 0
    }

    /// `bytes` random bytes as lower-case hex. By hand: String(format:) per byte was a visible
    /// share of an invocation's CPU; and eight bytes per draw, since each draw is a system call.
    public static func randomHex(bytes: Int) -> String {
        String(decoding: hexDigits(randomBytes(bytes)), as: UTF8.self)
    }

    /// A random (version 4) UUID in lower case. Foundation's `UUID()` opens /dev/urandom on
    /// every call, which showed in the profile of creates.
    public static func uuid() -> String {
        var b = randomBytes(16)
        b[6] = (b[6] & 0x0f) | 0x40  // version 4
        b[8] = (b[8] & 0x3f) | 0x80  // RFC 4122 variant
        let hex = hexDigits(b)
        var out: [UInt8] = []
        out.reserveCapacity(36)
        for (i, digit) in hex.enumerated() {
            if i == 8 || i == 12 || i == 16 || i == 20 { out.append(UInt8(ascii: "-")) }
            out.append(digit)
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexDigits(_ bytes: [UInt8]) -> [UInt8] {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return out
    }

    private static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var out: [UInt8] = []
        out.reserveCapacity(count + 7)
        while out.count < count {
            withUnsafeBytes(of: generator.next() as UInt64) { out.append(contentsOf: $0) }
        }
        return Array(out.prefix(count))
    }
}
