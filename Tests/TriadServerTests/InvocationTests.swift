import Foundation
import NIOHTTP1
import Synchronization
import Testing
import TriadAMQP
import TriadClient
import TriadCore
import TriadServer
import TriadTesting

/// Operations invoked over REST: checks, the upstream call, the priced ledger and its events.
@Suite("Invocations")
struct InvocationTests {
    static func device(_ name: String, upstream: Upstream, closedPort: Int, access: String = "Exclusive") -> JSONValue {
        func op(_ name: String, _ url: String, price: Double, headers: [String: String] = [:], query: [String: String] = [:]) -> JSONValue {
            .object([
                "name": .string(name), "price": .number(price),
                "httpAction": .object([
                    "action": .string("POST"), "url": .string(url),
                    "query": .object(query.mapValues(JSONValue.string)),
                    "headers": .object(headers.mapValues(JSONValue.string)),
                ]),
            ])
        }
        return .object([
            "apiVersion": .string("triad.io/v1alpha1"), "kind": .string("Resource"),
            "metadata": .object(["name": .string(name)]),
            "spec": .object([
                "kind": .string("Device"), "accessMode": .string(access),
                "operations": .array([
                    op("brew", upstream.baseURL + "/ok", price: 3.5, headers: ["x-api-key": "k-123"], query: ["size": "large", "sugar": "no"]),
                    op("set_percentage", upstream.baseURL + "/ok", price: 0.25),
                    op("explode", upstream.baseURL + "/fail", price: 9),
                    op("wait.forever", upstream.baseURL + "/hang", price: 1),
                    op("unplugged", "http://127.0.0.1:\(closedPort)/x", price: 2),
                ]),
            ]),
        ])
    }

    /// A loopback port nothing listens on.
    static func closedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    static func problemType(_ reply: TriadClient.Reply) -> String {
        (reply.json?["type"]?.stringValue ?? "").replacingOccurrences(of: Problem.typeBase, with: "")
    }

    @Test(arguments: BackendKind.allCases)
    func anAppBindsInvokesAndIsChargedThroughTheRealExecutable(_ kind: BackendKind) async throws {
        let upstream = try await Upstream.start()
        let dir = try TestPaths.temporaryDirectory()
        let args =
            try await ProcessTests.databaseArguments(kind, dataDir: dir + "/data")
            // Long enough that a call to the test's own upstream never times out on a busy machine.
            + ["--amqp", try TestEnvironment.amqpURL(), "--invoke-timeout", "20s"]
        let token = "invoke-admin-token-\(UUID().uuidString)"
        let server = try await ServerProcess.start(args, environment: ["TRIAD_ADMIN_TOKEN": token], directory: dir)
        defer { server.stop() }
        let admin = TriadClient(server: server.baseURL, token: token)
        let name = TestEnvironment.uniqueName("coffee").replacingOccurrences(of: "_", with: "-")

        // The integrator's queue: every operation event of this device.
        let consumer = AMQPConsumer(endpoint: try AMQPEndpoint(url: try TestEnvironment.amqpURL()))
        try await consumer.connect()
        defer { consumer.close() }
        try await consumer.declareTopicExchange(AMQPEventPublisher.exchange)
        try await consumer.declareQueue("", durable: false)
        try await consumer.bind(exchange: AMQPEventPublisher.exchange, routingKey: "device.\(name).invoked")
        try await consumer.bind(exchange: AMQPEventPublisher.exchange, routingKey: "device.\(name).completed")
        try await consumer.startConsuming()

        func tokenFor(_ role: String, _ tokenName: String) async throws -> TriadClient {
            let reply = try await admin.call(.POST, "/api/v1/tokens", body: Data(#"{"name":"\#(tokenName)","role":"\#(role)"}"#.utf8))
            return TriadClient(server: server.baseURL, token: try #require(reply.json?["token"]?.stringValue))
        }
        let appName = "app-\(UUID().uuidString.prefix(6).lowercased())"
        let app = try await tokenFor("app", appName)
        let rival = try await tokenFor("app", appName + "-rival")
        let integrator = try await tokenFor("integrator", appName + "-int")
        _ = try await admin.call(.POST, "/api/v1/resources", body: Docs.json(Self.device(name, upstream: upstream, closedPort: try Self.closedPort())))
        let path = "/api/v1/resources/\(name)/operations"
        let body = Data(#"{"cups":2}"#.utf8)

        // The upstream's credentials in the operation's headers are for operators and admins.
        func apiKey(_ client: TriadClient) async throws -> JSONValue? {
            try await client.call(.GET, "/api/v1/resources/\(name)").json?["spec"]?["operations"]?.arrayValue?.first?["httpAction"]?["headers"]?["x-api-key"]
        }
        #expect(try await apiKey(admin) == .string("k-123"))
        #expect(try await apiKey(app) == .string("<redacted>"))
        let listed = try await integrator.call(.GET, "/api/v1/resources?limit=1000").json?["items"]?.arrayValue ?? []
        #expect(!listed.isEmpty && !String(decoding: JSONCoding.encode(JSONValue.array(listed)), as: UTF8.self).contains("k-123"))
        // The device's own token writes its status; the record it gets back is redacted too.
        let deviceReply = try await admin.call(
            .POST, "/api/v1/tokens", body: Data(#"{"name":"\#(appName)-dev","role":"device","resource":"\#(name)"}"#.utf8))
        let deviceClient = TriadClient(server: server.baseURL, token: try #require(deviceReply.json?["token"]?.stringValue))
        for method in [HTTPMethod.PATCH, .PUT] {
            let written = try await deviceClient.call(method, "/api/v1/resources/\(name)/status", body: Data(#"{"status":{"phase":"Running"}}"#.utf8))
            #expect(written.status == 200)
            #expect(!String(decoding: written.body, as: UTF8.self).contains("k-123"), "\(method) status answers a device with credentials")
        }

        // Refusals before anything is called: each its own problem, nothing recorded.
        var reply = try await app.send(.POST, "\(path)/brew", body: body)
        #expect(reply.status == 409 && Self.problemType(reply) == "binding-required", "unbound: \(reply.status)")
        #expect(Self.problemType(try await app.send(.POST, "\(path)/nosuch", body: body)) == "operation-not-found")
        #expect(try await app.send(.POST, "/api/v1/resources/nosuch-\(name)/operations/brew", body: body).status == 404)
        #expect(try await integrator.send(.POST, "\(path)/brew", body: body).status == 403)
        #expect(try await app.send(.POST, "\(path)/brew", body: Data("{oops".utf8)).status == 400)
        #expect(try await app.send(.POST, "\(path)/brew", body: Data(repeating: 0x20, count: (1 << 20) + 10)).status == 413)
        #expect(try await rival.call(.POST, "/api/v1/resources/\(name)/binding", body: Data(#"{"ttlSeconds":600}"#.utf8)).status == 201)
        reply = try await app.send(.POST, "\(path)/brew", body: body)
        #expect(reply.status == 409 && (reply.json?["detail"]?.stringValue ?? "").contains(appName + "-rival"), "names the holder")
        #expect(try await admin.call(.DELETE, "/api/v1/resources/\(name)/binding").status == 200, "an admin releases the rival's lease")
        #expect(upstream.requests.isEmpty, "nothing was called")
        #expect(try await admin.call(.GET, "/api/v1/invocations?resource=\(name)").json?["metadata"]?["matched"] == .number(0))

        // Bound by the app: the call goes through with the merged query, headers, body and a trace.
        #expect(try await app.call(.POST, "/api/v1/resources/\(name)/binding", body: Data(#"{"ttlSeconds":300}"#.utf8)).status == 201)
        reply = try await app.send(.POST, "\(path)/brew?size=small&extra=1", body: body)
        #expect(reply.status == 200)
        let seen = try #require(upstream.requests.last)
        #expect(seen.method == "POST" && seen.path == "/ok")
        #expect(seen.query == ["size": "small", "sugar": "no", "extra": "1"], "the caller's query wins")
        #expect(seen.headers["x-api-key"] == "k-123")
        #expect(String(decoding: seen.body, as: UTF8.self) == #"{"cups":2}"#)
        let invocation = try #require(reply.json?["invocation"])
        let traceId = try #require(seen.headers["x-b3-traceid"])
        #expect(traceId.count == 32 && seen.headers["traceparent"]?.contains(traceId) == true)
        #expect(invocation["traceId"] == .string(traceId))
        #expect(invocation["state"] == .string("Succeeded") && invocation["caller"] == .string(appName) && invocation["price"] == .number(3.5))
        #expect(reply.json?["response"]?["status"] == .number(200))
        #expect(reply.json?["response"]?["body"]?["body"] == .string(#"{"cups":2}"#), "the upstream's body comes back")
        let id = try #require(invocation["id"]?.stringValue)

        // Upstream failures: recorded, answered 502/504, not charged.
        reply = try await app.send(.POST, "\(path)/explode", body: body)
        #expect(reply.status == 502 && reply.json?["invocation"]?["state"] == .string("Failed"))
        reply = try await app.send(.POST, "\(path)/wait.forever")
        #expect(reply.status == 504 && reply.json?["invocation"]?["state"] == .string("TimedOut"))
        reply = try await app.send(.POST, "\(path)/unplugged")
        #expect(
            reply.status == 502 && reply.json?["invocation"]?["reason"] == .string("UpstreamUnreachable"),
            "\(reply.status) \(String(decoding: reply.body, as: UTF8.self))")

        // The ledger: the app's records, newest first, and the total of what was charged.
        let ledger = try #require(try await app.call(.GET, "/api/v1/invocations?caller=\(appName)").json)
        #expect(ledger["metadata"]?["matched"] == .number(4) && ledger["metadata"]?["totalPrice"] == .number(3.5))
        #expect(ledger["items"]?.arrayValue?.map { $0["operation"]?.stringValue ?? "" } == ["unplugged", "wait.forever", "explode", "brew"])
        let page = try #require(try await app.call(.GET, "/api/v1/invocations?caller=\(appName)&limit=3").json)
        let next = try #require(page["metadata"]?["continue"]?.stringValue)
        let rest = try await app.call(.GET, "/api/v1/invocations?caller=\(appName)&limit=3&continue=\(next)").json
        #expect(rest?["items"]?.arrayValue?.map { $0["id"] } == [.string(id)])
        #expect(try await app.call(.GET, "/api/v1/invocations/\(id)").json?["state"] == .string("Succeeded"))
        #expect(try await rival.send(.GET, "/api/v1/invocations?caller=\(appName)").status == 403, "apps read their own ledger")
        #expect(try await rival.send(.GET, "/api/v1/invocations/\(id)").status == 404)

        // respond-async: 202 at once, the call finishes without the client.
        reply = try await app.send(.POST, "\(path)/brew", body: body, headers: [("Prefer", "respond-async")])
        #expect(reply.status == 202)
        let location = try #require(reply.header("location"))
        try await eventually("the async invocation finishes") {
            try await app.call(.GET, location).json?["state"] == .string("Succeeded")
        }

        // The integrator's queue: invoked then completed, same id, for the first call.
        var events: [(String, JSONValue)] = []
        while events.count < 10, let delivery = try await consumer.next(timeout: .seconds(10)) {
            events.append((delivery.routingKey, try JSONCoding.parse(Data(delivery.body))))
        }
        let firstCall = events.filter { $0.1["data"]?["id"] == .string(id) }
        #expect(firstCall.map(\.0) == ["device.\(name).invoked", "device.\(name).completed"])
        #expect(firstCall.map { $0.1["type"]?.stringValue ?? "" } == ["io.triad.operation.invoked", "io.triad.operation.completed"])
        #expect(firstCall.last?.1["data"]?["price"] == .number(3.5))
        try await EventRelayTests.expectValidCloudEvents(events.map { Array(JSONCoding.encode($0.1)) })
        await upstream.stop()
    }

    /// A server killed mid-call leaves the record unfinished; the restarted server fails it.
    /// A call whose upstream is slow to answer has its `invoked` event announced while it is
    /// still being made, not only with its outcome (soon after it began; the server's one-second
    /// wake-up would do it too, so LateAnnouncementsTests checks the announcing loop itself).
    @Test func aSlowCallIsAnnouncedWhileItIsMade() async throws {
        let upstream = try await Upstream.start()
        try await withServer(.sqlite, configure: { $0.invokeTimeoutSeconds = 5 }) { server in
            _ = try await server.admin.call(
                .POST, "/api/v1/resources",
                body: Docs.json(Self.device("slowpoke", upstream: upstream, closedPort: try Self.closedPort(), access: "Shared")))
            let (_, secret) = try await server.namedToken(.integrator)
            let stream = try await HardeningTests.openEventStream(port: UInt16(server.baseURL.split(separator: ":").last!)!, token: secret)
            defer { close(stream) }
            let call = Task { try await server.admin.send(.POST, "/api/v1/resources/slowpoke/operations/wait.forever") }
            let (text, _) = await HardeningTests.read(stream) { $0.contains("io.triad.operation.invoked") }
            #expect(text.contains("io.triad.operation.invoked"))
            #expect(!text.contains("io.triad.operation.completed"), "announced before the call ended")
            let ledger = try await server.admin.call(.GET, "/api/v1/invocations?resource=slowpoke").json
            #expect(ledger?["items"]?.arrayValue?.map { $0["state"] } == [.string("Running")], "the call was still being made")
            #expect(try await call.value.status == 504)
        }
        await upstream.stop()
    }

    /// An answer longer than 1 MiB is cut there and marked truncated, also one that never ends
    /// (it is not waited out until the timeout).
    @Test func aLongAnswerIsCutAt1MiB() async throws {
        let upstream = try await Upstream.start()
        try await withServer(.sqlite, configure: { $0.invokeTimeoutSeconds = 30 }) { server in
            let device: JSONValue = .object([
                "apiVersion": .string("triad.io/v1alpha1"), "kind": .string("Resource"), "metadata": .object(["name": .string("talker")]),
                "spec": .object([
                    "kind": .string("Device"), "accessMode": .string("Shared"),
                    "operations": .array(
                        ["large", "endless"].map { path in
                            .object(["name": .string(path), "httpAction": .object(["action": .string("POST"), "url": .string(upstream.baseURL + "/" + path)])])
                        }),
                ]),
            ])
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(device))
            for operation in ["large", "endless"] {
                let started = ContinuousClock.now
                let reply = try await server.admin.call(.POST, "/api/v1/resources/talker/operations/\(operation)")
                let response = reply.json?["response"]
                #expect(reply.status == 200, "\(operation)")
                #expect(response?["truncated"] == .bool(true), "\(operation)")
                #expect(response?["body"]?.stringValue?.utf8.count == 1 << 20, "\(operation)")
                #expect(reply.json?["invocation"]?["state"] == .string("Succeeded"), "\(operation)")
                // Well inside the 30 s timeout: the endless answer was cut, not waited out.
                #expect(ContinuousClock.now - started < .seconds(25), "\(operation)")
            }
        }
        await upstream.stop()
    }

    @Test func aCallCutByAKillIsMarkedFailedAtRestart() async throws {
        let upstream = try await Upstream.start()
        let dir = try TestPaths.temporaryDirectory()
        let args = ["--data-dir", dir + "/data", "--invoke-timeout", "60s"]
        let token = "kill-admin-token-\(UUID().uuidString)"
        let first = try await ServerProcess.start(args, environment: ["TRIAD_ADMIN_TOKEN": token], directory: dir)
        let admin = TriadClient(server: first.baseURL, token: token)
        _ = try await admin.call(
            .POST, "/api/v1/resources",
            body: Docs.json(Self.device("slow", upstream: upstream, closedPort: try Self.closedPort(), access: "Shared")))
        let reply = try await admin.call(.POST, "/api/v1/resources/slow/operations/wait.forever", headers: [("Prefer", "respond-async")])
        let location = try #require(reply.header("location"))
        try await eventually("the upstream is being called") { !upstream.requests.isEmpty }
        #expect(try await admin.call(.GET, location).json?["state"] == .string("Running"))
        first.kill9()

        let second = try await ServerProcess.start(args, environment: ["TRIAD_ADMIN_TOKEN": token], directory: dir)
        defer { second.stop() }
        let record = try await TriadClient(server: second.baseURL, token: token).call(.GET, location).json
        #expect(record?["state"] == .string("Failed") && record?["reason"] == .string("ServerRestarted"))
        await upstream.stop()
    }

    /// A call made for another one: an agent (the upstream) invokes Triad with its caller's token,
    /// passing on the trace and the link Triad sent it. The ledger links the two and charges the
    /// price once, to the caller's own call. A trace a client sends is continued; a forged link,
    /// or someone else's call, is not a parent.
    @Test func aCallMadeForAnotherIsLinkedToItAndChargedOnce() async throws {
        let upstream = try await Upstream.start()
        defer { Task { await upstream.stop() } }
        try await withServer(.sqlite) { server in
            var kettle = Self.device("kettle", upstream: upstream, closedPort: try Self.closedPort(), access: "Shared")
            if case .object(var root) = kettle, case .object(var spec)? = root["spec"], case .array(var ops)? = spec["operations"] {
                ops.append(
                    .object([
                        "name": .string("relay"), "price": .number(5),
                        "httpAction": .object(["action": .string("POST"), "url": .string(upstream.baseURL + "/relay")]),
                    ]))
                spec["operations"] = .array(ops)
                root["spec"] = .object(spec)
                kettle = .object(root)
            }
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(kettle))
            let (appName, appSecret) = try await server.namedToken(.app)
            let app = server.client(token: appSecret)
            let order = JSONValue.object([
                "server": .string(server.baseURL), "token": .string(appSecret), "path": .string("/api/v1/resources/kettle/operations/brew"),
            ])
            let outer = try #require(try await app.call(.POST, "/api/v1/resources/kettle/operations/relay", body: JSONCoding.encode(order)).json?["invocation"])
            #expect(outer["state"] == .string("Succeeded") && outer["charged"] == .number(5) && outer["parent"] == nil)
            let ledger = try await server.admin.call(.GET, "/api/v1/invocations?caller=\(appName)").json
            let inner = try #require(ledger?["items"]?.arrayValue?.first { $0["operation"] == .string("brew") })
            #expect(inner["parent"] == outer["id"] && inner["traceId"] == outer["traceId"], "\(inner)")
            #expect(inner["state"] == .string("Succeeded") && inner["price"] == .number(3.5) && inner["charged"] == .number(0))
            #expect(ledger?["metadata"]?["totalPrice"] == .number(5))

            // A client's own trace is continued; with no running call of its own in it, no parent.
            let traceId = "4bf92f3577b34da6a3ce929d0e0e4736"
            let traced = try #require(
                try await app.call(
                    .POST, "/api/v1/resources/kettle/operations/brew", body: Data("{}".utf8),
                    headers: [("traceparent", "00-\(traceId)-00f067aa0ba902b7-01")]
                ).json?["invocation"])
            #expect(traced["traceId"] == .string(traceId) && traced["parent"] == nil && traced["charged"] == .number(3.5))
            #expect(upstream.requests.last?.headers["x-b3-traceid"] == traceId)
            // Knowing a running call's id and trace is not enough: without the link only its upstream
            // got, a call is charged in full.
            let forged = try #require(
                try await app.call(
                    .POST, "/api/v1/resources/kettle/operations/brew", body: Data("{}".utf8),
                    headers: [("traceparent", outer["traceparent"]?.stringValue ?? ""), ("triad-invocation", "\(outer["id"]?.stringValue ?? "");0000")]
                ).json?["invocation"])
            #expect(forged["parent"] == nil && forged["charged"] == .number(3.5))
            // Garbage is not a trace: a fresh one.
            let fresh = try await app.call(.POST, "/api/v1/resources/kettle/operations/brew", body: Data("{}".utf8), headers: [("traceparent", "00-zz-1-01")])
            #expect(fresh.json?["invocation"]?["traceId"]?.stringValue?.count == 32 && fresh.json?["invocation"]?["traceId"] != .string(traceId))

            // Another caller's call in the outer trace is not made for the app's call.
            let other = server.client(token: try await server.token(.app))
            let relayedByOther = JSONValue.object([
                "server": .string(server.baseURL), "token": .string(try await server.token(.operator)),
                "path": .string("/api/v1/resources/kettle/operations/brew"),
            ])
            _ = try await other.call(.POST, "/api/v1/resources/kettle/operations/relay", body: JSONCoding.encode(relayedByOther))
            let all = try await server.admin.call(.GET, "/api/v1/invocations?limit=100").json?["items"]?.arrayValue ?? []
            let operatorsBrew = try #require(all.first { $0["operation"] == .string("brew") && $0["caller"] != .string(appName) && $0["parent"] == nil })
            #expect(operatorsBrew["charged"] == .number(3.5))
        }
    }

    @Test func theCLIBindsInvokesAndListsTheLedger() async throws {
        let upstream = try await Upstream.start()
        let dir = try TestPaths.temporaryDirectory()
        let token = "cli-admin-token-\(UUID().uuidString)"
        let server = try await ServerProcess.start(
            ["--data-dir", dir + "/data", "--invoke-timeout", "60s"],
            environment: ["TRIAD_ADMIN_TOKEN": token], directory: dir)
        defer { server.stop() }
        let admin = ["TRIAD_SERVER": server.baseURL, "TRIAD_TOKEN": token]
        _ = try await TriadClient(server: server.baseURL, token: token).call(
            .POST, "/api/v1/resources", body: Docs.json(Self.device("kettle", upstream: upstream, closedPort: try Self.closedPort())))
        var r = try await runTriad(["token", "create", "--role", "app", "--name", "kiosk"], environment: admin)
        let kiosk = ["TRIAD_SERVER": server.baseURL, "TRIAD_TOKEN": r.stdout.trimmingCharacters(in: .newlines)]

        r = try await runTriad(["invoke", "kettle", "brew", "--data", #"{"cups":1}"#], environment: kiosk)
        #expect(r.status == 1 && r.stderr.contains("bind it first") && r.stderr.contains("HTTP 409"), "\(r.stderr)")
        r = try await runTriad(["bind", "kettle", "--ttl", "2m"], environment: kiosk)
        #expect(r.status == 0 && r.stdout.hasPrefix("resource/kettle bound by kiosk until "), "\(r.stdout)\(r.stderr)")
        r = try await runTriad(["invoke", "kettle", "brew", "--data", #"{"cups":1}"#, "--query", "size=small"], environment: kiosk)
        #expect(r.status == 0, "\(r.stderr)")
        let echoed = try JSONCoding.parse(Data(r.stdout.utf8))
        #expect(echoed["query"]?["size"] == .string("small") && echoed["body"] == .string(#"{"cups":1}"#), "prints the upstream's body")
        r = try await runTriad(["invoke", "kettle", "explode"], environment: kiosk)
        #expect(r.status == 1 && r.stderr.contains("HTTP 502"))
        r = try await runTriad(["invoke", "kettle", "brew", "--data", "{not json"], environment: kiosk)
        #expect(r.status == 1 && r.stderr.contains("--data is not JSON"))
        r = try await runTriad(["invoke", "kettle", "brew", "--async", "-o", "json"], environment: kiosk)
        #expect(try r.status == 0 && (JSONCoding.parse(Data(r.stdout.utf8)))["invocation"]?["state"] == .string("Pending"))

        r = try await runTriad(["get", "invocations", "--caller", "kiosk"], environment: admin)
        #expect(r.status == 0 && r.stdout.hasPrefix("ID") && r.stdout.contains("explode") && r.stdout.contains("TOTAL CHARGED: "), "\(r.stdout)")
        r = try await runTriad(["get", "invocations", "--resource", "kettle", "-o", "json"], environment: kiosk)
        #expect(try JSONCoding.parse(Data(r.stdout.utf8))["items"]?.arrayValue?.count == 3)
        r = try await runTriad(["describe", "resource", "kettle"], environment: admin)
        #expect(r.stdout.contains("Binding:") && r.stdout.contains("kiosk") && r.stdout.contains("Invocations:") && r.stdout.contains("explode"))
        r = try await runTriad(["unbind", "kettle"], environment: kiosk)
        #expect(r.status == 0 && r.stdout == "resource/kettle unbound\n")
        await upstream.stop()
    }

    /// A lease that expired is no binding: the call is refused and nothing is recorded.
    @Test func anExpiredLeaseDoesNotInvoke() async throws {
        let upstream = try await Upstream.start()
        try await withServer(.sqlite) { server in
            _ = try await server.admin.call(
                .POST, "/api/v1/resources",
                body: Docs.json(Self.device("lapsed", upstream: upstream, closedPort: try Self.closedPort())))
            let app = server.client(token: try await server.token(.app))
            #expect(try await app.call(.POST, "/api/v1/resources/lapsed/binding", body: Data(#"{"ttlSeconds":1}"#.utf8)).status == 201)
            try await eventually("the lease has expired and been released", within: 30) {
                try await server.admin.call(.GET, "/api/v1/resources/lapsed").json?["status"]?["bound"] == .bool(false)
            }
            let reply = try await app.send(.POST, "/api/v1/resources/lapsed/operations/brew", body: Data("{}".utf8))
            #expect(reply.status == 409 && Self.problemType(reply) == "binding-required")
            #expect(upstream.requests.isEmpty)
            #expect(try await server.admin.call(.GET, "/api/v1/invocations?resource=lapsed").json?["metadata"]?["matched"] == .number(0))
        }
        await upstream.stop()
    }

    /// Never an open proxy: operations' URLs are checked when written and, against the address
    /// actually connected to, when invoked.
    @Test func onlyAllowedHostsAreCalled() async throws {
        let upstream = try await Upstream.start()
        let addresses = Addresses()
        addresses.set("upstream.triad.test", [127, 0, 0, 1])
        let resolver = HostResolver { host in
            guard let a = addresses.get(host) else { throw HostResolver.UnresolvableHost(host: host) }
            return [a]
        }
        try await withServer(.sqlite, resolver: resolver) { server in
            func doc(_ url: String) -> Data {
                Docs.json(
                    .object([
                        "apiVersion": .string("triad.io/v1alpha1"), "kind": .string("Resource"), "metadata": .object(["name": .string("far")]),
                        "spec": .object([
                            "kind": .string("Device"), "accessMode": .string("Shared"),
                            "operations": .array([
                                .object(["name": .string("turn_on"), "httpAction": .object(["action": .string("POST"), "url": .string(url)])])
                            ]),
                        ]),
                    ]))
            }
            let outside = try await server.admin.send(.PUT, "/api/v1/resources/far", body: doc("http://10.1.2.3:8080/x"))
            #expect(outside.status == 422 && (outside.json?["detail"]?.stringValue ?? "").contains("turn_on"), "names the operation")
            #expect(try await server.admin.send(.GET, "/api/v1/resources/far").status == 404, "nothing written")
            #expect(try await server.admin.send(.PUT, "/api/v1/resources/far", body: doc("http://nowhere.triad.test/x")).status == 422)

            // A name that resolves to loopback is accepted; re-pointed later, the call is refused.
            #expect(try await server.admin.send(.PUT, "/api/v1/resources/far", body: doc("http://upstream.triad.test:\(upstream.port)/ok")).status == 201)
            #expect(try await server.admin.send(.POST, "/api/v1/resources/far/operations/turn_on").status == 200)
            #expect(upstream.requests.last?.headers["host"] == "upstream.triad.test:\(upstream.port)", "the Host header keeps the name")
            addresses.set("upstream.triad.test", [10, 9, 9, 9])
            let refused = try await server.admin.send(.POST, "/api/v1/resources/far/operations/turn_on")
            #expect(refused.status == 403 && Self.problemType(refused) == "host-not-allowed")
            #expect(refused.json?["invocation"]?["reason"] == .string("HostNotAllowed"))
            #expect(upstream.requests.count == 1)
            let ledger = try await server.admin.call(.GET, "/api/v1/invocations?resource=far").json
            #expect(ledger?["items"]?.arrayValue?.first?["state"] == .string("Failed") && ledger?["metadata"]?["totalPrice"] == .number(0))
        }
        await upstream.stop()
    }

    final class Addresses: Sendable {
        private let table = Mutex<[String: [UInt8]]>([:])
        func set(_ host: String, _ address: [UInt8]) { table.withLock { $0[host] = address } }
        func get(_ host: String) -> [UInt8]? { table.withLock { $0[host] } }
    }
}
