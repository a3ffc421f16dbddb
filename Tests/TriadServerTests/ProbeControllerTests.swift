import Foundation
import NIOHTTP1
import Testing
import TriadClient
import TriadCore
import TriadServer
import TriadTesting

/// The controller's local probe runtime with real `triad probe simulate` processes talking to the
/// real Mosquitto (docs/mqtt.md): Synchronous, restart after a crash, Failed for a crash loop or
/// silence, stopped on `probeEnabled: false` and on delete.
@Suite("Probe controller")
struct ProbeControllerTests {
    /// A device whose probe is `triad probe <command> <args…>`.
    static func device(_ name: String, args: [String], enabled: Bool = true, command: String = "simulate", extra: [String] = []) throws -> Data {
        var doc = Docs.device(name)
        guard case .object(var root) = doc, case .object(var spec)? = root["spec"] else { return Docs.json(doc) }
        spec["probeImage"] = .string(try TestPaths.triadExecutable())
        spec["probeArgs"] = .array((["probe", command] + args + extra).map(JSONValue.string))
        spec["probeEnabled"] = .bool(enabled)
        root["spec"] = .object(spec)
        doc = .object(root)
        return Docs.json(doc)
    }

    static func status(_ server: TestServer, _ name: String) async throws -> JSONValue? {
        try await server.admin.call(.GET, "/api/v1/resources/\(name)").json?["status"]
    }

    static func ready(_ status: JSONValue?) -> String? {
        status?["conditions"]?.arrayValue?.first { $0["type"] == .string("ProbeReady") }?["reason"]?.stringValue
    }

    @Test func probesAreRunRestartedJudgedAndStopped() async throws {
        let url = try TestEnvironment.mqttURL()
        try await withServer(
            .sqlite, mqtt: url,
            configure: { config in
                config.probePolicy.silence = 3
                config.probePolicy.restartBase = 0.2
                config.probePolicy.crashWindow = 60
            }
        ) { server in
            let steady = TelemetryTests.name("steady")
            let crashy = TelemetryTests.name("crashy")
            let mute = TelemetryTests.name("mute")
            let doomed = TelemetryTests.name("doomed")
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: try Self.device(steady, args: ["--rate", "5"]))
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: try Self.device(crashy, args: ["--rate", "10", "--crash-after", "30"]))
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: try Self.device(mute, args: ["--rate", "0"]))
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: try Self.device(doomed, args: ["--rate", "5"]))

            for name in [steady, doomed] {
                try await eventually("\(name) reaches Synchronous", within: 30) {
                    let status = try await Self.status(server, name)
                    return status?["probePhase"] == .string("Synchronous") && Self.ready(status) == "DataFlowing"
                }
            }
            #expect(try await TelemetryTests.history(server, steady).count > 0, "its samples reach the history")

            // The crashing probe (3 s of data each life, long enough to be seen Synchronous on a busy
            // machine): Synchronous between crashes, restarted, then a crash loop.
            var sawSynchronous = false
            try await eventually("the crashing probe is Failed for a crash loop", within: 40) {
                let status = try await Self.status(server, crashy)
                if status?["probePhase"] == .string("Synchronous") { sawSynchronous = true }
                return status?["probePhase"] == .string("Failed") && Self.ready(status) == "ProbeCrashLoop"
            }
            #expect(sawSynchronous, "it sent data between crashes")
            let log = (try? String(contentsOfFile: server.dataDir + "/probes/\(crashy)/probe.log", encoding: .utf8)) ?? ""
            #expect(log.components(separatedBy: "crashing after").count - 1 >= 3, "restarted after each crash")

            // A probe that never sends: Pending, then Failed for silence.
            try await eventually("the mute probe is Failed for silence", within: 30) {
                let status = try await Self.status(server, mute)
                return status?["probePhase"] == .string("Failed") && Self.ready(status) == "ProbeSilent"
            }

            // probeEnabled: false stops the process; delete stops it too.
            #expect(await server.server.controller.runningProbes().isSuperset(of: [steady, doomed, mute]))
            _ = try await server.admin.call(
                .PATCH, "/api/v1/resources/\(steady)", body: Data(#"{"spec":{"probeEnabled":false}}"#.utf8),
                contentType: "application/merge-patch+json")
            _ = try await server.admin.call(.DELETE, "/api/v1/resources/\(doomed)")
            try await eventually("both probes are stopped", within: 20) {
                let running = await server.server.controller.runningProbes()
                return !running.contains(steady) && !running.contains(doomed)
            }
            try await eventually("the disabled probe is NotReady", within: 10) {
                let status = try await Self.status(server, steady)
                return status?["probePhase"] == .string("NotReady") && Self.ready(status) == "ProbeDisabled"
            }
            // Its token is revoked with it: no probe token of the deleted resource stays active.
            try await eventually("the deleted resource's probe token is revoked", within: 10) {
                let tokens = try await server.admin.call(.GET, "/api/v1/tokens").json?["items"]?.arrayValue ?? []
                let mine = tokens.filter { ($0["name"]?.stringValue ?? "").hasPrefix("probe-\(doomed)-") }
                return !mine.isEmpty && mine.allSatisfy { $0["revokedAt"] != nil }
            }
        }
    }
}

@Suite("Agent heartbeats")
struct AgentHeartbeatTests {
    @Test func anAgentThatStopsHeartbeatingIsFailedWithAReason() async throws {
        try await withServer(.sqlite, configure: { $0.probePolicy.heartbeatTimeout = 2 }) { server in
            let name = TelemetryTests.name("agent")
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(name)))
            let agent = server.client(token: try await server.token(.device, resource: name))
            func beat(phase: String = "Running") async throws {
                let now = Timestamp.format(Date())
                let body =
                    #"{"status":{"phase":"\#(phase)","conditions":[{"type":"AgentReady","status":"True","reason":"Serving","lastHeartbeatTime":"\#(now)"}]}}"#
                _ = try await agent.call(.PATCH, "/api/v1/resources/\(name)/status", body: Data(body.utf8), contentType: "application/merge-patch+json")
            }
            // Another condition that heartbeats must not erase.
            _ = try await agent.call(
                .PATCH, "/api/v1/resources/\(name)/status",
                body: Data(#"{"status":{"conditions":[{"type":"Docked","status":"True"}]}}"#.utf8),
                contentType: "application/merge-patch+json")
            for _ in 0..<6 {
                try await beat()
                try await Task.sleep(for: .milliseconds(500))
            }
            let alive = try await ProbeControllerTests.status(server, name)
            #expect(alive?["phase"] == .string("Running"), "heartbeats keep it Running")
            try await eventually("the silent agent is Failed with HeartbeatMissed", within: 10) {
                let status = try await ProbeControllerTests.status(server, name)
                let ready = status?["conditions"]?.arrayValue?.first { $0["type"] == .string("AgentReady") }
                return status?["phase"] == .string("Failed") && ready?["status"] == .string("False")
                    && ready?["reason"] == .string("HeartbeatMissed")
            }
            let conditions = try await ProbeControllerTests.status(server, name)?["conditions"]?.arrayValue ?? []
            #expect(conditions.contains { $0["type"] == .string("Docked") }, "conditions merge by type")
            // The agent comes back: its own heartbeat reports it.
            try await beat()
            #expect(try await ProbeControllerTests.status(server, name)?["phase"] == .string("Running"))
        }
    }
}

/// `triad probe homeassistant` run by the controller against the real Home Assistant that
/// scripts/test.sh starts (its demo devices); with the other tests that use it, one at a time.
extension HomeAssistantTests {
    @Test func aProbeFollowsAnEntityAndAMissingEntityCrashLoops() async throws {
        let env = ProcessInfo.processInfo.environment
        guard let haURL = env["TRIAD_TEST_HA_URL"], let tokenFile = env["TRIAD_TEST_HA_TOKEN_FILE"],
            let token = FileManager.default.contents(atPath: tokenFile).map({
                String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            })
        else {
            throw SetupError("TRIAD_TEST_HA_URL and TRIAD_TEST_HA_TOKEN_FILE are not set: run the suite with scripts/test.sh, which starts Home Assistant")
        }
        let home = TriadClient(server: haURL, token: token)
        let entity = "switch.decorative_lights"
        func haState() async throws -> String { try await home.call(.GET, "/api/states/\(entity)").json?["state"]?.stringValue ?? "" }
        let url = try TestEnvironment.mqttURL()
        try await withServer(.sqlite, mqtt: url, configure: { $0.probePolicy.restartBase = 0.2 }) { server in
            let lights = TelemetryTests.name("lights")
            let ghost = TelemetryTests.name("ghost")
            let args = ["--ha-url", haURL, "--ha-token-file", tokenFile, "--interval", "0.5"]
            _ = try await server.admin.call(
                .POST, "/api/v1/resources",
                body: try ProbeControllerTests.device(
                    lights, args: [], command: "homeassistant",
                    extra: ["--entity", entity] + args))
            _ = try await server.admin.call(
                .POST, "/api/v1/resources",
                body: try ProbeControllerTests.device(
                    ghost, args: [], command: "homeassistant",
                    extra: ["--entity", "switch.no_such_thing"] + args))
            func reported() async throws -> JSONValue? {
                try await ProbeControllerTests.status(server, lights)?["telemetry"]?["values"]?["state"]
            }
            let initial = try await haState()
            try await eventually("the entity's state reaches the registry", within: 30) {
                let status = try await ProbeControllerTests.status(server, lights)
                let state = try await reported()
                return status?["probePhase"] == .string("Synchronous") && state == .string(initial)
            }
            // Change the device in Home Assistant: the registry follows.
            _ = try await home.call(.POST, "/api/services/switch/toggle", body: Data(#"{"entity_id":"\#(entity)"}"#.utf8))
            let toggled = try await haState()
            #expect(toggled != initial)
            try await eventually("the new state reaches the registry", within: 15) { try await reported() == .string(toggled) }
            // An entity Home Assistant does not have: the probe exits with a reason, again and again.
            try await eventually("the probe of a missing entity is Failed for a crash loop", within: 30) {
                let status = try await ProbeControllerTests.status(server, ghost)
                return status?["probePhase"] == .string("Failed") && ProbeControllerTests.ready(status) == "ProbeCrashLoop"
            }
            let log = (try? String(contentsOfFile: server.dataDir + "/probes/\(ghost)/probe.log", encoding: .utf8)) ?? ""
            #expect(log.contains("Home Assistant has no entity switch.no_such_thing"))
            #expect(!log.contains(token), "the token is never logged")
        }
    }
}
