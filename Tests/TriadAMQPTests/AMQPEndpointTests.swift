import Testing

@testable import TriadAMQP

@Suite struct AMQPEndpointTests {
    @Test func parsesFullURL() throws {
        let e = try AMQPEndpoint(url: "amqp://alice:s3cret@broker.local:5673/prod")
        #expect(e == AMQPEndpoint(host: "broker.local", port: 5673, user: "alice", password: "s3cret", vhost: "prod"))
    }

    @Test(arguments: [
        "amqp://guest:guest@127.0.0.1:55672", "amqp://guest:guest@127.0.0.1:55672/",
        "amqp://guest:guest@127.0.0.1:55672/%2f", "amqp://guest:guest@127.0.0.1:55672/%2F",
    ])
    func defaultVhost(url: String) throws {
        #expect(try AMQPEndpoint(url: url).vhost == "/")
    }

    @Test func decodesAndDefaults() throws {
        let e = try AMQPEndpoint(url: "amqp://u%40x:p%2Fw@[::1]/a%2fb")
        #expect(e.user == "u@x" && e.password == "p/w" && e.host == "::1" && e.port == 5672 && e.vhost == "a/b")
        let d = try AMQPEndpoint(url: "amqp://localhost")
        #expect(d.user == "guest" && d.password == "guest" && d.port == 5672)
    }

    @Test(arguments: [
        ("http://guest:topsecret@h:1", "scheme must be amqp"),
        ("amqps://guest:topsecret@h:1", "TLS (amqps) is not supported"),
        ("amqp://guest:topsecret@h:99999", "port '99999' is not a number from 1 to 65535"),
        ("amqp://guest:topsecret@h:abc", "port 'abc'"),
        ("amqp://guest:topsecret@:5672", "missing host"),
        ("amqp://guest:topsecret@h/a/b", "one path segment"),
        ("amqp://guest:top/secret@h/a/b", "one path segment"),
        ("amqp://guest:top%zzsecret@h", "bad percent-encoding in password"),
        ("guest:topsecret@h", "expected amqp://"),
    ])
    func rejectsBadURLsWithoutLeakingThePassword(url: String, message: String) {
        do {
            _ = try AMQPEndpoint(url: url)
            Issue.record("accepted \(url)")
        } catch {
            #expect(error.description.contains(message), "\(error)")
            #expect(!error.description.contains("secret"), "password leaked: \(error)")
        }
    }

    @Test func descriptionMasksPassword() throws {
        let e = try AMQPEndpoint(url: "amqp://guest:topsecret@127.0.0.1:55672")
        #expect(e.description == "amqp://guest:***@127.0.0.1:55672")
        #expect(!"\(e)".contains("topsecret"))
    }
}
