import Foundation
import NIOHTTP1
import Testing
import TriadCore
import TriadMesh
import TriadProcess
import TriadTesting

/// `triad upgrade` on the example system of agents/examples (Python services that only propagate
/// x-b3-traceid) under continuous load from agents/examples/python/loadgen.py: 200
/// transactions per second, a tenth of them sleeping 400 ms between their two calls to Auth,
/// so some straddle every step. Auth v2 is not in the mesh file: the upgrade starts it.
@Suite("Upgrades end to end", .serialized)
struct UpgradeEndToEndTests {
    /// The load generator's summary.
    struct Load {
        var sent: Int
        var ok: Int
        var failed: Int
        var slowSent: Int
        var achievedRPS: Double
        var raw: String
    }

    static func num(_ v: JSONValue?) -> Int? {
        if case .number(let d)? = v { return Int(d) }
        return nil
    }

    /// Starts the load generator for `seconds`; the task returns its summary.
    static func load(_ mesh: TestMesh, seconds: Double) throws -> Task<Load, any Error> {
        let out = mesh.directory + "/load.json"
        let err = out + ".err"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        _ = FileManager.default.createFile(atPath: err, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [
            "python3", MeshTestSupport.examples + "/loadgen.py", mesh.gateway, "--rate", "200", "--duration", String(seconds),
            "--slow-fraction", "0.1", "--slow-ms", "400", "--seed", "7", "--trace-log", mesh.directory + "/traces.jsonl",
        ]
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: err))
        try p.run()
        return Task {
            while p.isRunning { try await Task.sleep(for: .milliseconds(50)) }
            let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
            guard let doc = try? JSONCoding.parse(Data(text.utf8)), let sent = num(doc["sent"]) else {
                throw SetupError("loadgen failed (\(p.terminationStatus)): \(text) \((try? String(contentsOfFile: err, encoding: .utf8)) ?? "")")
            }
            return Load(
                sent: sent, ok: num(doc["ok"]) ?? 0, failed: num(doc["failed"]) ?? -1,
                slowSent: num(doc["slow_sent"]) ?? 0,
                achievedRPS: {
                    if case .number(let d)? = doc["achieved_rps"] { return d }
                    return 0
                }(), raw: text)
        }
    }

    struct Outcome {
        var run: ProgramRun
        var load: Load
        var audit: AuditReport
        var status: MeshStatus
        var upgrade: UpgradeStatus
    }

    /// Load for 7 s; the upgrade starts after 1.5 s.
    static func upgradeUnderLoad(_ mesh: TestMesh, _ extra: [String]) async throws -> Outcome {
        let load = try Self.load(mesh, seconds: 7)
        try await Task.sleep(for: .milliseconds(1500))
        let run = try await mesh.upgrade(extra)
        let summary = try await load.value
        // The last records reach the trace managers within milliseconds.
        try await Task.sleep(for: .milliseconds(300))
        return Outcome(
            run: run, load: summary, audit: try await mesh.client.audit(), status: try await mesh.client.status(),
            upgrade: try await mesh.client.upgrade(of: "auth"))
    }

    static func auth(_ status: MeshStatus) -> MeshStatus.Service? { status.services.first { $0.name == "auth" } }

    static func check(_ o: Outcome, _ strategy: String) {
        #expect(o.load.sent >= 1400 && o.load.slowSent > 50, "200 tx/s for 7 s, some slow: \(o.load.raw)")
        #expect(o.load.failed == 0, "\(strategy): no transaction fails: \(o.load.raw); the gateway saw: \(o.audit.failures.prefix(10))")
        #expect(o.audit.inconsistent == 0, "\(strategy): \(o.audit.traces.prefix(5))")
        #expect(o.audit.transactions >= o.load.sent)
    }

    @Test(arguments: ["CV", "BF"])
    func upgradeUnderLoadIsConsistentAndRetiresV1(strategy: String) async throws {
        try await MeshTestSupport.withMesh(authV2: false) { mesh in
            let o = try await Self.upgradeUnderLoad(mesh, ["--strategy", strategy, "--drain-timeout", "30s"])
            #expect(o.run.status == 0, "\(o.run.stdout)\(o.run.stderr)")
            Self.check(o, strategy)
            #expect(o.upgrade.phase == .completed)
            #expect(Self.auth(o.status)?.versions.map(\.version) == ["v2"] && Self.auth(o.status)?.defaultVersion == "v2", "v1 retired, rules back to v2 only")
            if let pid = mesh.pid("auth-v1-0") { #expect(!ChildProcess.alive(pid), "auth v1's process stopped") }
            let saved = Set(MeshState.load(from: mesh.directory)?.processes.map(\.id) ?? [])
            #expect(saved.contains("auth-v2-0") && !saved.contains("auth-v1-0"), "the state file lists what runs now: \(saved)")
            let steps = o.upgrade.steps.map(\.name)
            if strategy == "CV" {
                #expect(steps == ["started", "pin-routes", "default-switched", "blocked", "locked", "retired", "cleaned", "completed"])
                #expect(o.run.stdout.contains("locked: auth v1's trace set"), "\(o.run.stdout)")
            } else {
                #expect(steps == ["started", "pin-routes", "holding", "default-switched", "released", "retired", "cleaned", "completed"])
            }
            #expect(o.run.stdout.contains("completed: auth runs v2 only"))
            #expect(o.upgrade.switchedAfter != nil && o.upgrade.retiredAfter != nil)
            // After the upgrade every new transaction runs on v2.
            let after = try await MeshTestSupport.send(
                .POST, "\(mesh.gateway)/order", headers: ["x-b3-traceid": MeshTestSupport.newTraceID()], body: #"{"item":"tea"}"#)
            #expect(after.json?["versions"]?["auth.verify"]?.stringValue == "v2")
        }
    }

    /// WF under continuous load: v1 is never free, so the drain deadline ends it (report
    /// the documented WF time-out); nothing changed and nothing failed.
    @Test func wfTimesOutUnderLoadWithNothingLost() async throws {
        try await MeshTestSupport.withMesh(authV2: false) { mesh in
            let o = try await Self.upgradeUnderLoad(mesh, ["--strategy", "WF", "--drain-timeout", "3s"])
            #expect(o.run.status == 1)
            #expect(o.run.stderr.contains("WF time-out: auth v1 was never free"), "\(o.run.stderr)")
            Self.check(o, "WF")
            #expect(o.upgrade.phase == .rolledBack)
            #expect(Self.auth(o.status)?.versions.map(\.version) == ["v1"] && Self.auth(o.status)?.defaultVersion == "v1")
            // Without load v1 is free at once: WF completes.
            let idle = try await mesh.upgrade(["--strategy", "WF", "--drain-timeout", "10s"])
            #expect(idle.status == 0, "\(idle.stdout)\(idle.stderr)")
            #expect(Self.auth(try await mesh.client.status())?.versions.map(\.version) == ["v2"])
        }
    }

    /// The baseline: the same load with `rolling` breaks transactions, and the audit shows
    /// each of them ran on both versions of Auth.
    @Test func rollingBreaksTransactionsAndTheAuditShowsThem() async throws {
        try await MeshTestSupport.withMesh(authV2: false) { mesh in
            let o = try await Self.upgradeUnderLoad(mesh, ["--strategy", "rolling"])
            #expect(o.run.status == 0, "\(o.run.stdout)\(o.run.stderr)")
            #expect(o.load.failed > 0, "\(o.load.raw)")
            #expect(o.audit.inconsistent > 0)
            #expect(o.audit.traces.allSatisfy { $0.service == "auth" && $0.versions == ["v1", "v2"] })
        }
    }

    /// A transaction longer than the drain deadline: CV rolls back with nothing lost, or with
    /// --force retires v1 under it and says so.
    @Test func drainDeadlineRollsBackOrForces() async throws {
        try await MeshTestSupport.withMesh(authV2: false) { mesh in
            func slowOrder() async throws -> (Task<MeshTestSupport.Answer, any Error>, String) {
                let trace = MeshTestSupport.newTraceID()
                let task = Task {
                    try await MeshTestSupport.send(.POST, "\(mesh.gateway)/order?delay_ms=4000", headers: ["x-b3-traceid": trace], body: #"{"item":"tea"}"#)
                }
                for _ in 0..<300 {
                    if try await mesh.client.visits(instance: "auth-v1-0").contains(where: { $0.traceId == trace }) { break }
                    try await Task.sleep(for: .milliseconds(10))
                }
                return (task, trace)
            }
            let (slow, _) = try await slowOrder()
            let back = try await mesh.upgrade(["--drain-timeout", "1s"])
            #expect(back.status == 1)
            #expect(back.stderr.contains("the drain deadline passed with 1 transactions on auth v1; v1 is the default again"), "\(back.stderr)")
            #expect(Self.auth(try await mesh.client.status())?.versions.map(\.version) == ["v1"], "the v2 this upgrade started is gone")
            let kept = try await slow.value
            #expect(kept.status == 200 && kept.json?["versions"]?["auth.verify"]?.stringValue == "v1", "nothing lost")

            let (doomed, _) = try await slowOrder()
            let forced = try await mesh.upgrade(["--drain-timeout", "1s", "--force"])
            #expect(forced.status == 1, "forced is not completed")
            #expect(forced.stdout.contains("--force: retiring auth v1 with 1 transactions still on it; they may break"), "\(forced.stdout)")
            let status = try await mesh.client.upgrade(of: "auth")
            #expect(status.phase == .forced && status.mayBreak == 1)
            #expect(Self.auth(try await mesh.client.status())?.versions.map(\.version) == ["v2"])
            let broken = try await doomed.value
            #expect(broken.status != 200, "the transaction the forced retire reported did break")
        }
    }

    /// Envoy binds with SO_REUSEPORT by default; a second mesh on the same gateway port used
    /// to come up and take half the traffic. Now it is refused.
    @Test func aSecondMeshOnTheSameGatewayPortIsRefused() async throws {
        try await MeshTestSupport.withMesh(authV2: false) { mesh in
            let dir = try TestPaths.temporaryDirectory("triad-mesh-test")
            try String(contentsOfFile: mesh.directory + "/mesh.yaml", encoding: .utf8).write(toFile: dir + "/mesh.yaml", atomically: true, encoding: .utf8)
            let second = try await MeshTestSupport.triad(["mesh", "up", "-f", "mesh.yaml"], in: dir)
            #expect(second.status == 1)
            #expect(second.stderr.contains("Envoy gateway rejected its listeners") && second.stderr.contains("Address already in use"), "\(second.stderr)")
            #expect(MeshState.load(from: dir) == nil)
        }
    }

    /// A new version already running somewhere (`--upstream`), upgraded from another
    /// directory through the control URL and its token.
    @Test func upgradeToAnUpstreamThroughTheControlURL() async throws {
        let port = try MeshTestSupport.freePort()
        let auth = Process()
        auth.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        auth.arguments = ["python3", MeshTestSupport.examples + "/auth.py", "--version", "v2"]
        auth.environment = ProcessInfo.processInfo.environment.merging(["PORT": String(port)]) { $1 }
        // Not the test's own stdout: swift test waits for every holder of it to exit.
        auth.standardOutput = FileHandle.nullDevice
        auth.standardError = FileHandle.nullDevice
        try auth.run()
        defer { kill(auth.processIdentifier, SIGKILL) }
        try await MeshTestSupport.withMesh(authV2: false) { mesh in
            let elsewhere = try TestPaths.temporaryDirectory("triad-mesh-test")
            let noToken = try await MeshTestSupport.triad(
                ["upgrade", "auth", "--to", "v2", "--upstream", "127.0.0.1:\(port)", "--mesh", mesh.state.controlURL], in: elsewhere)
            #expect(noToken.status == 1 && noToken.stderr.contains("set TRIAD_MESH_TOKEN"), "\(noToken.stderr)")
            let run = try await MeshTestSupport.triad(
                ["upgrade", "auth", "--to", "v2", "--upstream", "127.0.0.1:\(port)", "--mesh", mesh.state.controlURL],
                in: elsewhere, environment: ["TRIAD_MESH_TOKEN": mesh.state.token])
            #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
            let after = try await MeshTestSupport.send(
                .POST, "\(mesh.gateway)/order", headers: ["x-b3-traceid": MeshTestSupport.newTraceID()], body: #"{"item":"tea"}"#)
            #expect(after.status == 200 && after.json?["versions"]?["auth.issue"]?.stringValue == "v2")
        }
        #expect(ChildProcess.alive(auth.processIdentifier), "an upstream is not Triad's to stop")
    }

    @Test func badUpgradesAreRefusedClearly() async throws {
        try await MeshTestSupport.withMesh(authV2: false) { mesh in
            let unknown = try await MeshTestSupport.triad(["upgrade", "auth", "--to", "v9"], in: mesh.directory)
            #expect(unknown.status == 1)
            #expect(unknown.stderr.contains("auth has no version v9 (it has v1); give its --command or --upstream"), "\(unknown.stderr)")
            let same = try await MeshTestSupport.triad(["upgrade", "auth", "--to", "v1"], in: mesh.directory)
            #expect(same.status == 1 && same.stderr.contains("auth already runs v1"), "\(same.stderr)")
            let service = try await MeshTestSupport.triad(["upgrade", "shop", "--to", "v2", "--command", "python3 x.py"], in: mesh.directory)
            #expect(service.status == 1 && service.stderr.contains("no service shop in this mesh"), "\(service.stderr)")
            let strategy = try await mesh.upgrade(["--strategy", "XX"])
            #expect(strategy.status == 1 && strategy.stderr.contains("unknown strategy XX"), "\(strategy.stderr)")
            // Drains beyond a day (or none at all) and version names that are not names are refused.
            let endless = try await mesh.upgrade(["--drain-timeout", "1e16s"])
            #expect(endless.status == 1 && endless.stderr.contains("drainTimeoutSeconds must be more than 0 and at most 86400"), "\(endless.stderr)")
            for (to, drain) in [("v2", -1e16), ("v2", 0), ("../v2", 60), ("V2", 60)] {
                do {
                    _ = try await mesh.client.startUpgrade(UpgradeRequest(service: "auth", to: to, command: ["false"], drainTimeoutSeconds: drain))
                    Issue.record("an upgrade to \(to) with a drain of \(drain) s was accepted")
                } catch {
                    #expect("\(error)".contains(to == "v2" ? "drainTimeoutSeconds" : "is not a version name"), "\(error)")
                }
            }

            // A v2 that never becomes healthy is rolled back with nothing changed.
            let broken = try await MeshTestSupport.triad(["upgrade", "auth", "--to", "v2", "--command", "false"], in: mesh.directory)
            #expect(broken.status == 1)
            #expect(broken.stderr.contains("auth v2 failed its health check; rolled back, nothing changed"), "\(broken.stderr)")
            #expect(Self.auth(try await mesh.client.status())?.versions.map(\.version) == ["v1"])

            // A second upgrade while one runs: a slow transaction keeps v1's DiffSet non-empty.
            let slow = Task {
                try await MeshTestSupport.send(
                    .POST, "\(mesh.gateway)/order?delay_ms=2500", headers: ["x-b3-traceid": MeshTestSupport.newTraceID()], body: #"{"item":"tea"}"#)
            }
            try await Task.sleep(for: .milliseconds(300))
            let first = try await mesh.upgrade(["--detach"])
            #expect(first.status == 0 && first.stdout.contains("upgrade auth v1 -> v2 (CV) started"), "\(first.stdout)\(first.stderr)")
            let second = try await MeshTestSupport.triad(["upgrade", "auth", "--to", "v3", "--command", "python3 x.py"], in: mesh.directory)
            #expect(second.status == 1)
            #expect(second.stderr.contains("an upgrade of auth to v2 (CV) is already running"), "\(second.stderr)")
            let straddling = try await slow.value
            #expect(straddling.status == 200 && straddling.json?["versions"]?["auth.verify"]?.stringValue == "v1", "the slow transaction stayed on v1")
            var status = try await mesh.client.upgrade(of: "auth")
            for _ in 0..<100 where status.phase == .running {
                try await Task.sleep(for: .milliseconds(100))
                status = try await mesh.client.upgrade(of: "auth")
            }
            #expect(status.phase == .completed)
            let shown = try await MeshTestSupport.triad(["upgrade", "status"], in: mesh.directory)
            #expect(shown.status == 0 && shown.stdout.contains("auth v1 -> v2 (CV): completed"), "\(shown.stdout)")
            #expect(try await mesh.client.audit().inconsistent == 0)
        }
    }
}
