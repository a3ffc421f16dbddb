import ArgumentParser
import Dispatch
import Foundation
import NIOHTTP1
import TriadClient
import TriadCore
import TriadMQTT

struct ProbeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "Reference probes, and a probe rendered for Kubernetes.",
        subcommands: [Simulate.self, HomeAssistant.self, Render.self])

    /// A synthetic sensor (docs/mqtt.md). The controller's local runtime starts probes with
    /// TRIAD_RESOURCE, TRIAD_MQTT_URL, TRIAD_API_URL and TRIAD_TOKEN; the flags override them.
    struct Simulate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Publish synthetic telemetry for a resource.",
            discussion: """
                Over MQTT when an MQTT URL is given (announcing `online` on triad/v1/resources/NAME/probe, \
                with `offline` as its will), else through POST /api/v1/resources/NAME/telemetry.
                """)

        @OptionGroup var target: ProbeTarget
        @Option(help: "Samples per second; 0 announces online and then stays silent (default 1).")
        var rate: Double = 1
        @Option(name: .customLong("value"), help: "NAME=MIN..MAX (a random value in range) or NAME=NUMBER; repeatable (default value=0..100).")
        var values: [String] = []
        @Option(help: "Stop after this many samples (exit 0).")
        var count: Int?
        @Option(help: "Exit with status 3 after this many samples, as a crash would (for testing restarts).")
        var crashAfter: Int?

        enum Generator {
            case range(Double, Double)
            case constant(Double)
        }

        func parseValues() throws -> [(String, Generator)] {
            try (values.isEmpty ? ["value=0..100"] : values).map { spec in
                let parts = spec.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2, !parts[0].isEmpty else { throw ValidationError("--value must be NAME=MIN..MAX or NAME=NUMBER, not \(spec)") }
                if let n = Double(parts[1]) { return (parts[0], .constant(n)) }
                let bounds = parts[1].components(separatedBy: "..")
                guard bounds.count == 2, let lo = Double(bounds[0]), let hi = Double(bounds[1]), lo <= hi else {
                    throw ValidationError("--value must be NAME=MIN..MAX or NAME=NUMBER, not \(spec)")
                }
                return (parts[0], .range(lo, hi))
            }
        }

        func run() async throws {
            try await runClientVerb { try await simulate() }
        }

        func simulate() async throws {
            let name = try target.resourceName()
            guard rate >= 0, rate <= 10_000 else { throw ValidationError("--rate must be from 0 to 10000") }
            let generators = try parseValues()
            func sample() -> [UInt8] {
                var values: [String: JSONValue] = [:]
                for (key, g) in generators {
                    switch g {
                    case .constant(let n): values[key] = .number(n)
                    case .range(let lo, let hi): values[key] = .number(((Double.random(in: lo...hi)) * 100).rounded() / 100)
                    }
                }
                let ms = (Date().timeIntervalSince1970 * 1000).rounded()
                return Array(JSONCoding.encode(JSONValue.object(["ts": .number(ms), "values": .object(values)])))
            }
            let output = try await target.connect(resource: name)
            let stop = ProbeLifetime()
            var sent = 0
            while stop.shouldRun {
                if rate > 0 {
                    try await output.send(sample())
                    sent += 1
                    if let crashAfter, sent >= crashAfter {
                        FileHandle.standardError.write(Data("probe: crashing after \(sent) samples, as asked\n".utf8))
                        Foundation.exit(3)
                    }
                    if let count, sent >= count { break }
                    try await Task.sleep(for: .seconds(1 / rate))
                } else {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            await output.finish()
        }
    }

    /// Follows a Home Assistant entity (docs/mqtt.md): its state (a number when it is one) and
    /// attributes, sent every interval, so the resource stays Synchronous while HA answers.
    struct HomeAssistant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "homeassistant",
            abstract: "Publish a Home Assistant entity's state as telemetry.",
            discussion: """
                Home Assistant is found with --ha-url (env HA_URL, default http://127.0.0.1:8123) and a \
                long-lived token from --ha-token-file or env HA_TOKEN (never a flag: arguments are visible \
                to every user of the machine). Telemetry goes out as with `triad probe simulate`.
                """)

        @Option(help: "The entity, e.g. sensor.outside_temperature.")
        var entity: String
        @OptionGroup var target: ProbeTarget
        @Option(help: "Home Assistant's URL (env HA_URL; default http://127.0.0.1:8123).")
        var haURL: String?
        @Option(help: "A file holding the long-lived access token (else env HA_TOKEN).")
        var haTokenFile: String?
        @Option(help: "Seconds between readings (default 2).")
        var interval: Double = 2

        func run() async throws {
            try await runClientVerb { try await follow() }
        }

        func follow() async throws {
            let env = ProcessInfo.processInfo.environment
            let name = try target.resourceName()
            guard entity.split(separator: ".").count == 2, !entity.contains("/") else {
                throw ValidationError("--entity must look like domain.object_id, e.g. sensor.outside_temperature")
            }
            guard interval >= 0.1, interval <= 3600 else { throw ValidationError("--interval must be from 0.1 to 3600 seconds") }
            let token: String
            if let file = haTokenFile {
                guard let data = FileManager.default.contents(atPath: file) else { throw CLIError("cannot read the token file \(file)") }
                token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            } else if let t = env["HA_TOKEN"], !t.isEmpty {
                token = t
            } else {
                throw ValidationError("give --ha-token-file or set HA_TOKEN")
            }
            let home = TriadClient(server: haURL ?? env["HA_URL"] ?? "http://127.0.0.1:8123", token: token)
            let output = try await target.connect(resource: name)
            let lifetime = ProbeLifetime()
            while lifetime.shouldRun {
                do {
                    let reply = try await home.send(.GET, "/api/states/\(entity)")
                    switch reply.status {
                    case 200:
                        guard let state = reply.json else { throw CLIError("Home Assistant answered with something other than JSON") }
                        try await output.send(Self.sample(state))
                    case 401, 403: throw CLIError("Home Assistant refused the token (HTTP \(reply.status))")
                    case 404: throw CLIError("Home Assistant has no entity \(entity)")
                    default:
                        FileHandle.standardError.write(Data("probe: Home Assistant answered HTTP \(reply.status); retrying\n".utf8))
                    }
                } catch let error as CLIError {
                    await output.finish()
                    throw error
                } catch {
                    // Home Assistant restarting or unreachable: no sample, so the resource turns silent.
                    FileHandle.standardError.write(Data("probe: cannot reach Home Assistant: \(error); retrying\n".utf8))
                }
                try await Task.sleep(for: .seconds(interval))
            }
            await output.finish()
        }

        /// `{"values": {"state", "attributes", "lastUpdated"}}` from a state object (a numeric
        /// state is a number). Stamped on receipt: HA's own times stay in the values.
        static func sample(_ state: JSONValue) -> [UInt8] {
            var values: [String: JSONValue] = ["attributes": state["attributes"] ?? .object([:])]
            let text = state["state"]?.stringValue ?? ""
            if let n = Double(text), n.isFinite { values["state"] = .number(n) } else { values["state"] = .string(text) }
            if let updated = state["last_updated"] { values["lastUpdated"] = updated }
            return Array(JSONCoding.encode(JSONValue.object(["values": .object(values)])))
        }
    }

    struct Render: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a resource's probe as a Kubernetes Deployment (the kubernetes runtime).")
        @OptionGroup var options: ClientOptions
        @Argument(help: "The resource.")
        var name: String
        @Option(help: "TRIAD_MQTT_URL inside the cluster (default mqtt://triad-mqtt:1883).")
        var mqttURL = "mqtt://triad-mqtt:1883"
        @Option(help: "TRIAD_API_URL inside the cluster (default http://triad:8080).")
        var apiURL = "http://triad:8080"
        @Option(help: "Namespace for the Deployment.")
        var namespace: String?

        func run() async throws {
            try await runClientVerb {
                let reply = try await options.client().call(.GET, "/api/v1/resources/\(name)")
                let resource = try JSONDecoder().decode(Resource.self, from: reply.body)
                do {
                    print(DocumentWriter.yaml(try ProbeDeployment.render(resource, mqttURL: mqttURL, apiURL: apiURL, namespace: namespace)), terminator: "")
                } catch let error as ProbeDeployment.RenderError {
                    throw CLIError(error.description)
                }
            }
        }
    }
}

/// What every reference probe is told: which resource, and where its samples go. The
/// controller's local runtime sets the environment; the flags override it.
struct ProbeTarget: ParsableArguments {
    @Option(help: "The resource (env TRIAD_RESOURCE).")
    var resource: String?
    @Option(help: "mqtt://host:port (env TRIAD_MQTT_URL); without it, samples go through the REST API.")
    var mqtt: String?
    @Option(help: "Server URL for the REST path (env TRIAD_API_URL).")
    var api: String?

    func resourceName() throws -> String {
        guard let name = resource ?? ProcessInfo.processInfo.environment["TRIAD_RESOURCE"], ResourceValidator.isValidName(name) else {
            throw ValidationError("--resource (or TRIAD_RESOURCE) must name a resource")
        }
        return name
    }

    func connect(resource name: String) async throws -> ProbeOutput {
        try await ProbeOutput.connect(resource: name, mqtt: mqtt, api: api)
    }
}

/// Where a probe's samples go: MQTT when a broker URL is known (announcing `online`, with
/// `offline` as the will), else the REST telemetry route with the probe's token.
struct ProbeOutput: Sendable {
    let send: @Sendable ([UInt8]) async throws -> Void
    let finish: @Sendable () async -> Void

    static func connect(resource name: String, mqtt: String?, api: String?) async throws -> ProbeOutput {
        let env = ProcessInfo.processInfo.environment
        if let url = mqtt ?? env["TRIAD_MQTT_URL"] {
            let probeTopic = Telemetry.topic(name, .probe)
            let client = try MQTTClient(
                endpoint: try MQTTEndpoint(url: url),
                will: MQTTWill(topic: probeTopic, payload: Array("offline".utf8), retain: true))
            try client.start()
            guard await client.waitUntilReady(timeout: .seconds(30)) else {
                throw CLIError("cannot reach the MQTT broker \(client.endpoint): \(client.lastError ?? "timed out")")
            }
            try client.publish(topic: probeTopic, payload: Array("online".utf8), retain: true)
            let topic = Telemetry.topic(name, .telemetry)
            return ProbeOutput(
                send: { payload in try client.publish(topic: topic, payload: payload) },
                finish: {
                    try? client.publish(topic: probeTopic, payload: Array("offline".utf8), retain: true)
                    try? await Task.sleep(for: .milliseconds(200))  // let the network thread send it
                    client.stop()
                })
        }
        guard let api = api ?? env["TRIAD_API_URL"] else {
            throw ValidationError("give --mqtt (TRIAD_MQTT_URL) or --api (TRIAD_API_URL)")
        }
        let client = TriadClient(server: api, token: env["TRIAD_TOKEN"])
        let path = "/api/v1/resources/\(name)/telemetry"
        return ProbeOutput(send: { payload in _ = try await client.call(.POST, path, body: Data(payload)) }, finish: {})
    }
}

/// How long a probe runs: until SIGTERM/SIGINT, or until its parent dies. A probe outlives a
/// killed server (kill -9 sends it nothing); it notices that it was re-parented and stops, so a
/// new controller leader never finds two probes running.
///
/// `@unchecked Sendable`, and why that holds: `stopped` is read and written only under `lock`;
/// `parent` is a constant; `sources` (not Sendable: Dispatch's protocol predates the checks) is
/// written once, in `init`, before the instance can be shared, and touched again only in `deinit`.
final class ProbeLifetime: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    private let parent = getppid()
    private var sources: [any DispatchSourceSignal] = []

    init() {
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        sources = [SIGTERM, SIGINT].map { sig in
            let source = DispatchSource.makeSignalSource(signal: sig)
            source.setEventHandler { [weak self] in self?.lock.withLock { self?.stopped = true } }
            source.resume()
            return source
        }
    }

    deinit { sources.forEach { $0.cancel() } }

    var shouldRun: Bool { !lock.withLock { stopped } && getppid() == parent }
}
