import Foundation

public struct MQTTError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Where an MQTT broker is: `mqtt://[user[:password]@]host[:port]` (port 1883 by default).
/// `description` never shows the password.
public struct MQTTEndpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var username: String?
    public var password: String?

    public init(url: String) throws(MQTTError) {
        guard let c = URLComponents(string: url), c.scheme == "mqtt" else {
            throw MQTTError("invalid MQTT URL: expected mqtt://[user[:password]@]host[:port]")
        }
        guard let host = c.host, !host.isEmpty else { throw MQTTError("invalid MQTT URL: no host") }
        if !c.path.isEmpty && c.path != "/" { throw MQTTError("invalid MQTT URL: it takes no path") }
        let port = c.port ?? 1883
        guard (1...65535).contains(port) else { throw MQTTError("invalid MQTT URL: port \(port) is out of range") }
        self.host = host
        self.port = port
        self.username = c.user?.removingPercentEncoding
        self.password = c.password?.removingPercentEncoding
    }

    public var description: String { "mqtt://\(host):\(port)" }
}
