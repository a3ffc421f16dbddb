import Foundation
import NIOHTTP1
import Testing
import TriadClient
import TriadCore
import TriadServer
import TriadTesting

/// No request crashes or hangs the server; no role exceeds its rights.
@Suite("Hardening")
struct HardeningTests {
    @Test func eventIdsPastTheLogAreRefusedAndTheServerLives() async throws {
        let dir = try TestPaths.temporaryDirectory()
        let token = "hardening-admin-token-\(UUID().uuidString)"
        let server = try await ServerProcess.start(["--data-dir", dir + "/data"], environment: ["TRIAD_ADMIN_TOKEN": token], directory: dir)
        defer { server.stop() }
        let admin = TriadClient(server: server.baseURL, token: token)
        for query in ["since=9223372036854775807", "since=9223372036854775808", "since=-1", "since=1e3"] {
            let reply = try await admin.send(.GET, "/api/v1/events?follow=false&\(query)")
            #expect(reply.status == 400, "\(query) → \(reply.status)")
        }
        let header = try await admin.send(.GET, "/api/v1/events?follow=false", headers: [("Last-Event-ID", "9223372036854775807")])
        #expect(header.status == 400)
        // Times whose offset carries them out of the four-digit years (formatting them trapped).
        _ = try await admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("edge")))
        let sample = try await admin.send(.POST, "/api/v1/resources/edge/telemetry", body: Data(#"{"ts":"0000-01-01T00:00:00+23:59","values":{"t":1}}"#.utf8))
        #expect(sample.status == 422)
        #expect(try await admin.send(.GET, "/api/v1/resources/edge/telemetry?from=0000-01-01T00:00:00%2B23:59").status == 400)
        #expect(server.process.isRunning)
        #expect(try await admin.send(.GET, "/api/v1/resources").status == 200)
    }

    @Test func sigtermEndsOpenEventStreamsAndExitsWithinTheGrace() async throws {
        let dir = try TestPaths.temporaryDirectory()
        let token = "sigterm-admin-token-\(UUID().uuidString)"
        let server = try await ServerProcess.start(
            ["--data-dir", dir + "/data", "--shutdown-grace", "5"],
            environment: ["TRIAD_ADMIN_TOKEN": token], directory: dir)
        defer { server.stop() }
        let admin = TriadClient(server: server.baseURL, token: token)
        // Raw sockets: an HTTP client's pool would queue the tenth stream behind the others.
        let port = UInt16(server.baseURL.split(separator: ":").last!)!
        var sockets: [Int32] = []
        defer { for fd in sockets { close(fd) } }
        for _ in 0..<10 { sockets.append(try await Self.openEventStream(port: port, token: token)) }
        try await eventually("ten streams are open") {
            let metrics = String(decoding: try await admin.call(.GET, "/metrics").body, as: UTF8.self)
            return metrics.split(separator: "\n").contains { $0 == "triad_event_streams 10.0" || $0 == "triad_event_streams 10" }
        }
        let start = ContinuousClock.now
        kill(server.process.processIdentifier, SIGTERM)
        // Waiting is bounded here by the test, not by the server: well past the 5 s grace.
        for _ in 0..<300 where server.process.isRunning { try await Task.sleep(for: .milliseconds(100)) }
        #expect(!server.process.isRunning, "still running \(ContinuousClock.now - start) after SIGTERM")
    }

    /// `GET /api/v1/events` on a socket of its own, left open; returns once the server answered.
    /// Blocking socket calls run here, off Swift's cooperative threads: with the server in this
    /// process, a test blocked in `recv` on one of those would starve the server it waits for.
    static func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: body()) }
        }
    }

    static func openEventStream(port: UInt16, token: String) async throws -> Int32 {
        let fd = await offPool { () -> Int32 in
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port.bigEndian
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else {
                close(fd)
                return -1
            }
            let request = "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\n\r\n"
            _ = request.withCString { send(fd, $0, strlen($0), 0) }
            var timeout = timeval(tv_sec: 60, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var buffer = [UInt8](repeating: 0, count: 512)
            guard recv(fd, &buffer, buffer.count, 0) > 0 else {
                close(fd)
                return -1
            }
            return fd
        }
        guard fd >= 0 else { throw SetupError("the event stream did not open") }
        return fd
    }

    /// Reads `fd` until `done` says so over what arrived, or the socket ends or times out.
    static func read(_ fd: Int32, timeoutSeconds: Int = 60, until done: @escaping @Sendable (String) -> Bool) async -> (text: String, ended: Bool) {
        await offPool {
            var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var buffer = [UInt8](repeating: 0, count: 4096)
            var text = ""
            while !done(text) {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n == 0 { return (text, true) }
                if n < 0 { return (text, false) }
                text += String(decoding: buffer.prefix(n), as: UTF8.self)
            }
            return (text, false)
        }
    }

    /// A 1 KB "billion laughs" body is refused before it expands; the server keeps serving.
    @Test func yamlAliasesAndOversizedDocumentsAreRefused() async throws {
        try await withServer(.sqlite) { server in
            var bomb = "apiVersion: triad.io/v1alpha1\nkind: Resource\nmetadata: {name: bomb}\nspec:\n  kind: Device\n  description:\n"
            bomb += "    a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
            for (name, previous) in zip(["b", "c", "d", "e", "f", "g", "h", "i"], ["a", "b", "c", "d", "e", "f", "g", "h"]) {
                bomb += "    \(name): &\(name) [" + Array(repeating: "*\(previous)", count: 9).joined(separator: ",") + "]\n"
            }
            #expect(bomb.utf8.count < 1200)
            let reply = try await server.admin.send(.POST, "/api/v1/resources", body: Data(bomb.utf8), contentType: "application/yaml")
            #expect(reply.status == 400 && (reply.json?["detail"]?.stringValue ?? "").contains("anchors"))
            // The same nest used twice as a mapping key: Yams hashes keys to find duplicates, which
            // took exponential time before anchors were refused by the scanner ahead of it.
            let keyed = bomb + "    m:\n      ? *i\n      : 1\n      ? *i\n      : 2\n"
            let keyedReply = try await server.admin.send(.POST, "/api/v1/resources", body: Data(keyed.utf8), contentType: "application/yaml")
            #expect(keyedReply.status == 400 && (keyedReply.json?["detail"]?.stringValue ?? "").contains("anchors"))
            let anchored = "apiVersion: triad.io/v1alpha1\nkind: Resource\nmetadata: {name: anchored}\nspec: &s {kind: Device}\n"
            #expect(try await server.admin.send(.POST, "/api/v1/resources", body: Data(anchored.utf8), contentType: "application/yaml").status == 400)
            let deep = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
            #expect(try await server.admin.send(.POST, "/api/v1/resources", body: Data(deep.utf8), contentType: "application/yaml").status == 400)
            #expect(try await server.admin.send(.GET, "/api/v1/resources").status == 200)
        }
    }

    /// `status.telemetry.values` is the latest sample, not every key ever sent.
    @Test func eachSampleReplacesTheLastInStatus() async throws {
        try await withServer(.sqlite) { server in
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("thermo")))
            func values() async throws -> JSONValue? {
                try await server.admin.call(.GET, "/api/v1/resources/thermo").json?["status"]?["telemetry"]?["values"]
            }
            _ = try await server.admin.call(.POST, "/api/v1/resources/thermo/telemetry", body: Data(#"{"temperature":21}"#.utf8))
            try await eventually("the first sample is in status") { try await values() == .object(["temperature": .number(21)]) }
            _ = try await server.admin.call(.POST, "/api/v1/resources/thermo/telemetry", body: Data(#"{"humidity":40}"#.utf8))
            try await eventually("the second sample replaced the first") { try await values() == .object(["humidity": .number(40)]) }
        }
    }

    @Test func secretsAreGuardedAtRest() async throws {
        // The admin token file: 0600 from its creation, in a 0700 data directory.
        let dir = try TestPaths.temporaryDirectory()
        let server = try await ServerProcess.start([], directory: dir)
        let mode = { (path: String) in (try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? -1 }
        #expect(mode(dir + "/.triad/admin.token") == 0o600)
        #expect(mode(dir + "/.triad") == 0o700)
        // The CLI sends the local admin token only to a server on this machine.
        let token = try String(contentsOfFile: dir + "/.triad/admin.token", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try await runTriad(["get", "resources", "--server", server.baseURL], directory: dir).status == 0)
        // A server named other than by a loopback name gets no token: here it is this machine
        // again (0.0.0.0), and it answers 401 instead of the list.
        let elsewhere = server.baseURL.replacingOccurrences(of: "127.0.0.1", with: "0.0.0.0")
        let r = try await runTriad(["get", "resources", "--server", elsewhere], directory: dir)
        #expect(r.status != 0 && r.stderr.contains("HTTP 401") && !r.stderr.contains(token), "\(r.stderr)")
        server.stop()
        // A short TRIAD_ADMIN_TOKEN is refused at start.
        let short = try await runTriad(
            ["server", "--data-dir", dir + "/short", "--listen", "127.0.0.1:0"], directory: dir,
            environment: ["TRIAD_ADMIN_TOKEN": "too-short"])
        #expect(short.status != 0 && short.stderr.contains("at least 32 characters"))
    }

    /// The local runtime runs only allowed executables, in an empty environment and a private
    /// directory; one that cannot start is shown in the resource's conditions.
    @Test func probesRunOnlyWhatIsAllowedAndPrivately() async throws {
        let url = try TestEnvironment.mqttURL()
        try await withServer(.sqlite, mqtt: url) { server in
            var doc = Docs.device("shell")
            if case .object(var root) = doc, case .object(var spec)? = root["spec"] {
                spec["probeImage"] = .string("/bin/sh")
                spec["probeArgs"] = .array([.string("-c"), .string("env > leaked; pwd >> leaked; sleep 30")])
                root["spec"] = .object(spec)
                doc = .object(root)
            }
            #expect(try await server.admin.send(.POST, "/api/v1/resources", body: Docs.json(doc)).status == 201, "an admin may write it")
            try await eventually("the refused probe shows in the conditions") {
                let status = try await ProbeControllerTests.status(server, "shell")
                let ready = status?["conditions"]?.arrayValue?.first { $0["type"] == .string("ProbeReady") }
                return status?["probePhase"] == .string("Failed") && ready?["reason"] == .string("ProbeStartFailed")
                    && (ready?["message"]?.stringValue ?? "").contains("--probe-allow")
            }
            #expect(await server.server.controller.runningProbes().isEmpty, "nothing started")
            #expect(!FileManager.default.fileExists(atPath: server.dataDir + "/probes/shell/leaked"))

            // An allowed probe sees only its own variables, in its own directory.
            let sim = TelemetryTests.name("sim")
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: try ProbeControllerTests.device(sim, args: ["--rate", "5"]))
            try await eventually("the allowed probe runs", within: 30) {
                await server.server.controller.runningProbes().contains(sim)
            }
            let pid = try #require(Self.pid(ofProbeIn: server.dataDir + "/probes/\(sim)"))
            let environ = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ"))) ?? Data()
            let keys = Set(environ.split(separator: 0).compactMap { String(decoding: $0, as: UTF8.self).split(separator: "=").first.map(String.init) })
            #expect(keys.isSubset(of: ["TRIAD_RESOURCE", "TRIAD_API_URL", "TRIAD_TOKEN", "TRIAD_MQTT_URL"]) && keys.contains("TRIAD_TOKEN"), "\(keys)")
            let cwd = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd")
            #expect(cwd.hasSuffix("/probes/\(sim)"))
            let mode = try FileManager.default.attributesOfItem(atPath: server.dataDir + "/probes/\(sim)")[.posixPermissions] as? Int
            #expect(mode == 0o700)
        }
    }

    /// The pid of the process whose working directory is `directory`.
    static func pid(ofProbeIn directory: String) -> Int32? {
        let real = URL(fileURLWithPath: directory).resolvingSymlinksInPath().path
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), let cwd = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(entry)/cwd") else { continue }
            if cwd == real { return pid }
        }
        return nil
    }

    /// Whoever may read may watch: an app every event, a device only its own resource's.
    @Test func everyReaderWatchesWhatItMayRead() async throws {
        try await withServer(.sqlite) { server in
            for name in ["mine", "theirs"] { _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(name))) }
            func subjects(_ client: TriadClient) async throws -> Set<String> {
                let log = String(decoding: try await client.call(.GET, "/api/v1/events?follow=false&since=0").body, as: UTF8.self)
                return Set(
                    try log.split(separator: "\n").filter { $0.hasPrefix("data:") }
                        .compactMap { try JSONCoding.parse(Data($0.dropFirst(5).drop { $0 == " " }.utf8))["subject"]?.stringValue })
            }
            let app = server.client(token: try await server.token(.app))
            #expect(try await subjects(app).isSuperset(of: ["mine", "theirs"]))
            let device = server.client(token: try await server.token(.device, resource: "mine"))
            #expect(try await subjects(device) == ["mine"])
        }
    }

    /// A device token belongs to the resource it was made for, not to its name.
    @Test func aDeletedResourceTakesItsDeviceTokensWithIt() async throws {
        try await withServer(.sqlite) { server in
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("meter")))
            let device = server.client(token: try await server.token(.device, resource: "meter"))
            let sample = Data(#"{"kwh":1}"#.utf8)
            #expect(try await device.send(.POST, "/api/v1/resources/meter/telemetry", body: sample).status == 202)
            _ = try await server.admin.call(.DELETE, "/api/v1/resources/meter")
            #expect(try await device.send(.GET, "/api/v1/resources/meter").status == 401)
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("meter")))
            #expect(
                try await device.send(.POST, "/api/v1/resources/meter/telemetry", body: sample).status == 401,
                "a new resource of the same name does not bring it back")
        }
    }

    /// `/readyz` says which part is down to anyone, and why only to an admin.
    @Test func readinessDetailsAreForAdmins() async throws {
        try await withServer(.sqlite, amqp: "amqp://guest:guest@127.0.0.1:1") { server in
            let anonymous = TriadClient(server: server.baseURL, token: nil)
            try await eventually("the broker is reported down") {
                try await anonymous.send(.GET, "/readyz").json?["checks"]?["amqp"]?["ok"] == .bool(false)
            }
            let open = try await anonymous.send(.GET, "/readyz")
            #expect(open.status == 503 && !String(decoding: open.body, as: UTF8.self).contains("127.0.0.1"))
            let app = server.client(token: try await server.token(.app))
            #expect(!String(decoding: try await app.send(.GET, "/readyz").body, as: UTF8.self).contains("127.0.0.1"))
            let admin = try await server.admin.send(.GET, "/readyz")
            #expect(
                admin.status == 503 && String(decoding: admin.body, as: UTF8.self).contains("127.0.0.1:1"), "\(String(decoding: admin.body, as: UTF8.self))")
        }
    }

    /// A revoked token's open streams end; one token holds a bounded number of streams.
    @Test func eventStreamsFollowTheirToken() async throws {
        try await withServer(.sqlite, configure: { $0.maxStreamsPerToken = 2 }) { server in
            let (name, secret) = try await server.namedToken(.integrator)
            let port = UInt16(server.baseURL.split(separator: ":").last!)!
            let first = try await Self.openEventStream(port: port, token: secret)
            let second = try await Self.openEventStream(port: port, token: secret)
            defer {
                close(first)
                close(second)
            }
            let third = try await server.client(token: secret).send(.GET, "/api/v1/events?follow=false")
            #expect(third.status == 429 && third.json?["type"] == .string("https://triad.io/problems/too-many-streams"))
            #expect(try await server.admin.send(.GET, "/api/v1/events?follow=false").status == 200, "other tokens are served")

            _ = try await server.admin.call(.DELETE, "/api/v1/tokens/\(name)")
            // Both streams end (the server closes them), well before the test gives up.
            for fd in [first, second] {
                let (text, closed) = await Self.read(fd) { $0.contains("0\r\n\r\n") }
                #expect(closed || text.contains("0\r\n\r\n"), "the revoked token's stream was closed")
            }
        }
    }

    /// Open streams share one reader of the event log: writes reach every stream, and no stream
    /// polls the database while it keeps up.
    @Test func eventStreamsShareOneDatabaseReader() async throws {
        try await withServer(.sqlite) { server in
            let port = UInt16(server.baseURL.split(separator: ":").last!)!
            var streams: [Int32] = []
            for _ in 0..<10 { streams.append(try await Self.openEventStream(port: port, token: server.adminToken)) }
            defer { for fd in streams { close(fd) } }
            let before = server.server.eventTail.logReads
            let names = (0..<3).map { _ in TelemetryTests.name("shared") }
            for name in names { _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(name))) }
            for fd in streams {
                let (text, _) = await Self.read(fd) { $0.contains(names[2]) }
                #expect(names.allSatisfy { text.contains($0) }, "every stream got every write")
            }
            let after = server.server.eventTail.logReads
            #expect(after.streams == before.streams, "no stream read the log itself")
            #expect(after.tail > before.tail, "the tail did")
        }
    }

    /// Samples for names that do not exist cost no lasting memory.
    @Test func samplesForUnknownNamesLeaveTheLimiterFlat() async throws {
        try await withServer(.sqlite) { server in
            let before = server.server.telemetry.trackedNames
            for i in 0..<10_000 {
                let name = "ghost-\(i)-\(UInt32.random(in: 0...UInt32.max))"
                do throws(TelemetryRejection) {
                    _ = try await server.server.telemetry.accept(resource: name, payload: Array(#"{"t":1}"#.utf8), source: "test")
                } catch {
                    #expect(error == TelemetryRejection.unknownResource)
                }
            }
            let after = server.server.telemetry.trackedNames
            #expect(after.buckets == before.buckets, "no bucket for a resource that does not exist")
            #expect(after.kinds <= before.kinds + TelemetryIngest.maxUnknownCached, "\(after.kinds) names cached")
        }
    }

    /// Times in a status are data: a heartbeat or a sample dated in year 9999 asks the controller
    /// to look again in thousands of years, which it caps instead of overflowing its clock; it
    /// goes on judging every other resource.
    @Test func timesFarInTheFutureLeaveTheControllerRunning() async throws {
        try await withServer(.sqlite, configure: { $0.probePolicy.heartbeatTimeout = 1 }) { server in
            let future = "9999-12-31T23:59:59.999Z"
            for name in ["far-future", "silent"] {
                _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(name)))
            }
            _ = try await server.admin.call(
                .PATCH, "/api/v1/resources/far-future/status",
                body: Data(
                    #"{"status":{"conditions":[{"type":"AgentReady","status":"True","reason":"Serving","lastHeartbeatTime":"\#(future)"}],"telemetry":{"lastSeen":"\#(future)"}}}"#
                        .utf8),
                contentType: "application/merge-patch+json")
            let past = Timestamp.format(Date())
            _ = try await server.admin.call(
                .PATCH, "/api/v1/resources/silent/status",
                body: Data(
                    #"{"status":{"phase":"Running","conditions":[{"type":"AgentReady","status":"True","reason":"Serving","lastHeartbeatTime":"\#(past)"}]}}"#
                        .utf8),
                contentType: "application/merge-patch+json")
            try await eventually("the controller still fails the silent agent", within: 30) {
                try await ProbeControllerTests.status(server, "silent")?["phase"] == .string("Failed")
            }
            #expect(try await server.admin.call(.GET, "/api/v1/resources/far-future").json?["status"]?["phase"] != .string("Failed"))
        }
    }

    /// Found by reading the parsers: each of these trapped (or could) the server before.
    @Test func numbersAndNestingPastTheirBoundsAreRefused() async throws {
        try await withServer(.sqlite) { server in
            // A base-60 YAML integer past Int's range (Yams multiplies without overflow checks).
            let sexagesimal =
                "apiVersion: triad.io/v1alpha1\nkind: Resource\nmetadata: {name: s60}\nspec: {kind: Device, description: x}\nx: 9000000000000000000:0\n"
            let s60 = try await server.admin.send(.POST, "/api/v1/resources", body: Data(sexagesimal.utf8), contentType: "application/yaml")
            #expect(s60.status == 400 && (s60.json?["detail"]?.stringValue ?? "").contains("out of range"), "\(s60.status)")

            // An operation's port outside 1…65535 (the HTTP client traps on it).
            for (url, status) in [("http://127.0.0.1:70000/x", 422), ("http://127.0.0.1:0/x", 422), ("http://h:/x", 422), ("http://[::1]:8080/x", 201)] {
                var doc = Docs.device("port-\(status)-\(url.count)")
                doc = MergePatch.apply(
                    .object([
                        "spec": .object([
                            "operations": .array([.object(["name": .string("go"), "httpAction": .object(["action": .string("GET"), "url": .string(url)])])])
                        ])
                    ]),
                    to: doc)
                let reply = try await server.admin.send(.POST, "/api/v1/resources", body: Docs.json(doc))
                #expect(reply.status == status, "\(url) → \(reply.status)")
            }

            // Telemetry values deep enough to push the resource past the parser's depth limit.
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("deep")))
            let deep = String(repeating: #"{"a":"#, count: 40) + "1" + String(repeating: "}", count: 40)
            let sample = try await server.admin.send(.POST, "/api/v1/resources/deep/telemetry", body: Data(#"{"values":\#(deep)}"#.utf8))
            #expect(sample.status == 422 && (sample.json?["detail"]?.stringValue ?? "").contains("32"), "\(sample.status)")
            let bare = try await server.admin.send(.POST, "/api/v1/resources/deep/telemetry", body: Data(deep.utf8))
            #expect(bare.status == 422)
            #expect(try await server.admin.call(.GET, "/api/v1/resources/deep").json?["status"]?["telemetry"] == nil)

            // Methods the API does not use (the HTTP parser knows dozens) share one metrics label.
            #expect(try await server.admin.send(.RAW(value: "PROPFIND"), "/api/v1/resources").status == 405)
            let metrics = String(decoding: try await server.admin.call(.GET, "/metrics").body, as: UTF8.self)
            #expect(!metrics.contains("PROPFIND"))
            #expect(metrics.contains(#"method="other""#))
            #expect(try await server.admin.send(.GET, "/api/v1/resources").status == 200)
        }
    }

    /// A status is bounded (64 KiB): more is a 422 and nothing changes.
    @Test func anOversizedStatusIsRefused() async throws {
        try await withServer(.sqlite) { server in
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("big")))
            let huge = String(repeating: "x", count: 70_000)
            let reply = try await server.admin.send(
                .PATCH, "/api/v1/resources/big/status",
                body: Data(#"{"status":{"location":{"note":"\#(huge)"}}}"#.utf8),
                contentType: "application/merge-patch+json")
            #expect(reply.status == 422 && (reply.json?["detail"]?.stringValue ?? "").contains("65536"))
            #expect(try await server.admin.call(.GET, "/api/v1/resources/big").json?["status"]?["location"] == nil)
        }
    }

    /// A connection that sends nothing (or a request too slowly) is closed; an open event stream is not.
    @Test func idleConnectionsAreClosedButStreamsAreNot() async throws {
        try await withServer(.sqlite, configure: { $0.idleTimeoutSeconds = 1 }) { server in
            let port = UInt16(server.baseURL.split(separator: ":").last!)!
            let stream = try await Self.openEventStream(port: port, token: server.adminToken)
            defer { close(stream) }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port.bigEndian
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            _ = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            _ = "GET /api/v1/reso".withCString { send(fd, $0, strlen($0), 0) }  // and nothing more
            let trickled = await Self.read(fd) { _ in false }
            #expect(trickled.ended, "the server closed the trickling connection")
            // The stream, open well past the idle timeout, still gets its events.
            try await Task.sleep(for: .seconds(2))
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("late")))
            let got = await Self.read(stream) { $0.contains("io.triad.resource.created") }.text
            #expect(got.contains("io.triad.resource.created"))
        }
    }

    /// What a probe runs is the server's own process: only admins set it.
    @Test func onlyAnAdminSetsWhatAProbeRuns() async throws {
        try await withServer(.sqlite) { server in
            let op = server.client(token: try await server.token(.operator))
            var doc = Docs.device("shell")
            if case .object(var root) = doc, case .object(var spec)? = root["spec"] {
                spec["probeImage"] = .string("/bin/sh")
                spec["probeArgs"] = .array([.string("-c"), .string("cat admin.token")])
                spec["probeEnabled"] = .bool(true)
                root["spec"] = .object(spec)
                doc = .object(root)
            }
            let refused = try await op.send(.POST, "/api/v1/resources", body: Docs.json(doc))
            #expect(refused.status == 403 && (refused.json?["detail"]?.stringValue ?? "").contains("probeImage"))
            #expect(try await op.send(.PUT, "/api/v1/resources/shell", body: Docs.json(doc)).status == 403)
            #expect(try await server.admin.send(.GET, "/api/v1/resources/shell").status == 404, "nothing written, nothing started")

            // The operator still writes everything else of a resource an admin gave a probe
            // (disabled here: nothing needs to run).
            if case .object(var root) = doc, case .object(var spec)? = root["spec"] {
                spec["probeEnabled"] = .bool(false)
                root["spec"] = .object(spec)
                doc = .object(root)
            }
            #expect(try await server.admin.send(.POST, "/api/v1/resources", body: Docs.json(doc)).status == 201)
            let relabel = try await op.send(
                .PATCH, "/api/v1/resources/shell", body: Data(#"{"metadata":{"labels":{"floor":"3"}}}"#.utf8),
                contentType: "application/merge-patch+json")
            #expect(relabel.status == 200)
            let patch = try await op.send(
                .PATCH, "/api/v1/resources/shell", body: Data(#"{"spec":{"probeArgs":["-c","id"]}}"#.utf8),
                contentType: "application/merge-patch+json")
            #expect(patch.status == 403)
            #expect(try await server.admin.call(.GET, "/api/v1/resources/shell").json?["spec"]?["probeArgs"]?.arrayValue?.last == .string("cat admin.token"))
        }
    }
}
