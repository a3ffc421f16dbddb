import Foundation
import Testing
import TriadCore

/// The controller's queue and probe decisions, with a test clock: no sockets, no sleeps.
@Suite("Controller logic")
struct ControllerTests {
    @Test func theQueueDeduplicatesAndHandsAKeyToOneWorkerAtATime() {
        var q = WorkQueue<String>()
        q.add("a")
        q.add("b")
        q.add("a")
        #expect(q.next(now: 0) == "a")
        #expect(q.next(now: 0) == "b")
        #expect(q.next(now: 0) == nil, "a was queued once")
        q.add("a")  // while a worker has it
        #expect(q.next(now: 0) == nil, "not handed to a second worker")
        q.done("a")
        #expect(q.next(now: 0) == "a", "re-added after done because it changed meanwhile")
        q.done("a")
        q.done("b")
        #expect(q.next(now: 0) == nil)
        #expect(q.isEmpty)
    }

    @Test func delayedAndRateLimitedKeysWaitTheirTurn() {
        var q = WorkQueue<String>(baseDelay: 1, maxDelay: 8)
        q.add("x", after: 5, now: 0)
        q.add("x", after: 9, now: 0)  // a later time does not postpone an earlier one
        #expect(q.next(now: 4.9) == nil)
        #expect(q.nextDeadline == 5)
        #expect(q.next(now: 5) == "x")
        q.done("x")
        // Back-off doubles per failure up to the maximum, and resets on forget.
        var delays: [Double] = []
        var now = 0.0
        for _ in 0..<6 {
            q.addRateLimited("y", now: now)
            let deadline = q.nextDeadline!
            delays.append(deadline - now)
            #expect(q.next(now: deadline - 0.01) == nil)
            #expect(q.next(now: deadline) == "y")
            q.done("y")
            now = deadline
        }
        #expect(delays == [1, 2, 4, 8, 8, 8])
        q.forget("y")
        q.addRateLimited("y", now: now)
        #expect(q.nextDeadline! - now == 1)
        // Adding a delayed key now makes it ready at once.
        q.add("y")
        #expect(q.next(now: now) == "y")
    }

    typealias R = ProbeReconciler

    static func desired(image: String? = "triad", enabled: Bool = true, generation: Int64 = 1, lastSample: Double? = nil, offline: Bool = false) -> R.Desired {
        R.Desired(image: image, args: ["probe", "simulate"], enabled: enabled, generation: generation, lastSample: lastSample, announcedOffline: offline)
    }

    static func running(since t: Double, generation: Int64 = 1, crashes: [Double] = []) -> R.Actual {
        var a = R.Actual()
        a.running = true
        a.startedAt = t
        a.generation = generation
        a.crashes = crashes
        return a
    }

    @Test func aProbeIsStartedThenPendingThenSynchronous() {
        let start = R.decide(Self.desired(), R.Actual(), now: 100)
        #expect(start.action == .start(Self.desired()) && start.phase == .pending)
        let pending = R.decide(Self.desired(), Self.running(since: 100), now: 105)
        #expect(pending.action == .none && pending.phase == .pending && pending.requeueAfter != nil)
        let flowing = R.decide(Self.desired(lastSample: 106), Self.running(since: 100), now: 107)
        #expect(flowing.phase == .synchronous && flowing.reason == "DataFlowing")
        #expect(flowing.requeueAfter! > 25, "looked at again when it would turn silent")
    }

    @Test func silenceOfflineAndCrashLoopsFailWithAReason() {
        let silent = R.decide(Self.desired(lastSample: 110), Self.running(since: 100), now: 141)
        #expect(silent.phase == .failed && silent.reason == "ProbeSilent")
        let neverSpoke = R.decide(Self.desired(), Self.running(since: 100), now: 131)
        #expect(neverSpoke.phase == .failed && neverSpoke.reason == "ProbeSilent")
        let offline = R.decide(Self.desired(lastSample: 110, offline: true), Self.running(since: 100), now: 111)
        #expect(offline.phase == .failed && offline.reason == "ProbeOffline")

        // A crash: restarted after a back-off that grows with recent crashes.
        var crashed = R.Actual()
        crashed.startedAt = 100
        crashed.generation = 1
        crashed.crashes = [110]
        let waiting = R.decide(Self.desired(), crashed, now: 110.5)
        #expect(waiting.action == .none && waiting.requeueAfter == 0.5)
        #expect(R.decide(Self.desired(), crashed, now: 111).action == .start(Self.desired()))
        crashed.crashes = [110, 112]
        #expect(R.decide(Self.desired(), crashed, now: 113).action == .none, "2 s after the second crash")
        #expect(R.decide(Self.desired(), crashed, now: 114).action == .start(Self.desired()))
        crashed.crashes = [110, 112, 116]
        let loop = R.decide(Self.desired(), crashed, now: 117)
        #expect(loop.phase == .failed && loop.reason == "ProbeCrashLoop")
        #expect(R.decide(Self.desired(), crashed, now: 120).action == .start(Self.desired()), "still restarted, with back-off")
        // Old crashes fall out of the window.
        #expect(R.decide(Self.desired(), crashed, now: 200).phase != .failed)
    }

    @Test func disableDeleteAndNewGenerationsChangeTheProcess() {
        #expect(R.decide(Self.desired(enabled: false), Self.running(since: 0), now: 1).action == .stop)
        #expect(R.decide(Self.desired(enabled: false), Self.running(since: 0), now: 1).phase == .notReady)
        #expect(R.decide(nil, Self.running(since: 0), now: 1).action == .stop)
        #expect(R.decide(nil, R.Actual(), now: 1).action == .none)
        #expect(R.decide(Self.desired(generation: 2), Self.running(since: 0, generation: 1), now: 1).action == .restart(Self.desired(generation: 2)))
        #expect(R.decide(Self.desired(image: nil), Self.running(since: 0), now: 1).action == .stop)
        // An external probe (no image): judged by its data only.
        #expect(R.decide(Self.desired(image: nil), R.Actual(), now: 1).phase == .notReady)
        #expect(R.decide(Self.desired(image: nil, lastSample: 0.5), R.Actual(), now: 1).phase == .synchronous)
        #expect(R.decide(Self.desired(image: nil, lastSample: 0.5), R.Actual(), now: 40).reason == "ProbeSilent")
    }
}

/// `triad probe render`: the kubernetes runtime's Deployment, against a golden file.
@Suite("Probe rendering")
struct ProbeRenderingTests {
    static let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/probe-deployment.yaml")

    static func resource(image: String?, enabled: Bool? = nil) throws -> Resource {
        var spec: [String: JSONValue] = ["kind": .string("Device")]
        if let image { spec["probeImage"] = .string(image) }
        spec["probeArgs"] = .array(["probe", "homeassistant", "--entity", "switch.coffee_machine"].map(JSONValue.string))
        if let enabled { spec["probeEnabled"] = .bool(enabled) }
        let tree: JSONValue = .object([
            "apiVersion": .string("triad.io/v1alpha1"), "kind": .string("Resource"),
            "metadata": .object(["name": .string("coffee-3f"), "generation": .number(3)]),
            "spec": .object(spec),
        ])
        return try Resource(validated: tree)
    }

    @Test func theDeploymentMatchesTheGoldenFile() throws {
        let rendered = DocumentWriter.yaml(
            try ProbeDeployment.render(
                try Self.resource(image: "ghcr.io/triad/probe:1"),
                mqttURL: "mqtt://triad-mqtt:1883", apiURL: "http://triad:8080",
                namespace: "pantry"))
        // TRIAD_UPDATE_GOLDEN=1 rewrites the file (then review the diff).
        if ProcessInfo.processInfo.environment["TRIAD_UPDATE_GOLDEN"] == "1" {
            try rendered.write(to: Self.golden, atomically: true, encoding: .utf8)
        }
        let golden = try String(contentsOf: Self.golden, encoding: .utf8)
        #expect(rendered == golden)
        #expect(!rendered.contains("TRIAD_TOKEN\n  value"), "the token comes from a Secret, never inline")
    }

    @Test func disabledProbesRenderWithNoReplicasAndMissingProbesAreRefused() throws {
        let disabled = try ProbeDeployment.render(try Self.resource(image: "x", enabled: false), mqttURL: "m", apiURL: "a")
        #expect(disabled["spec"]?["replicas"] == .number(0))
        #expect(throws: ProbeDeployment.RenderError.noProbe("coffee-3f")) {
            try ProbeDeployment.render(try Self.resource(image: nil), mqttURL: "m", apiURL: "a")
        }
    }
}

@Suite("Agent heartbeats and status merges")
struct HeartbeatTests {
    @Test func aQuietAgentIsMarkedFailedOnceAndLookedAtAgainInTime() {
        let fresh = HeartbeatReconciler.decide(lastHeartbeat: 100, phase: .running, alreadyMissed: false, now: 110, timeout: 30)
        #expect(!fresh.markFailed && fresh.requeueAfter! > 20 && fresh.requeueAfter! <= 20.1 + 0.001)
        #expect(HeartbeatReconciler.decide(lastHeartbeat: 100, phase: .running, alreadyMissed: false, now: 131, timeout: 30).markFailed)
        #expect(
            !HeartbeatReconciler.decide(lastHeartbeat: 100, phase: .failed, alreadyMissed: true, now: 131, timeout: 30).markFailed,
            "written once")
        let none = HeartbeatReconciler.decide(lastHeartbeat: nil, phase: .running, alreadyMissed: false, now: 131, timeout: 30)
        #expect(!none.markFailed && none.requeueAfter == nil, "no heartbeating agent: nothing to judge")
    }

    @Test func statusPatchesMergeConditionsByType() throws {
        let status = try JSONCoding.parse(
            Data(
                #"{"phase":"Running","conditions":[{"type":"ProbeReady","status":"True","reason":"DataFlowing"},{"type":"AgentReady","status":"True","lastHeartbeatTime":"2026-11-26T00:00:00Z"}]}"#
                    .utf8))
        let patch = try JSONCoding.parse(
            Data(#"{"conditions":[{"type":"AgentReady","lastHeartbeatTime":"2026-11-26T00:00:10Z"},{"type":"Docked","status":"False"}]}"#.utf8))
        let merged = StatusMergePatch.apply(patch, to: status)
        let conditions = merged["conditions"]?.arrayValue ?? []
        #expect(conditions.map { $0["type"]?.stringValue } == ["ProbeReady", "AgentReady", "Docked"])
        #expect(conditions[0]["reason"] == .string("DataFlowing"), "others are kept")
        #expect(conditions[1]["lastHeartbeatTime"] == .string("2026-11-26T00:00:10Z") && conditions[1]["status"] == .string("True"))
        #expect(merged["phase"] == .string("Running"))
        #expect(
            StatusMergePatch.apply(try JSONCoding.parse(Data(#"{"conditions":null}"#.utf8)), to: status)["conditions"] == nil,
            "null still removes them")
    }
}
