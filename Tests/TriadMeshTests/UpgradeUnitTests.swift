import Foundation
import Synchronization
import Testing
import TriadCore
import TriadMesh

/// The pieces of the update controller that need no sockets: DiffSet, markers, blocked
/// refusals, BF holds, the record barrier, and the rendered block.
@Suite("Upgrade pieces")
struct UpgradeUnitTests {
    func setup() -> (MeshRecorder, RouteState, PinAuthority) {
        let recorder = MeshRecorder(instances: [("auth-v1-0", "auth", "v1"), ("auth-v2-0", "auth", "v2")])
        let routes = RouteState([ServiceRoutes(service: "auth", versions: ["v1", "v2"], defaultVersion: "v1")])
        return (recorder, routes, PinAuthority(recorder: recorder, routes: routes))
    }

    func rec(_ instance: String, _ trace: String, _ kind: String, route: String = "local:x", path: String = "/token") -> LogRecord {
        LogRecord(tag: "in.\(instance)", fields: ["t": trace, "k": kind, "s": "100", "d": "1", "c": "200", "r": route, "p": path])
    }

    func completed(_ trace: String) -> LogRecord {
        LogRecord(tag: "gw", fields: ["t": trace, "s": "100", "d": "5", "c": "200", "r": "default:portal-v1", "x": "via_upstream"])
    }

    @Test func diffSetIsServedMinusCompletedAndCountsRequestsInFlight() {
        let (r, _, _) = setup()
        r.ingest(rec("auth-v1-0", "a", "DownstreamStart"))
        r.ingest(rec("auth-v1-0", "b", "DownstreamStart"))
        r.ingest(rec("auth-v1-0", "a", "DownstreamEnd"))
        var d = r.drain(instances: ["auth-v1-0"])
        #expect(d.served == 2 && d.diffSet == ["a", "b"] && d.inFlight == 1)
        r.ingest(completed("a"))
        r.ingest(rec("auth-v1-0", "b", "DownstreamEnd"))
        d = r.drain(instances: ["auth-v1-0"])
        #expect(d.diffSet == ["b"] && d.inFlight == 0, "b ended at auth but its transaction has not completed")
        r.ingest(completed("b"))
        #expect(r.drain(instances: ["auth-v1-0"]).diffSet.isEmpty)
    }

    @Test func aTransactionWhoseGatewayRecordWasLostCompletesWithItsRootRequest() {
        let r = MeshRecorder(instances: [("auth-v1-0", "auth", "v1"), ("portal-v1-0", "portal", "v1")], entryService: "portal")
        r.ingest(rec("portal-v1-0", "t", "DownstreamStart"))
        r.ingest(rec("auth-v1-0", "t", "DownstreamStart"))
        #expect(r.drain(instances: ["auth-v1-0"]).diffSet == ["t"], "the root request still runs")
        r.ingest(rec("portal-v1-0", "t", "DownstreamEnd"))
        #expect(r.drain(instances: ["auth-v1-0"]).diffSet.isEmpty)
    }

    /// Sidecars of services other than the entry one log admissions only: their versions are
    /// free once the transactions that visited them completed at the gateway.
    @Test func aServiceBehindTheEntryOneIsDrainedByTheGatewayAlone() {
        let r = MeshRecorder(instances: [("auth-v1-0", "auth", "v1"), ("portal-v1-0", "portal", "v1")], entryService: "portal")
        r.ingest(rec("portal-v1-0", "a", "DownstreamStart"))
        r.ingest(rec("auth-v1-0", "a", "DownstreamStart"))
        r.ingest(rec("auth-v1-0", "a", "DownstreamStart"))
        var d = r.drain(instances: ["auth-v1-0"])
        #expect(d.served == 1 && d.diffSet == ["a"] && d.inFlight == 0, "nothing counts auth's requests in flight")
        #expect(r.drain(instances: ["portal-v1-0"]).inFlight == 1, "the entry service's request is")
        r.ingest(completed("a"))
        d = r.drain(instances: ["auth-v1-0"])
        #expect(d.diffSet.isEmpty && d.inFlight == 0)
        // An upgrade's new instance follows the same rule.
        r.addInstance(id: "auth-v2-0", service: "auth", version: "v2")
        r.ingest(rec("auth-v2-0", "b", "DownstreamStart"))
        d = r.drain(instances: ["auth-v2-0"])
        #expect(d.served == 1 && d.diffSet == ["b"] && d.inFlight == 0)
    }

    @Test func blockedRefusalsAndMarkersAreNotVisits() {
        let (r, _, _) = setup()
        r.ingest(rec("auth-v1-0", "c", "DownstreamStart", route: EnvoyConfig.blockedRoute))
        r.ingest(rec("auth-v1-0", "c", "DownstreamEnd", route: EnvoyConfig.blockedRoute))
        r.ingest(rec("auth-v1-0", "triad-marker-1", "DownstreamStart", route: "triad-marker", path: EnvoyConfig.markerPath))
        #expect(r.visits(instance: "auth-v1-0").isEmpty)
        #expect(r.markerRead(instance: "auth-v1-0", id: "triad-marker-1"))
        #expect(!r.markerRead(instance: "auth-v2-0", id: "triad-marker-1"))
        #expect(r.counters.blockedRefusals == 1)
        #expect(r.audit().transactions == 0)
    }

    @Test func bfHoldsUnpinnedCallsAndReleasesThemOntoTheNewVersion() async {
        let (r, routes, pins) = setup()
        r.ingest(rec("auth-v1-0", "old", "DownstreamStart"))
        routes.hold("auth")
        #expect(pins.decide(path: "/check/out/auth/verify", trace: "old", xVersion: nil) == .allow(xVersion: "auth-v1"), "a past visit passes")
        #expect(pins.decide(path: "/check/out/auth/token", trace: "new", xVersion: nil) == .hold(service: "auth"))
        #expect(pins.decide(path: "/check/out/proc/x", trace: "new", xVersion: nil) == .allow(xVersion: nil), "other services are not held")
        let waiting = Task { await pins.decideWaiting(path: "/check/out/auth/token", trace: "new", xVersion: "db-v1") }
        try? await Task.sleep(for: .milliseconds(50))
        routes.release("auth", to: "v2")
        #expect(await waiting.value == .allow(xVersion: "db-v1,auth-v2"), "the pin makes the sidecar choose the route again")
        // A hold that is never released gives up and uses the default.
        routes.hold("auth")
        #expect(await pins.decideWaiting(path: "/check/out/auth/token", trace: "n2", xVersion: nil, maxHold: .milliseconds(30)) == .allow(xVersion: nil))
    }

    @Test func unpinnedChecksWaitForOneSharedMarkerRound() async {
        let (_, routes, pins) = setup()
        let calls = Mutex(0)
        let barrier = RecordBarrier {
            calls.withLock { $0 += 1 }
            try? await Task.sleep(for: .milliseconds(20))
        }
        routes.setBarrier("auth", barrier)
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<10 { group.addTask { _ = await pins.decideWaiting(path: "/check/out/auth/token", trace: "t\(i)", xVersion: nil) } }
        }
        let n = calls.withLock { $0 }
        #expect(n >= 1 && n <= 3, "concurrent checks share rounds (\(n))")
        // Pinned calls never wait.
        _ = await pins.decideWaiting(path: "/check/out/auth/token", trace: "p", xVersion: "auth-v1")
        #expect(calls.withLock { $0 } == n)
    }

    @Test func aBlockedVersionAdmitsOnlyItsPinsAndRedirectsTheRest() throws {
        let plan = try EnvoyConfigTests.plan(.mesh)
        let auth = try #require(plan.instances.first { $0.id == "auth-v1-0" })
        let blocked = EnvoyConfig.inboundRoutes(auth, blocked: true)
        let routes = try #require(blocked["virtual_hosts"]?.arrayValue?.first?["routes"]?.arrayValue)
        #expect(routes.map { $0["name"]?.stringValue } == ["triad-marker", "local:auth-v1", EnvoyConfig.blockedRoute])
        #expect(routes[2]["redirect"]?["response_code"] == "TEMPORARY_REDIRECT")
        let open = try #require(EnvoyConfig.inboundRoutes(auth)["virtual_hosts"]?.arrayValue?.first?["routes"]?.arrayValue)
        #expect(open.map { $0["name"]?.stringValue } == ["triad-marker", "local:auth-v1"])
        // Callers follow the 307 inside their sidecar (a new stream that re-selects the route).
        let table = EnvoyConfig.targetRoutes("out-auth", ServiceRoutes(service: "auth", versions: ["v1", "v2"], defaultVersion: "v2"))
        let first = try #require(table["virtual_hosts"]?.arrayValue?.first?["routes"]?.arrayValue?.first)
        #expect(first["route"]?["internal_redirect_policy"]?["redirect_response_codes"] == [307])
        // rolling: one default route, pins ignored.
        let rolling = EnvoyConfig.targetRoutes("out-auth", ServiceRoutes(service: "auth", versions: ["v1", "v2"], defaultVersion: "v2", pinRoutes: false))
        #expect(rolling["virtual_hosts"]?.arrayValue?.first?["routes"]?.arrayValue?.count == 1)
    }
}
