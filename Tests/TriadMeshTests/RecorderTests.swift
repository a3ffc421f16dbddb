import Foundation
import Testing
import TriadCore
import TriadMesh

/// Trace managers, pin learning and the audit, fed records as Envoy ships them (no sockets).
@Suite("Trace managers and pins")
struct RecorderTests {
    func recorder() -> (MeshRecorder, PinAuthority) {
        let recorder = MeshRecorder(instances: [("auth-v1-0", "auth", "v1"), ("auth-v2-0", "auth", "v2"), ("proc-v1-0", "proc", "v1")])
        let routes = RouteState([
            ServiceRoutes(service: "auth", versions: ["v1", "v2"], defaultVersion: "v1"),
            ServiceRoutes(service: "proc", versions: ["v1"], defaultVersion: "v1"),
        ])
        return (recorder, PinAuthority(recorder: recorder, routes: routes))
    }

    func start(_ tag: String, _ trace: String, at s: Double = 100) -> LogRecord {
        LogRecord(tag: "in.\(tag)", fields: ["t": trace, "k": "DownstreamStart", "s": String(s), "d": "0", "c": "0"])
    }

    func end(_ tag: String, _ trace: String, at s: Double = 100, ms: Int = 5) -> LogRecord {
        LogRecord(tag: "in.\(tag)", fields: ["t": trace, "k": "DownstreamEnd", "s": String(s), "d": String(ms), "c": "200"])
    }

    @Test func aVisitIsRecordedWhenAdmittedAndCompletedAtItsEnd() {
        let (r, _) = recorder()
        r.ingest(start("auth-v1-0", "T1", at: 100))
        var v = r.visits(instance: "auth-v1-0")
        #expect(v.count == 1 && v[0].traceId == "t1" && v[0].end == nil, "in flight is already a visit")
        r.ingest(end("auth-v1-0", "T1", at: 100, ms: 250))
        v = r.visits(instance: "auth-v1-0")
        #expect(v.first?.end == 100.25)
    }

    /// Trace ids compare trimmed and in lower case; "-" (Envoy's "absent") and blanks are no trace.
    @Test func traceIdsAreTrimmedAndLowerCased() {
        let (r, _) = recorder()
        for (i, raw) in ["abc1", " AbC2\t", "\u{00A0}abc3\u{00A0}", "-", " ", ""].enumerated() {
            r.ingest(start(i % 2 == 0 ? "auth-v1-0" : "proc-v1-0", raw))
        }
        let traces = (r.visits(instance: "auth-v1-0") + r.visits(instance: "proc-v1-0")).map(\.traceId).sorted()
        #expect(traces == ["abc1", "abc2", "abc3"])
    }

    @Test func meshPinsFollowTheFirstVisit() {
        let (r, pins) = recorder()
        // No visit yet: nothing to attach.
        #expect(pins.decide(path: "/check/out/auth/verify", trace: "t1", xVersion: nil) == .allow(xVersion: nil))
        r.ingest(start("auth-v1-0", "t1"))
        #expect(pins.decide(path: "/check/out/auth/verify", trace: "T1", xVersion: nil) == .allow(xVersion: "auth-v1"))
        #expect(pins.decide(path: "/check/out/auth/verify", trace: "t1", xVersion: "db-v3") == .allow(xVersion: "db-v3,auth-v1"))
        // A request that pins the service itself is left to the routes.
        #expect(pins.decide(path: "/check/out/auth/verify", trace: "t1", xVersion: "auth-v2") == .allow(xVersion: nil))
        // Other services and traces are not affected.
        #expect(pins.decide(path: "/check/out/proc/process", trace: "t1", xVersion: nil) == .allow(xVersion: nil))
        #expect(pins.decide(path: "/check/out/auth/verify", trace: "t2", xVersion: nil) == .allow(xVersion: nil))
        // A later visit elsewhere does not move the pin.
        r.ingest(start("auth-v2-0", "t1"))
        #expect(pins.decide(path: "/check/out/auth/verify", trace: "t1", xVersion: nil) == .allow(xVersion: "auth-v1"))
    }

    @Test func theGatewayLearnsExplicitPinsAndRefusesUnknownVersions() {
        let (r, pins) = recorder()
        #expect(pins.decide(path: "/check/gw/portal/order", trace: "t9", xVersion: "auth-v2") == .allow(xVersion: nil))
        #expect(pins.decide(path: "/check/out/auth/token", trace: "t9", xVersion: nil) == .allow(xVersion: "auth-v2"))
        guard case .deny(let problem) = pins.decide(path: "/check/gw/portal/order", trace: "t8", xVersion: "proc-v1, auth-v7") else {
            Issue.record("an unknown version is refused")
            return
        }
        #expect(problem["status"] == .number(503))
        #expect(problem["detail"]?.stringValue?.contains("auth to v7") == true)
        #expect(r.counters.unknownPinRefusals == 1)
        // Pins of services outside the mesh are not ours to judge.
        #expect(pins.decide(path: "/check/gw/portal/order", trace: "t7", xVersion: "billing-v9") == .allow(xVersion: nil))
    }

    @Test func theAuditCountsTransactionsAndFindsTwoVersionsOfOneService() {
        let (r, _) = recorder()
        for t in ["a", "b", "c"] {
            r.ingest(start("auth-v1-0", t))
            r.ingest(start("proc-v1-0", t))
            r.ingest(LogRecord(tag: "gw", fields: ["t": t, "s": "100", "d": "9", "c": "200", "r": "default:portal-v1", "x": "via_upstream"]))
        }
        r.ingest(start("auth-v2-0", "c"))
        r.ingest(LogRecord(tag: "gw", fields: ["t": "d", "s": "100", "d": "1", "c": "503", "r": "x", "x": "ext_authz_denied"]))
        let report = r.audit()
        #expect(report.transactions == 3, "a refused request is no transaction")
        #expect(report.inconsistent == 1)
        #expect(report.traces == [AuditReport.Inconsistent(traceId: "c", service: "auth", versions: ["v1", "v2"])])
        let json = String(decoding: JSONCoding.encode(report), as: UTF8.self)
        #expect(json == #"{"failed":0,"failures":[],"inconsistent":1,"traces":[{"service":"auth","traceId":"c","versions":["v1","v2"]}],"transactions":3}"#)
    }

    /// Memory stays bounded on a long-running mesh: completed transactions are forgotten,
    /// the audit's totals are not, and what still runs is kept.
    @Test func pruningForgetsOldCompletedTransactionsButNotTheirAudit() {
        let (r, _) = recorder()
        for t in ["a", "b", "c"] {
            r.ingest(start("auth-v1-0", t))
            r.ingest(end("auth-v1-0", t))
            r.ingest(
                LogRecord(tag: "gw", fields: ["t": t, "s": "100", "d": "9", "c": t == "b" ? "503" : "200", "x": t == "b" ? "ext_authz_error" : "via_upstream"]))
        }
        r.ingest(start("auth-v2-0", "c"))
        r.ingest(end("auth-v2-0", "c"))
        r.ingest(start("auth-v1-0", "late", at: 500))  // still running: kept
        r.ingest(LogRecord(tag: "gw", fields: ["t": "new", "s": "400", "d": "9", "c": "200", "x": "via_upstream"]))
        let before = r.audit()
        #expect(r.prune(endedBefore: 300) == 3)
        #expect(r.audit() == before, "the audit is unchanged")
        #expect(Set(r.visits(instance: "auth-v1-0").map(\.traceId)) == ["late"])
        #expect(r.visits(instance: "auth-v2-0").isEmpty)
        #expect(r.drain(instances: ["auth-v1-0"]).diffSet == ["late"], "what runs is still drained")
        #expect(r.prune(endedBefore: 300) == 0)
        #expect(before.transactions == 5 && before.inconsistent == 1 && before.failed == 1)
    }

    /// A transaction that enters the gateway again (an agent calling another through Triad)
    /// completes when its last request at the gateway ends, not when the inner one does.
    @Test func aTransactionThatReentersTheGatewayCompletesWhenItsOuterRequestEnds() {
        let (r, _) = recorder()
        func gw(_ kind: String, _ trace: String, code: String = "200", x: String = "via_upstream") -> LogRecord {
            LogRecord(tag: "gw", fields: ["t": trace, "k": kind, "s": "100", "d": kind == "DownstreamStart" ? "-" : "9", "c": code, "x": x])
        }
        r.ingest(gw("DownstreamStart", "t"))  // the app's request, to the person agent
        r.ingest(start("proc-v1-0", "t"))
        r.ingest(gw("DownstreamStart", "t"))  // the person's call through Triad, to the device
        r.ingest(start("auth-v1-0", "t"))
        r.ingest(end("auth-v1-0", "t"))
        r.ingest(gw("DownstreamEnd", "t"))
        #expect(r.drain(instances: ["auth-v1-0"]).diffSet == ["t"], "the outer request still runs: auth v1 is not drained")
        // A nested request the gateway refused itself counts down too, and completes nothing.
        r.ingest(gw("DownstreamStart", "t"))
        r.ingest(gw("DownstreamEnd", "t", code: "503", x: "ext_authz_denied"))
        #expect(r.drain(instances: ["auth-v1-0"]).diffSet == ["t"])
        r.ingest(end("proc-v1-0", "t"))
        r.ingest(gw("DownstreamEnd", "t"))
        #expect(r.drain(instances: ["auth-v1-0"]).diffSet.isEmpty)
        #expect(r.audit().transactions == 1)
        // Without its arrival record (lost) a transaction completes at its first end, as before.
        r.ingest(start("auth-v1-0", "u"))
        r.ingest(end("auth-v1-0", "u"))
        r.ingest(gw("DownstreamEnd", "u"))
        #expect(r.drain(instances: ["auth-v1-0"]).diffSet.isEmpty)
    }

    /// With gateway routes, the gateway's pin check is about the service the path enters.
    @Test func theGatewaysPinCheckFollowsItsRoutesByPath() {
        let recorder = MeshRecorder(instances: [("auth-v1-0", "auth", "v1"), ("proc-v1-0", "proc", "v1")])
        let routes = RouteState([
            ServiceRoutes(service: "auth", versions: ["v1", "v2"], defaultVersion: "v2"),
            ServiceRoutes(service: "proc", versions: ["v1"], defaultVersion: "v1"),
        ])
        let gateway = MeshConfig.Gateway(
            listen: HostPort(host: "127.0.0.1", port: 8000), service: "proc", routes: [.init(prefix: "/agents/auth/", service: "auth")])
        let pins = PinAuthority(recorder: recorder, routes: routes, gateway: gateway)
        recorder.ingest(start("auth-v1-0", "t1"))
        recorder.ingest(start("proc-v1-0", "t1"))
        #expect(pins.decide(path: "/check/gw/proc/agents/auth/operations/brew", trace: "t1", xVersion: nil) == .allow(xVersion: "auth-v1"))
        #expect(pins.decide(path: "/check/gw/proc/agents/person/operations/x", trace: "t1", xVersion: nil) == .allow(xVersion: "proc-v1"))
        #expect(pins.decide(path: "/check/gw/proc/agents/authx", trace: "t1", xVersion: nil) == .allow(xVersion: "proc-v1"))
    }

    @Test func theAuditListsTransactionsThatFailedAtTheGatewayWithEnvoysReason() {
        let (r, _) = recorder()
        r.ingest(LogRecord(tag: "gw", fields: ["t": "ok", "s": "100", "d": "9", "c": "200", "x": "via_upstream"]))
        r.ingest(LogRecord(tag: "gw", fields: ["t": "app", "s": "102", "d": "9", "c": "502", "x": "via_upstream"]))
        r.ingest(LogRecord(tag: "gw", fields: ["t": "mesh", "s": "101", "d": "9", "c": "503", "x": "ext_authz_error"]))
        r.ingest(LogRecord(tag: "gw", fields: ["t": "client", "s": "103", "d": "9", "c": "404", "x": "via_upstream"]))
        let report = r.audit()
        #expect(report.transactions == 4)
        #expect(report.failed == 2)
        #expect(
            report.failures == [
                .init(traceId: "mesh", status: 503, detail: "ext_authz_error"),
                .init(traceId: "app", status: 502, detail: "via_upstream"),
            ], "in order of start")
    }

    @Test func envoysFluentdForwardMessagesDecode() throws {
        // Bytes captured from Envoy 1.40's fluentd logger (one entry per message).
        let hex =
            "92b1696e626f756e642e617574682e76312e309192ce6b07960c87a16300a16400a16baf446f776e73747265616d5374617274a172a27231a173b1313739353635393237362e393338353135a174a6616263313233a178c0"
        var bytes = [UInt8]()
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            bytes.append(UInt8(hex[i..<j], radix: 16)!)
            i = j
        }
        var offset = 0
        let value = try bytes.withUnsafeBytes { try MsgPackDecoder.decode($0, offset: &offset) }
        #expect(offset == bytes.count)
        let records = LogRecord.entries(of: try #require(value))
        #expect(
            records == [
                LogRecord(tag: "inbound.auth.v1.0", fields: ["c": "0", "d": "0", "k": "DownstreamStart", "r": "r1", "s": "1795659276.938515", "t": "abc123"])
            ])
        // Half a message is not a message yet.
        var half = 0
        let partial = try bytes.prefix(40).withUnsafeBytes { try MsgPackDecoder.decode(UnsafeRawBufferPointer($0), offset: &half) }
        #expect(partial == nil && half == 0)
    }
}
