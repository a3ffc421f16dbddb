import Foundation
import Logging
import TriadCore
import TriadMQTT
import TriadProcess

/// The `local` probe runtime (docs/mqtt.md): a probe is `probeImage probeArgs…` run as a child
/// process with `TRIAD_RESOURCE`, `TRIAD_MQTT_URL`, `TRIAD_API_URL` and a device token of its
/// own in `TRIAD_TOKEN` (revoked when the probe stops); `TRIAD_MQTT_URL` carries the probe's own
/// MQTT client credentials when the broker is managed, never the server's. Nothing else of the server's
/// environment, in a private working directory `<data-dir>/probes/<name>/` (its output goes to
/// `probe.log` there). Only executables on the allow list run.
actor LocalProbeRuntime {
    struct Environment: Sendable {
        var apiURL: String
        /// The broker, without the server's credentials.
        var mqttBroker: MQTTEndpoint?
        /// The broker knows each device token's client (`--mqtt-auth dynsec`).
        var mqttClientPerToken: Bool
        /// `<data-dir>/probes`: each probe's private working directory and log live under it.
        var probeDirectory: String
        var allow: ProbeAllowList
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

    /// The probe as it is now; one that exited on its own is recorded as a crash and its token revoked.
    func actual(_ name: String, now: Double, logger: Logger) async -> ProbeReconciler.Actual {
        var actual = history[name] ?? ProbeReconciler.Actual()
        var exitedToken: String?
        if let r = running[name] {
            if let code = r.process.exitStatus {
                // Exited on its own: any exit the runtime did not ask for is a crash.
                running[name] = nil
                actual.running = false
                actual.crashes.append(now)
                logger.warning("probe exited", metadata: ["resource": "\(name)", "status": "\(code)"])
                exitedToken = r.token
            } else {
                actual.running = true
            }
        } else {
            actual.running = false
        }
        actual.crashes = actual.crashes.filter { now - $0 < 3600 }.suffix(20)
        history[name] = actual
        if let exitedToken { _ = try? await authority.revoke(name: exitedToken) }
        return actual
    }

    func start(_ name: String, _ desired: ProbeReconciler.Desired, environment: Environment, now: Double, logger: Logger) async throws {
        guard let image = desired.image else { return }
        // Only what an admin allowed runs, before any token is made for it.
        let program: String
        do {
            program = try environment.allow.program(for: image, directory: FileManager.default.currentDirectoryPath)
        } catch let refused as ProbeAllowList.Refused {
            throw ProbeStartError(description: refused.description)
        }
        // A private working directory (0700): not the server's, where admin.token and the database are.
        let directory = environment.probeDirectory + "/\(name)"
        for dir in [environment.probeDirectory, directory] where !FileManager.default.fileExists(atPath: dir) {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        let tokenName = "probe-\(name)-\(UUID().uuidString.prefix(8).lowercased())"
        let (_, secret) = try await authority.create(name: tokenName, role: .device, resource: name)
        // An empty environment plus the probe's own variables: nothing of the server's leaks in.
        var env = ["TRIAD_RESOURCE": name, "TRIAD_API_URL": environment.apiURL, "TRIAD_TOKEN": secret]
        if let broker = environment.mqttBroker {
            let credentials = environment.mqttClientPerToken ? "\(tokenName):\(TokenAuthority.mqttPassword(forSecret: secret))@" : ""
            env["TRIAD_MQTT_URL"] = "mqtt://\(credentials)\(broker.host.contains(":") ? "[\(broker.host)]" : broker.host):\(broker.port)"
        }
        let exited = self.exited
        let process: ChildProcess
        do {
            process = try ChildProcess(
                id: name, kind: "probe", executable: program, arguments: desired.args, environment: env,
                directory: directory, logPath: directory + "/probe.log",
                newProcessGroup: true
            ) { _ in exited(name) }
        } catch {
            _ = try? await authority.revoke(name: tokenName)
            throw ProbeStartError(description: "probeImage \(image) could not be started")
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
    func stop(_ name: String, logger: Logger) async {
        guard let r = running.removeValue(forKey: name) else { return }
        await r.process.stop()
        _ = try? await authority.revoke(name: r.token)
        history[name]?.running = false
        logger.info("probe stopped", metadata: ["resource": "\(name)"])
    }

    func forget(_ name: String) { history[name] = nil }

    /// Revokes the device tokens of probes this runtime does not run (left by a process that died
    /// with its probes; they must not keep working).
    func revokeLeftoverTokens() async {
        let mine = Set(running.values.map(\.token))
        do {
            for token in try await authority.list()
            where token.role == .device && token.revokedAt == nil
                && token.name.hasPrefix("probe-") && !mine.contains(token.name)
            {
                _ = try await authority.revoke(name: token.name)
                logger.notice("revoked a probe token left by an earlier run", metadata: ["token.name": "\(token.name)"])
            }
        } catch {
            logger.warning("could not revoke leftover probe tokens", metadata: ["error.type": "\(type(of: error))"])
        }
    }

    func stopAll() async {
        for name in running.keys { await stop(name, logger: logger) }
    }

    var runningNames: [String] { Array(running.keys) }
}

struct ProbeStartError: Error, CustomStringConvertible {
    var description: String
}
