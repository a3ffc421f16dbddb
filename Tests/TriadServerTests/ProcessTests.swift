import Foundation
import NIOHTTP1
import Testing
import TriadClient
import TriadCore
import TriadTesting

/// The `triad` executable as users run it: first start, kill -9 and restart, and the CLI verbs.
@Suite("Server process and CLI")
struct ProcessTests {
    /// A server's database argument for `kind`: a new SQLite file or a new PostgreSQL database.
    static func databaseArguments(_ kind: BackendKind, dataDir: String) async throws -> [String] {
        switch kind {
        case .sqlite:
            return ["--data-dir", dataDir]
        case .postgres:
            let db = TestEnvironment.uniqueName("restart")
            try await TestEnvironment.postgresAdmin("CREATE DATABASE \(db)")
            let base = try TestEnvironment.postgresURL()
            let url = base[..<base.lastIndex(of: "/")!] + "/" + db
            return ["--data-dir", dataDir, "--database", String(url)]
        }
    }

    @Test(arguments: BackendKind.allCases)
    func everythingAcknowledgedSurvivesKill9(_ kind: BackendKind) async throws {
        let dir = try TestPaths.temporaryDirectory()
        let args = try await Self.databaseArguments(kind, dataDir: dir + "/data")
        let token = "restart-admin-token-0123456789abcdef"
        let first = try await ServerProcess.start(args, environment: ["TRIAD_ADMIN_TOKEN": token], directory: dir)
        let acknowledged = try await first.killWhileWriting(token: token, prefix: "r")
        #expect(acknowledged.count >= 50)

        let second = try await ServerProcess.start(args, environment: ["TRIAD_ADMIN_TOKEN": token], directory: dir)
        defer { second.stop() }
        let again = TriadClient(server: second.baseURL, token: token)
        let list = try await again.call(.GET, "/api/v1/resources?limit=1000")
        var found: [String: String] = [:]
        for item in list.json?["items"]?.arrayValue ?? [] {
            if let n = item["metadata"]?["name"]?.stringValue { found[n] = item["metadata"]?["resourceVersion"]?.stringValue }
        }
        for (name, version) in acknowledged {
            #expect(found[name] == version, "\(name) was acknowledged at version \(version)")
        }
        // The event log lost nothing either, and ids continue after the restart.
        let events = Collected()
        try await again.streamEvents(query: "?follow=false", lastEventID: "0") { id, type, data in await events.add(id, type, data) }
        let createdIDs = Set(await events.items.map(\.0))
        for version in acknowledged.values { #expect(createdIDs.contains(version)) }
        let next = try await again.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("after-restart")))
        let nextVersion = Int(next.json?["metadata"]?["resourceVersion"]?.stringValue ?? "") ?? 0
        #expect(nextVersion > acknowledged.values.compactMap { Int($0) }.max() ?? 0)
    }

    @Test func firstStartWritesTheAdminTokenFileOnce() async throws {
        let dir = try TestPaths.temporaryDirectory()
        let server = try await ServerProcess.start([], directory: dir)
        let path = dir + "/.triad/admin.token"
        let token = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        #expect(try await TriadClient(server: server.baseURL, token: token).send(.GET, "/api/v1/resources").status == 200)
        #expect(!server.log.contains(token), "the secret is not logged")
        server.stop()
        #expect(server.process.terminationStatus == 0, "SIGTERM is a clean shutdown: \(server.log)")
        try FileManager.default.removeItem(atPath: path)
        let again = try await ServerProcess.start([], directory: dir)
        defer { again.stop() }
        #expect(!FileManager.default.fileExists(atPath: path), "an existing admin means no new token file")
        #expect(try await TriadClient(server: again.baseURL, token: token).send(.GET, "/api/v1/resources").status == 200)
    }

    @Test func cliVerbsAgainstARunningServer() async throws {
        let dir = try TestPaths.temporaryDirectory()
        let server = try await ServerProcess.start(
            ["--data-dir", dir + "/data"], environment: ["TRIAD_ADMIN_TOKEN": "cli-admin-token-0123456789abcdef0123"], directory: dir)
        defer { server.stop() }
        let env = ["TRIAD_SERVER": server.baseURL, "TRIAD_TOKEN": "cli-admin-token-0123456789abcdef0123"]
        let manifest = """
            apiVersion: triad.io/v1alpha1
            kind: Resource
            metadata: {name: coffee-3f, labels: {triad.io/space: pantry-3f}}
            spec:
              kind: Device
              accessMode: Exclusive
              operations:
                - {name: brew, price: 3.5, httpAction: {action: POST, url: "http://127.0.0.1:9101/operations/brew"}}
            ---
            apiVersion: triad.io/v1alpha1
            kind: Resource
            metadata: {name: alice}
            spec: {kind: Person}
            ---
            apiVersion: triad.io/v1alpha1
            kind: Resource
            metadata: {name: pantry-3f}
            spec: {kind: Space}
            """
        try manifest.write(toFile: dir + "/demo.yaml", atomically: true, encoding: .utf8)
        var r = try await runTriad(["apply", "-f", dir + "/demo.yaml"], environment: env)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "resource/coffee-3f created\nresource/alice created\nresource/pantry-3f created\n")
        r = try await runTriad(["apply", "-f", "-"], stdin: manifest, environment: env)
        #expect(r.stdout.contains("resource/alice configured"))

        r = try await runTriad(["get", "resources", "-l", "triad.io/space=pantry-3f", "-o", "json"], environment: env)
        #expect(r.status == 0)
        #expect(try JSONCoding.parse(Data(r.stdout.utf8))["items"]?.arrayValue?.count == 1)
        r = try await runTriad(["get", "resources", "--kind", "Person"], environment: env)
        #expect(r.stdout.hasPrefix("NAME") && r.stdout.contains("alice") && !r.stdout.contains("coffee-3f"))
        r = try await runTriad(["get", "resources", "coffee-3f", "-o", "yaml"], environment: env)
        #expect(r.stdout.contains("name: coffee-3f"))
        r = try await runTriad(["describe", "resource", "coffee-3f"], environment: env)
        #expect(r.status == 0 && r.stdout.contains("brew") && r.stdout.contains("io.triad.resource.created"))

        // Server errors: one readable line on stderr and a non-zero exit.
        r = try await runTriad(["get", "resources", "missing"], environment: env)
        #expect(r.status != 0)
        #expect(r.stderr == "error: Not found: resource \"missing\" does not exist (HTTP 404)\n")
        r = try await runTriad(
            ["apply", "-f", "-"], stdin: "apiVersion: triad.io/v1alpha1\nkind: Resource\nmetadata: {name: bad}\nspec: {kind: Robot}\n", environment: env)
        #expect(r.status != 0)
        #expect(r.stderr.split(separator: "\n").count == 1 && r.stderr.contains("/spec/kind"))
        r = try await runTriad(["apply", "-f", "-"], stdin: "metadata: {name: [\n", environment: env)
        #expect(r.status != 0 && r.stderr.hasPrefix("error: -: body is not valid YAML"))
        r = try await runTriad(["get", "resources"], environment: ["TRIAD_SERVER": server.baseURL, "TRIAD_TOKEN": "wrong"])
        #expect(r.status != 0 && r.stderr.contains("HTTP 401"))

        // Tokens: created (printed alone), used, revoked.
        r = try await runTriad(["token", "create", "--role", "app", "--name", "kiosk"], environment: env)
        #expect(r.status == 0)
        let kiosk = r.stdout.trimmingCharacters(in: .newlines)
        #expect(!kiosk.contains(" ") && r.stdout.split(separator: "\n").count == 1)
        #expect(try await runTriad(["get", "resources"], environment: ["TRIAD_SERVER": server.baseURL, "TRIAD_TOKEN": kiosk]).status == 0)
        r = try await runTriad(["delete", "resource", "alice"], environment: ["TRIAD_SERVER": server.baseURL, "TRIAD_TOKEN": kiosk])
        #expect(r.status != 0 && r.stderr.contains("HTTP 403"))
        r = try await runTriad(["token", "create", "--role", "device", "--name", "probe", "--resource", "coffee-3f"], environment: env)
        #expect(r.status == 0)
        #expect(try await runTriad(["token", "revoke", "kiosk"], environment: env).stdout == "token/kiosk revoked\n")
        #expect(try await runTriad(["get", "resources"], environment: ["TRIAD_SERVER": server.baseURL, "TRIAD_TOKEN": kiosk]).status != 0)

        r = try await runTriad(["events", "--types", "io.triad.resource.created"], environment: env)
        #expect(r.status == 0)
        #expect(r.stdout.split(separator: "\n").count == 3)
        #expect(try await runTriad(["delete", "resource", "alice"], environment: env).stdout == "resource/alice deleted\n")
    }

    /// The embedded registry serves from memory, so a second server on the same file must not start.
    @Test func aSecondServerOnTheSameSQLiteFileIsRefused() async throws {
        let dir = try TestPaths.temporaryDirectory()
        let first = try await ServerProcess.start(["--data-dir", dir + "/data"], directory: dir)
        defer { first.stop() }
        let r = try await runTriad(["server", "--data-dir", dir + "/data", "--listen", "127.0.0.1:0"], directory: dir)
        #expect(r.status != 0)
        #expect(r.stderr.contains("another triad server is using"), "\(r.stderr)")
    }

    /// Flags override TRIAD_* variables, which override the --config file.
    @Test func configurationPrecedence() async throws {
        let dir = try TestPaths.temporaryDirectory()
        try "dataDir: \(dir)/from-file\nlogLevel: info\n".write(toFile: dir + "/triad.yaml", atomically: true, encoding: .utf8)
        var server = try await ServerProcess.start(["--config", dir + "/triad.yaml"], directory: dir)
        server.stop()
        #expect(FileManager.default.fileExists(atPath: dir + "/from-file/admin.token"), "the file's dataDir")
        server = try await ServerProcess.start(["--config", dir + "/triad.yaml"], environment: ["TRIAD_DATA_DIR": dir + "/from-env"], directory: dir)
        server.stop()
        #expect(FileManager.default.fileExists(atPath: dir + "/from-env/admin.token"), "the environment beats the file")
        server = try await ServerProcess.start(
            ["--config", dir + "/triad.yaml", "--data-dir", dir + "/from-flag"],
            environment: ["TRIAD_DATA_DIR": dir + "/from-env"], directory: dir)
        server.stop()
        #expect(FileManager.default.fileExists(atPath: dir + "/from-flag/admin.token"), "the flag beats both")
    }

    @Test func badServerConfigurationIsRefusedClearly() async throws {
        let dir = try TestPaths.temporaryDirectory()
        var r = try await runTriad(["server", "--database", "mysql://x"], directory: dir)
        #expect(r.status != 0 && r.stderr.contains("--database must be"))
        r = try await runTriad(["server", "--listen", "nowhere"], directory: dir)
        #expect(r.status != 0 && r.stderr.contains("--listen must be HOST:PORT"))
        try "database: sqlite:x.db\ncolour: blue\n".write(toFile: dir + "/c.yaml", atomically: true, encoding: .utf8)
        r = try await runTriad(["server", "--config", dir + "/c.yaml"], directory: dir)
        #expect(r.status != 0 && r.stderr.contains("unknown key \"colour\""))
        r = try await runTriad(["server"], directory: dir, environment: ["TRIAD_MAX_BODY_BYTES": "lots"])
        #expect(r.status != 0 && r.stderr.contains("maxBodyBytes must be an integer"))
        // The broker and telemetry settings.
        r = try await runTriad(["server", "--data-dir", dir + "/d1", "--mqtt", "http://broker:1883"], directory: dir)
        #expect(r.status == 1 && r.stderr.contains("invalid MQTT URL"), "\(r.stderr)")
        r = try await runTriad(["server", "--data-dir", dir + "/d2", "--amqp", "amqp://guest:secret@"], directory: dir)
        #expect(r.status == 1 && !r.stderr.contains("secret"), "no password in the message: \(r.stderr)")
        r = try await runTriad(["server", "--mqtt-shared", "maybe"], directory: dir)
        #expect(r.status != 0 && r.stderr.contains("mqttShared must be true or false"))
        r = try await runTriad(["server", "--telemetry-rate", "0"], directory: dir)
        #expect(r.status != 0 && r.stderr.contains("telemetryRate must be at least 1"))
        r = try await runTriad(["server", "--telemetry-events", "often"], directory: dir)
        #expect(r.status != 0 && r.stderr.contains("telemetryEvents must be single or batch, not often"), "\(r.stderr)")
        r = try await runTriad(["server", "--check", "--telemetry-events", "batch"], directory: dir)
        #expect(r.status == 0, "\(r.stderr)")
        try "telemetryRetentionHours: forever\n".write(toFile: dir + "/t.yaml", atomically: true, encoding: .utf8)
        r = try await runTriad(["server", "--config", dir + "/t.yaml"], directory: dir)
        #expect(r.status != 0 && r.stderr.contains("telemetryRetentionHours must be an integer"))
        r = try await runTriad(["agent", "--config", dir + "/t.yaml", "--listen", "nowhere"], directory: dir)
        #expect(r.status != 0 && r.stderr.contains("--listen nowhere is not HOST:PORT"), "\(r.stderr)")
    }
}
