/// Where and how to reach a broker, parsed from `amqp://user:pass@host:port[/vhost]`.
///
/// Follows RabbitMQ's URI spec where it matters here: user, password and vhost are
/// percent-decoded; no path, `/` or `/%2f` mean the default vhost `/`; a missing port is 5672
/// and missing credentials are guest/guest. TLS (`amqps`) is not supported by this prototype.
public struct AMQPEndpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String
    public var vhost: String

    public init(
        host: String = "127.0.0.1", port: Int = 5672, user: String = "guest",
        password: String = "guest", vhost: String = "/"
    ) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.vhost = vhost
    }

    public init(url: String) throws(AMQPError) {
        // Every error quotes the URL with the password masked, never the URL as given.
        func bad(_ why: String) -> AMQPError {
            AMQPError("invalid AMQP URL '\(AMQPEndpoint.redact(url))': \(why)")
        }
        guard let schemeEnd = url.firstRange(of: "://") else {
            throw bad("expected amqp://user:password@host:port[/vhost]")
        }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "amqp" else {
            throw bad(scheme == "amqps" ? "TLS (amqps) is not supported" : "scheme must be amqp, not '\(scheme)'")
        }
        var rest = url[schemeEnd.upperBound...]
        // Split user info at the last "@" first, so an unencoded "/" in a password cannot be
        // mistaken for the start of the vhost (nor leak into an error as "the host").
        var user = "guest"
        var password = "guest"
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let parts = userInfo.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard let u = Self.percentDecode(parts[0]) else { throw bad("bad percent-encoding in user name") }
            user = u
            if parts.count == 2 {
                guard let p = Self.percentDecode(parts[1]) else { throw bad("bad percent-encoding in password") }
                password = p
            }
            if user.isEmpty { throw bad("empty user name") }
        }
        if rest.contains("?") || rest.contains("#") { throw bad("query parameters and fragments are not supported") }
        var path: Substring? = nil
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }

        var host: Substring
        var portText: Substring? = nil
        if rest.hasPrefix("[") {  // IPv6 literal: [::1]:5672
            guard let close = rest.firstIndex(of: "]") else { throw bad("unterminated '[' in host") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw bad("unexpected text after ']'") }
                portText = after.dropFirst()
            }
        } else if let colon = rest.firstIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        } else {
            host = rest
        }
        if host.isEmpty { throw bad("missing host") }
        var port = 5672
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else {
                throw bad("port '\(portText)' is not a number from 1 to 65535")
            }
            port = p
        }

        var vhost = "/"
        if let path, !path.isEmpty {
            guard !path.contains("/") else { throw bad("vhost must be one path segment (encode '/' as %2f)") }
            guard let v = Self.percentDecode(path) else { throw bad("bad percent-encoding in vhost") }
            vhost = v
        }
        self.init(host: String(host), port: port, user: user, password: password, vhost: vhost)
    }

    /// The URL with the password masked: safe for logs and error messages.
    public var description: String {
        let h = host.contains(":") ? "[\(host)]" : host
        let v = vhost == "/" ? "" : "/" + (vhost.addingPercentEncodingForVhost)
        return "amqp://\(user):***@\(h):\(port)\(v)"
    }

    /// Masks whatever sits between "user:" and the last "@" of the authority.
    static func redact(_ url: String) -> String {
        guard let schemeEnd = url.firstRange(of: "://") else {
            // Not even a URL: it may be just a password pasted by mistake, so show nothing of it.
            return url.contains("@") || url.contains(":") ? "***" : url
        }
        let afterScheme = url[schemeEnd.upperBound...]
        guard let at = afterScheme.lastIndex(of: "@"),
            let colon = afterScheme[..<at].firstIndex(of: ":")
        else { return url }
        return String(url[..<colon]) + ":***" + String(url[at...])
    }

    static func percentDecode(_ s: Substring) -> String? {
        var bytes: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "%") {
                guard it.count >= 2, let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) else { return nil }
                bytes.append(v)
                it = it.dropFirst(2)
            } else {
                bytes.append(b)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}

extension String {
    fileprivate var addingPercentEncodingForVhost: String {
        var out = ""
        for b in utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
                UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                out += "%" + (b < 16 ? "0" : "") + String(b, radix: 16)
            }
        }
        return out
    }
}

/// Every failure of this module: one readable line, never containing a password.
public struct AMQPError: Error, CustomStringConvertible, Sendable, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
