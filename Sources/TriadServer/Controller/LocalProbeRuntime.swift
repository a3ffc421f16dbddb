import Foundation
import Logging
import TriadCore
import TriadProcess

/// The `local` probe runtime (docs/mqtt.md): a probe is `probeImage probeArgs…` run as a child
/// process with `TRIAD_RESOURCE`, `TRIAD_MQTT_URL`, `TRIAD_API_URL` and a device token of its
/// own in `TRIAD_TOKEN` (revoked when the probe stops). Its output goes to
/// `<data-dir>/probes/<name>.log`.
actor LocalProbeRuntime {
    struct Environment: Sendable {
        var apiURL: String
        var mqttURL: String?
        var logDirectory: String
    }

    private struct Running {
        var process: ChildProcess
        var token: String
    }

    private let authority: TokenAuthority
    private let logger: Logger
    private var running: [String: Running] = [:]
    private var history: [String: ProbeReconciler.Actual] = [:]
    /// Called when a probe exits on its own (the controller reconciles it).
    private let exited: @Sendable (String) -> Void

    init(authority: TokenAuthority, logger: Logger, exited: @escaping @Sendable (String) -> Void) {
        self.authority = authority
        self.logger = logger
        self.exited = exited
    }

    func actual(_ name: String, now: Double) -> ProbeReconciler.Actual {
        var actual = history[name] ?? ProbeReconciler.Actual()
        if let r = running[name] {
            if let code = r.process.exitStatus {
                // Exited on its own: any exit the runtime did not ask for is a crash.
                running[name] = nil
                actual.running = false
                actual.crashes.append(now)
                logger.warning("probe exited", metadata: ["resource": "\(name)", "status": "\(code)"])
                Task { [authority] in _ = try? await authority.revoke(name: r.token) }
            } else {
                actual.running = true
            }
        } else {
            actual.running = false
        }
        actual.crashes = actual.crashes.filter { now - $0 < 3600 }.suffix(20)
        history[name] = actual
        return actual
    }

    func start(_ name: String, _ desired: ProbeReconciler.Desired, environment: Environment, now: Double) async throws {
        guard let image = desired.image else { return }
        try FileManager.default.createDirectory(atPath: environment.logDirectory, withIntermediateDirectories: true)
        let tokenName = "probe-\(name)-\(UUID().uuidString.prefix(8).lowercased())"
        let (_, secret) = try await authority.create(name: tokenName, role: .device, resource: name)
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("TRIAD_") }
        env["TRIAD_RESOURCE"] = name
        env["TRIAD_API_URL"] = environment.apiURL
        env["TRIAD_TOKEN"] = secret
        if let mqtt = environment.mqttURL { env["TRIAD_MQTT_URL"] = mqtt }
        let exited = self.exited
        let directory = FileManager.default.currentDirectoryPath
        let process: ChildProcess
        do {
            guard let program = ChildProcess.resolve(image, directory: directory) else {
                throw ProbeStartError(description: "probeImage \(image) is not an executable file or a program on PATH")
            }
            process = try ChildProcess(id: name, kind: "probe", executable: program, arguments: desired.args, environment: env,
                                       directory: directory, logPath: environment.logDirectory + "/\(name).log",
                                       newProcessGroup: true) { _ in exited(name) }
        } catch {
            _ = try? await authority.revoke(name: tokenName)
            throw error
        }
        running[name] = Running(process: process, token: tokenName)
        var actual = history[name] ?? ProbeReconciler.Actual()
        actual.running = true
        actual.generation = desired.generation
        actual.startedAt = now
        history[name] = actual
        logger.info("probe started", metadata: ["resource": "\(name)", "pid": "\(process.pid)", "generation": "\(desired.generation)"])
    }

    /// Stops the probe on purpose (not a crash).
    func stop(_ name: String) async {
        guard let r = running.removeValue(forKey: name) else { return }
        await r.process.stop()
        _ = try? await authority.revoke(name: r.token)
        history[name]?.running = false
        logger.info("probe stopped", metadata: ["resource": "\(name)"])
    }

    func forget(_ name: String) { history[name] = nil }

    func stopAll() async {
        for name in running.keys { await stop(name) }
    }

    var runningNames: [String] { Array(running.keys) }
}

struct ProbeStartError: Error, CustomStringConvertible {
    var description: String
}
