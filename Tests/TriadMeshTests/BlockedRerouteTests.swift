import Foundation
import Logging
import NIOHTTP1
import Testing
import TriadCore
import TriadMesh

#if canImport(Glibc)
    import Glibc
    import TriadProcess
    import TriadTesting
#endif

extension MeshEndToEndTests {
    /// CV's block step (docs/mesh.md): a request that chose the old version before the default
    /// switched, and reaches it after the block, is refused there and re-routed by the caller's
    /// sidecar onto the new default; the application never sees the refusal. The race is made
    /// certain by stopping Auth v1's sidecar (SIGSTOP) while the request waits in its socket,
    /// switching the default meanwhile, then letting it go on.
    @Test func aRequestBlockedAtTheOldVersionIsReRoutedOntoTheNewDefault() async throws {
        let envoy = try MeshTestSupport.envoy()
        let dir = try TestPaths.temporaryDirectory("triad-mesh-test")
        let sockets = "/tmp/triad-reroute-" + MeshState.newToken().prefix(8)
        try FileManager.default.createDirectory(atPath: sockets, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: sockets) }
        let yaml = MeshTestSupport.exampleMesh(gatewayPort: try MeshTestSupport.freePort(), pinPropagation: "application", authV2: true)
        let config = try MeshConfigParser.parse(Data(yaml.utf8), baseDirectory: MeshTestSupport.examples)
        let runtime = try MeshRuntime(
            config: config, envoy: envoy, runDirectory: dir + "/run", socketDirectory: sockets,
            logger: Logger(label: "triad.test.reroute"))
        let plan = await runtime.plan
        let recorder = await runtime.recorder
        let receiver = try await LogReceiver.start(path: plan.logSocket, recorder: recorder, logger: Logger(label: "triad.test.reroute"))
        try await runtime.start()
        var stopped: pid_t?
        do {
            let portal = try #require(plan.instances.first { $0.service == "portal" })
            let authV1Sidecar = try #require(await runtime.envoyProcess("auth-v1-0"))
            // v1 refuses unpinned requests; every caller still routes them to v1.
            try await runtime.setBlocked(service: "auth", version: "v1", true)
            kill(authV1Sidecar.pid, SIGSTOP)
            stopped = authV1Sidecar.pid
            let trace = MeshTestSupport.newTraceID()
            let order = Task {
                try await MeshTestSupport.send(
                    .POST, "http://\(plan.gatewayListen)/order", headers: ["x-b3-traceid": trace],
                    body: #"{"item":"tea","qty":1,"user":"alice"}"#)
            }
            // Portal's sidecar has sent the token request to v1 (it waits in the stopped sidecar's socket).
            let active = "cluster.auth-v1.upstream_rq_active"
            let deadline = ContinuousClock.now + .seconds(10)
            while (await EnvoyFiles.stat(adminPort: portal.sidecar.adminPort, name: active) ?? 0) < 1 {
                guard ContinuousClock.now < deadline else { throw SetupError("Portal's sidecar never sent the request to auth v1") }
                try await Task.sleep(for: .milliseconds(10))
            }
            try await runtime.setDefault(service: "auth", version: "v2")
            kill(authV1Sidecar.pid, SIGCONT)
            stopped = nil
            let answer = try await order.value
            #expect(answer.status == 200, "\(String(decoding: answer.body, as: UTF8.self))")
            #expect(answer.json?["versions"]?["auth.issue"] == "v2", "the refused call landed on the new default")
            #expect(answer.json?["versions"]?["auth.verify"] == "v2")
            // The refusal is no visit: v1's trace manager never saw the trace.
            try await Task.sleep(for: .milliseconds(200))
            #expect(!recorder.visits(instance: "auth-v1-0").contains { $0.traceId == trace })
            #expect(recorder.visits(instance: "auth-v2-0").contains { $0.traceId == trace })
            #expect(recorder.counters.blockedRefusals == 1, "v1's sidecar refused it once")
            #expect(recorder.audit().inconsistent == 0)
        } catch {
            if let stopped { kill(stopped, SIGCONT) }
            await runtime.stop()
            await receiver.close()
            throw error
        }
        await runtime.stop()
        await receiver.close()
    }
}
