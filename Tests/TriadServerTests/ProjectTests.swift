import Foundation
import NIOHTTP1
import Testing
import TriadClient
import TriadCore
import TriadProcess
import TriadTesting

/// `/api/v1/projects` against real git repositories the test makes: the resources' rules, the
/// check of every repository and ref where it lives, roles, events, and refusals that leave
/// nothing behind.
@Suite("Projects")
struct ProjectTests {
    static func manifest(_ name: String, repository: String, ref: String, services: [String] = ["agent"]) -> Data {
        let list = services.map { service in
            """
            {"name": "\(service)", "repository": "\(repository)", "ref": "\(ref)", "build": {"command": ["./build.sh"], "artifact": "out/agent"},
             "run": ["{artifact}"], "health": "/healthz", "meshService": "agent"}
            """
        }
        return Data(
            """
            {"apiVersion": "triad.io/v1alpha1", "kind": "Project", "metadata": {"name": "\(name)"},
             "spec": {"description": "The building's agents", "services": [\(list.joined(separator: ","))]}}
            """.utf8)
    }

    /// The real executable's server on a data directory in `dir`, and the CLI's environment for it (its admin token).
    static func cliServer(in dir: String, _ arguments: [String] = []) async throws -> (ServerProcess, [String: String]) {
        let token = "cli-admin-token-\(UUID().uuidString)"
        let server = try await ServerProcess.start(["--data-dir", dir + "/data"] + arguments, environment: ["TRIAD_ADMIN_TOKEN": token], directory: dir)
        return (server, ["TRIAD_SERVER": server.baseURL, "TRIAD_TOKEN": token])
    }

    static func commit(_ ref: String, in repo: String) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/git")
        p.arguments = ["-C", repo, "rev-parse", "\(ref)^{commit}"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        p.waitUntilExit()
        return String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test(arguments: [BackendKind.sqlite, .postgres])
    func aProjectIsCheckedWhereItsRepositoriesLive(_ kind: BackendKind) async throws {
        let (_, repo) = try GitFixture.makeRepository()
        try await withServer(kind) { server in
            let admin = server.admin
            let created = try await admin.send(.PUT, "/api/v1/projects/building", body: Self.manifest("building", repository: repo, ref: "v1"))
            #expect(created.status == 201 && created.header("Location") == "/api/v1/projects/building")
            let doc = try #require(created.json)
            #expect(doc["status"]?["execResult"]?["result"] == .string("Succeeded"), "\(doc)")
            #expect(doc["status"]?["services"]?["agent"]?["commit"] == .string(try Self.commit("v1", in: repo)))
            #expect(doc["status"]?["observedGeneration"] == .number(1))
            #expect(created.header("ETag") == "\"\(doc["metadata"]?["resourceVersion"]?.stringValue ?? "")\"")

            // A ref the repository does not have: recorded as Failed, with git's reason.
            let missing = try await admin.call(.PUT, "/api/v1/projects/building", body: Self.manifest("building", repository: repo, ref: "v9"))
            let result = try #require(missing.json?["status"]?["execResult"])
            #expect(result["result"] == .string("Failed") && result["reason"] == .string("RepositoryCheckFailed"))
            #expect(result["message"]?.stringValue?.contains("no tag, branch or commit named v9") == true, "\(result)")
            #expect(missing.json?["metadata"]?["generation"] == .number(2))

            // An unreachable repository, and a host the server may not reach: Failed, saying which.
            let gone = try await admin.call(
                .PUT, "/api/v1/projects/building", body: Self.manifest("building", repository: "file:///nonexistent/agent.git", ref: "v1"))
            #expect(gone.json?["status"]?["execResult"]?["message"]?.stringValue?.contains("cannot reach the repository") == true)
            let elsewhere = try await admin.call(
                .PUT, "/api/v1/projects/building", body: Self.manifest("building", repository: "https://192.0.2.1/agent.git", ref: "v1"))
            let refused = elsewhere.json?["status"]?["execResult"]?["message"]?.stringValue ?? ""
            #expect(refused.contains("192.0.2.1 is not on the allowed hosts"), "\(refused)")

            // The same spec again is a new version without a new check.
            let again = try await admin.call(
                .PUT, "/api/v1/projects/building", body: Self.manifest("building", repository: "https://192.0.2.1/agent.git", ref: "v1"))
            #expect(again.json?["metadata"]?["generation"] == elsewhere.json?["metadata"]?["generation"])
            #expect(again.json?["status"] == elsewhere.json?["status"])

            // The resources' concurrency rules.
            let version = try #require(again.json?["metadata"]?["resourceVersion"]?.stringValue)
            var stale = try #require(JSONCoding.parse(Self.manifest("building", repository: repo, ref: "v1")).objectValue)
            stale["metadata"] = .object(["name": .string("building"), "resourceVersion": .string("1")])
            let conflict = try await admin.send(.PUT, "/api/v1/projects/building", body: JSONCoding.encode(JSONValue.object(stale)))
            #expect(conflict.status == 409 && conflict.json?["currentResourceVersion"] == .string(version))
            let precondition = try await admin.send(.DELETE, "/api/v1/projects/building", headers: [("If-Match", "\"1\"")])
            #expect(precondition.status == 412)
            #expect(try await admin.send(.POST, "/api/v1/projects", body: Self.manifest("building", repository: repo, ref: "v1")).status == 409)

            let listed = try await admin.call(.GET, "/api/v1/projects").json
            #expect(listed?["kind"] == .string("ProjectList") && listed?["items"]?.arrayValue?.count == 1)
            let deleted = try await admin.send(.DELETE, "/api/v1/projects/building")
            #expect(deleted.status == 200)
            let after = try await admin.send(.GET, "/api/v1/projects/building")
            #expect(after.status == 404 && after.json?["detail"]?.stringValue?.contains("project \"building\"") == true)
        }
    }

    /// Bad documents are refused with every problem at once, and nothing is stored.
    @Test func badProjectsAreRefusedAndNothingIsStored() async throws {
        let (_, repo) = try GitFixture.makeRepository()
        try await withServer(.sqlite) { server in
            let twice = try await server.admin.send(.POST, "/api/v1/projects", body: Self.manifest("twice", repository: repo, ref: "v1", services: ["a", "a"]))
            #expect(twice.status == 422)
            let pointers = (twice.json?["errors"]?.arrayValue ?? []).compactMap { $0["pointer"]?.stringValue }
            #expect(pointers == ["/spec/services/1/name"], "\(twice.json as Any)")
            let badRef = try await server.admin.send(.PUT, "/api/v1/projects/bad", body: Self.manifest("bad", repository: "-oProxyCommand=x", ref: "..x"))
            #expect(badRef.status == 422)
            #expect(
                Set((badRef.json?["errors"]?.arrayValue ?? []).compactMap { $0["pointer"]?.stringValue }) == [
                    "/spec/services/0/repository", "/spec/services/0/ref",
                ])
            let otherName = try await server.admin.send(.PUT, "/api/v1/projects/other", body: Self.manifest("bad", repository: repo, ref: "v1"))
            #expect(otherName.status == 422)
            #expect(try await server.admin.send(.PUT, "/api/v1/projects/junk", body: Data("{not json".utf8)).status == 400)
            #expect(try await server.admin.call(.GET, "/api/v1/projects").json?["items"]?.arrayValue?.isEmpty == true)
            #expect(try await server.admin.send(.GET, "/api/v1/projects/twice").status == 404)
        }
    }

    /// Operators write projects, integrators read them; apps and devices see neither projects nor
    /// their events (a device whose resource shares a project's name included).
    @Test func rolesAndEvents() async throws {
        let (_, repo) = try GitFixture.makeRepository()
        try await withServer(.sqlite) { server in
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("building")))
            let op = server.client(token: try await server.token(.operator))
            let integrator = server.client(token: try await server.token(.integrator))
            let app = server.client(token: try await server.token(.app))
            let device = server.client(token: try await server.token(.device, resource: "building"))
            #expect(try await op.send(.PUT, "/api/v1/projects/building", body: Self.manifest("building", repository: repo, ref: "v1")).status == 201)
            #expect(try await integrator.send(.GET, "/api/v1/projects/building").status == 200)
            #expect(try await integrator.send(.PUT, "/api/v1/projects/building", body: Self.manifest("building", repository: repo, ref: "v2")).status == 403)
            #expect(try await app.send(.GET, "/api/v1/projects").status == 403)
            #expect(try await device.send(.GET, "/api/v1/projects/building").status == 403)

            func types(_ client: TriadClient) async throws -> [String] {
                let body = String(decoding: try await client.call(.GET, "/api/v1/events?follow=false&since=0").body, as: UTF8.self)
                return body.split(separator: "\n").filter { $0.hasPrefix("event: ") }.map { String($0.dropFirst(7)) }
            }
            // Created, then its check's status.
            #expect(try await types(integrator).filter { $0.hasPrefix("io.triad.project.") } == ["io.triad.project.created", "io.triad.project.status"])
            #expect(try await types(app).allSatisfy { !$0.hasPrefix("io.triad.project.") })
            #expect(try await types(device) == ["io.triad.resource.created"])
        }
    }

    /// `triad project apply|get|describe|delete` with the real executable and server: a check
    /// that fails shows git's reason and exits 1; a bad manifest names every problem, sends nothing.
    @Test func theCLIAppliesDescribesAndDeletesProjects() async throws {
        let (dir, repo) = try GitFixture.makeRepository()
        let (server, admin) = try await Self.cliServer(in: dir)
        defer { server.stop() }
        let manifest = """
            apiVersion: triad.io/v1alpha1
            kind: Project
            metadata: {name: building}
            spec:
              description: The building's agents
              services:
                - name: purifier-agent
                  repository: \(repo)
                  ref: v1
                  build: {command: [./build.sh], artifact: out/agent}
                  run: ["{artifact}"]
                  health: /healthz
                  meshService: purifier
            """
        try GitFixture.write(dir + "/building.yaml", manifest)
        var r = try await runTriad(["project", "apply", "-f", dir + "/building.yaml"], environment: admin)
        #expect(r.status == 0 && r.stdout.contains("project/building created") && r.stdout.contains("check: Succeeded"), "\(r.stdout)\(r.stderr)")
        r = try await runTriad(["project", "get"], environment: admin)
        #expect(r.status == 0 && r.stdout.hasPrefix("NAME") && r.stdout.contains("purifier-agent") && r.stdout.contains("Succeeded"), "\(r.stdout)")
        r = try await runTriad(["project", "describe", "building"], environment: admin)
        let v1 = String(try Self.commit("v1", in: repo).prefix(12))
        #expect(r.status == 0 && r.stdout.contains(v1), "\(r.stdout)")

        try GitFixture.write(dir + "/missing.yaml", manifest.replacingOccurrences(of: "ref: v1", with: "ref: v7"))
        r = try await runTriad(["project", "apply", "-f", dir + "/missing.yaml"], environment: admin)
        #expect(r.status == 1 && r.stdout.contains("project/building configured") && r.stdout.contains("check: Failed"), "\(r.stdout)")
        #expect(r.stdout.contains("no tag, branch or commit named v7"), "\(r.stdout)")

        try GitFixture.write(
            dir + "/bad.yaml",
            manifest.replacingOccurrences(of: "name: building", with: "name: Bad_Name").replacingOccurrences(of: "ref: v1", with: "ref: -x"))
        r = try await runTriad(["project", "apply", "-f", dir + "/bad.yaml"], environment: admin)
        #expect(r.status == 1 && r.stderr.contains("/metadata/name") && r.stderr.contains("/spec/services/0/ref"), "\(r.stderr)")
        let listed = try await runTriad(["project", "get", "-o", "json"], environment: admin)
        #expect(!listed.stdout.contains("Bad_Name"))

        r = try await runTriad(["project", "delete", "building"], environment: admin)
        #expect(r.status == 0 && r.stdout == "project/building deleted\n")
        r = try await runTriad(["project", "get", "building"], environment: admin)
        #expect(r.status == 1 && r.stderr.contains("project \"building\" does not exist"), "\(r.stderr)")
    }

    /// `triad project build|builds`: the build runs where the CLI runs, from the project the server
    /// holds; a commit built before is reused; a failing build shows why and its log, and exits 1.
    @Test func theCLIBuildsAServiceAtARefAndListsItsBuilds() async throws {
        let (dir, repo) = try GitFixture.makeRepository()
        // A second service whose build fails.
        try GitFixture.write(repo + "/fail.sh", "#!/bin/sh\necho compiling\necho 'error: no such module' >&2\nexit 3\n")
        try GitFixture.sh("chmod +x fail.sh && git add fail.sh && git commit -qm fail && git tag -f v2", in: repo)
        let (server, env) = try await Self.cliServer(in: dir)
        defer { server.stop() }
        var manifest = try #require(JSONCoding.parse(Self.manifest("building", repository: repo, ref: "v1", services: ["agent", "broken"])).objectValue)
        if case .object(var spec)? = manifest["spec"], case .array(var services)? = spec["services"], case .object(var broken) = services[1] {
            broken["build"] = .object(["command": .array([.string("./fail.sh")]), "artifact": .string("out/agent")])
            broken["ref"] = .string("v2")
            services[1] = .object(broken)
            spec["services"] = .array(services)
            manifest["spec"] = .object(spec)
        }
        _ = try await TriadClient(server: server.baseURL, token: env["TRIAD_TOKEN"]).call(
            .PUT, "/api/v1/projects/building", body: JSONCoding.encode(JSONValue.object(manifest)))
        let place = ["--data-dir", dir + "/cli"]

        var r = try await runTriad(["project", "build", "building", "agent"] + place, environment: env)
        #expect(r.status == 0 && r.stdout.contains("build building/agent at v1: Succeeded"), "\(r.stdout)\(r.stderr)")
        #expect(r.stderr.contains("commit \(try Self.commit("v1", in: repo).prefix(12))"), "a progress line names the commit: \(r.stderr)")
        let artifact = try #require(r.stdout.split(separator: "\n").first { $0.contains("artifact:") }?.split(separator: " ").last.map(String.init))
        #expect(try String(contentsOfFile: artifact, encoding: .utf8) == "v1\n")
        r = try await runTriad(["project", "build", "building", "agent"] + place, environment: env)
        #expect(r.status == 0 && r.stdout.contains("(built before, reused)"), "\(r.stdout)")
        r = try await runTriad(["project", "build", "building", "agent", "--ref", "v2"] + place, environment: env)
        #expect(r.status == 0 && r.stdout.contains("at v2: Succeeded"), "\(r.stdout)\(r.stderr)")

        r = try await runTriad(["project", "build", "building", "broken"] + place, environment: env)
        #expect(r.status == 1 && r.stderr.contains("exited with status 3") && r.stderr.contains("error: no such module"), "\(r.stderr)")
        r = try await runTriad(["project", "build", "building", "nope"] + place, environment: env)
        #expect(r.status == 1 && r.stderr.contains("has no service nope (it has agent, broken)"), "\(r.stderr)")
        r = try await runTriad(["project", "build", "building", "agent", "--ref", "v9"] + place, environment: env)
        #expect(r.status == 1 && r.stderr.contains("no tag, branch or commit named v9"), "\(r.stderr)")

        r = try await runTriad(["project", "builds", "building"] + place, environment: env)
        #expect(r.status == 0 && r.stdout.hasPrefix("SERVICE"), "\(r.stdout)")
        let rows = r.stdout.split(separator: "\n").dropFirst()
        #expect(rows.filter { $0.contains("Succeeded") }.count == 2 && rows.filter { $0.contains("Failed") }.count == 1, "\(r.stdout)")
        r = try await runTriad(["project", "builds", "building", "broken"] + place, environment: env)
        #expect(r.stdout.split(separator: "\n").count == 2, "\(r.stdout)")
    }

    /// `triad project up`: every service built at its ref and run here as a mesh, behind the
    /// gateway the manifest names; the version is the ref. A project without a mesh is refused.
    /// `triad project update`: refs that cannot go live are refused and recorded; v2 goes live under
    /// traffic with nothing failed, and the project's status shows it and the history.
    @Test func theCLIRunsAProjectAsAMeshAndUpdatesItLive() async throws {
        let (dir, repo) = try GitFixture.makeRepository()
        // A service that answers with the version it was built from.
        try GitFixture.write(
            repo + "/svc.py",
            """
            import http.server, os

            VERSION = "@VERSION@"
            class Handler(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    body = VERSION.encode()
                    self.send_response(200)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                def log_message(self, *args):
                    pass
            http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
            """)
        // The artifact is one file: the version goes into it.
        try GitFixture.write(repo + "/pack.sh", "#!/bin/sh\nset -e\nmkdir -p out/web\nsed \"s/@VERSION@/$(cat VERSION)/\" svc.py > out/web/svc.py\n")
        try GitFixture.write(repo + "/VERSION", "v1\n")
        try GitFixture.sh("chmod +x pack.sh && git add -A && git commit -qm web && git tag -f v1", in: repo)
        let (server, env) = try await Self.cliServer(in: dir)
        defer { server.stop() }
        let gateway = try freeLoopbackPort()
        let manifest = """
            apiVersion: triad.io/v1alpha1
            kind: Project
            metadata: {name: site}
            spec:
              services:
                - name: web-agent
                  repository: \(repo)
                  ref: v1
                  build: {command: [./pack.sh], artifact: out/web/svc.py}
                  run: [python3, "{artifact}"]
                  health: /healthz
                  meshService: web
            """
        try GitFixture.write(dir + "/nomesh.yaml", manifest)
        _ = try await runTriad(["project", "apply", "-f", dir + "/nomesh.yaml"], environment: env)
        var r = try await runTriad(["project", "up", "site", "--data-dir", dir + "/cli"], directory: dir, environment: env)
        #expect(r.status == 1 && r.stderr.contains("has no spec.mesh"), "\(r.stderr)")

        try GitFixture.write(dir + "/site.yaml", manifest + "\n  mesh: {gateway: {listen: \"127.0.0.1:\(gateway)\", service: web}}\n")
        r = try await runTriad(["project", "apply", "-f", dir + "/site.yaml"], environment: env)
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        r = try await runTriad(["project", "up", "site", "--data-dir", dir + "/cli"], directory: dir, environment: env)
        try await withMeshDownAfter(in: dir, environment: env) {
            #expect(r.status == 0 && r.stdout.contains("project site up: gateway") && r.stdout.contains("web v1 (web-agent at v1"), "\(r.stdout)\(r.stderr)")
            let reply = try await TriadClient(server: "http://127.0.0.1:\(gateway)", token: nil).send(.GET, "/")
            #expect(reply.status == 200 && String(decoding: reply.body, as: UTF8.self) == "v1")
            #expect(reply.header("x-version") == "web-v1", "the mesh's version header")
            r = try await runTriad(["mesh", "status"], directory: dir, environment: env)
            #expect(r.status == 0 && r.stdout.contains("web"), "\(r.stdout)")

            // Live updates. Refs that cannot go live first: each is a clear error, recorded, and v1 keeps serving.
            try GitFixture.sh("git checkout -q -b attempts", in: repo)
            try GitFixture.write(repo + "/pack.sh", "#!/bin/sh\necho compiling the web service\necho 'svc.py:3: syntax error' >&2\nexit 2\n")
            try GitFixture.sh("chmod +x pack.sh && git commit -qam broken && git tag broken", in: repo)
            try GitFixture.write(repo + "/pack.sh", "#!/bin/sh\necho packing nothing\n")
            try GitFixture.sh("chmod +x pack.sh && git commit -qam empty && git tag empty", in: repo)
            try GitFixture.sh("git checkout -q main", in: repo)
            let update = ["project", "update", "site", "web-agent", "--data-dir", dir + "/cli"]
            for (ref, says) in [
                ("broken", "svc.py:3: syntax error"), ("empty", "out/web/svc.py"), ("v9", "v9"),
            ] {
                r = try await runTriad(update + ["--ref", ref], directory: dir, environment: env)
                #expect(r.status == 1 && r.stderr.contains("nothing deployed") && r.stderr.contains(says), "\(ref): \(r.stdout)\(r.stderr)")
            }
            r = try await runTriad(update + ["--ref", "v1"], directory: dir, environment: env)
            #expect(r.status == 1 && r.stderr.contains("already runs v1"), "\(r.stdout)\(r.stderr)")
            r = try await runTriad(update + ["--ref", "v2", "--strategy", "XY"], directory: dir, environment: env)
            #expect(r.status != 0 && r.stderr.contains("--strategy XY"), "\(r.stderr)")
            var served = try await TriadClient(server: "http://127.0.0.1:\(gateway)", token: nil).send(.GET, "/")
            #expect(String(decoding: served.body, as: UTF8.self) == "v1", "nothing deployed")

            // v2 live under traffic (CV): no request fails, v1 is retired, the project says so.
            try GitFixture.sh("git tag -f v2 $(git rev-parse v1) && git commit -q --allow-empty -m v2", in: repo)
            try GitFixture.write(repo + "/VERSION", "v2\n")
            try GitFixture.sh("git commit -qam v2 && git tag -f v2", in: repo)
            let firstServed = OneShot()
            let traffic = Task {
                var failures: [String] = []
                var served = 0
                let client = TriadClient(server: "http://127.0.0.1:\(gateway)", token: nil)
                while !Task.isCancelled {
                    do {
                        let reply = try await client.send(.GET, "/")
                        if reply.status == 200 {
                            served += 1
                            firstServed.fire()
                        } else {
                            failures.append("\(reply.status) \(String(decoding: reply.body.prefix(200), as: UTF8.self))")
                        }
                    } catch {
                        if !Task.isCancelled { failures.append("\(error)") }
                    }
                }
                return (served, failures)
            }
            await firstServed.wait()
            r = try await runTriad(update + ["--ref", "v2"], directory: dir, environment: env)
            traffic.cancel()
            #expect(r.status == 0 && r.stdout.contains("retired") && r.stdout.contains("now runs v2"), "\(r.stdout)\(r.stderr)")
            let (servedDuring, failures) = await traffic.value
            #expect(servedDuring > 0 && failures.isEmpty, "no request failed during the CV update: \(failures.prefix(5))")
            served = try await TriadClient(server: "http://127.0.0.1:\(gateway)", token: nil).send(.GET, "/")
            #expect(String(decoding: served.body, as: UTF8.self) == "v2" && served.header("x-version") == "web-v2")
            let status = try await TriadClient(server: env["TRIAD_SERVER"]!, token: env["TRIAD_TOKEN"]).send(.GET, "/api/v1/projects/site").json?["status"]
            #expect(status?["current"]?["web-agent"]?["ref"] == .string("v2"))
            #expect(status?["current"]?["web-agent"]?["commit"] == .string(try Self.commit("v2", in: repo)))
            let history = status?["history"]?.arrayValue ?? []
            #expect(history.compactMap { $0["outcome"]?.stringValue } == ["Failed", "Failed", "Failed", "Succeeded"], "\(history)")
            #expect(history.last?["from"]?["ref"] == .string("v1") && history.last?["to"]?["version"] == .string("v2"))
            #expect(history.last?["by"]?.stringValue != nil && history.last?["strategy"] == .string("CV"))
            #expect(history.last?["drainedTransactions"]?.numberValue != nil)
            r = try await runTriad(["project", "describe", "site"], environment: env)
            #expect(r.stdout.contains("Updates (newest last):") && r.stdout.contains("Succeeded"), "\(r.stdout)")
            r = try await runTriad(update + ["--ref", "v2"], directory: dir, environment: env)
            #expect(r.status == 1 && r.stderr.contains("already runs v2"), "\(r.stdout)\(r.stderr)")
        }
    }

    /// `POST /api/v1/projects/{name}/updates`: what the CLI records, checked field by field.
    @Test func updateRecordsAreChecked() async throws {
        let (_, repo) = try GitFixture.makeRepository()
        try await withServer(.sqlite) { server in
            _ = try await server.admin.call(.PUT, "/api/v1/projects/building", body: Self.manifest("building", repository: repo, ref: "v1"))
            let path = "/api/v1/projects/building/updates"
            for (body, pointer) in [
                (#"{"service": "nope", "strategy": "CV", "outcome": "Succeeded", "to": {"ref": "v2"}}"#, "/service"),
                (#"{"service": "agent", "strategy": "fast", "outcome": "Succeeded", "to": {"ref": "v2"}}"#, "/strategy"),
                (#"{"service": "agent", "strategy": "CV", "outcome": "Great", "to": {"ref": "v2"}}"#, "/outcome"),
                (#"{"service": "agent", "strategy": "CV", "outcome": "Failed"}"#, "/to"),
                (#"{"service": "agent", "strategy": "CV", "outcome": "Failed", "to": {"ref": "v2", "commit": "XYZ"}}"#, "/to/commit"),
                (#"{"service": "agent", "strategy": "CV", "outcome": "Failed", "to": {"ref": "v2"}, "by": "someone else"}"#, "/by"),
                (#"{"service": "agent", "strategy": "CV", "outcome": "Failed", "to": {"ref": "v2"}, "drainedTransactions": -1}"#, "/drainedTransactions"),
            ] {
                let reply = try await server.admin.send(.POST, path, body: Data(body.utf8))
                #expect(reply.status == 422 && String(decoding: reply.body, as: UTF8.self).contains("\"\(pointer)\""), "\(body): \(reply.status)")
            }
            let valid = Data(#"{"service": "agent", "strategy": "CV", "outcome": "Failed", "to": {"ref": "v2"}}"#.utf8)
            #expect(try await server.admin.send(.POST, "/api/v1/projects/nothing/updates", body: valid).status == 404)
            #expect(try await server.admin.call(.GET, "/api/v1/projects/building").json?["status"]?["history"] == nil, "nothing recorded")
            let integrator = server.client(token: try await server.token(.integrator))
            #expect(try await integrator.send(.POST, path, body: valid).status == 403)
            let op = server.client(token: try await server.token(.operator))
            let recorded = try await op.send(.POST, path, body: valid)
            #expect(recorded.status == 201 && recorded.json?["status"]?["history"]?.arrayValue?.first?["outcome"] == .string("Failed"))
            #expect(recorded.json?["status"]?["current"] == nil, "a failed update puts nothing live")
        }
    }
}
