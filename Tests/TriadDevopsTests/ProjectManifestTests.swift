import Foundation
import Testing
import TriadCore

@Suite("Project manifests")
struct ProjectManifestTests {
    static let good = """
        apiVersion: triad.io/v1alpha1
        kind: Project
        metadata: {name: building}
        spec:
          description: The building's agents
          services:
            - name: purifier-agent
              repository: file:///srv/git/purifier.git
              ref: v1
              build: {command: [make, agent], artifact: dist/agent, env: {CC: clang}, timeout: 5m}
              run: ["{artifact}", --port, "8080"]
              health: /healthz
              meshService: purifier
            - name: people
              repository: ../people
              ref: main
              build: {command: [./build.sh], artifact: out/people}
              run: [python3, "{artifact}"]
              health: /healthz
              meshService: people
        """

    static func parse(_ yaml: String) throws -> ProjectManifest {
        try ProjectManifest.parse(try DocumentReader.read(Data(yaml.utf8), format: .yaml))
    }

    @Test func aManifestReadsAsWritten() throws {
        let project = try Self.parse(Self.good)
        #expect(project.name == "building" && project.services.count == 2)
        let purifier = try #require(project.service("purifier-agent"))
        #expect(purifier.build.command == ["make", "agent"] && purifier.build.timeoutSeconds == 300 && purifier.build.env == ["CC": "clang"])
        #expect(purifier.run == ["{artifact}", "--port", "8080"] && purifier.meshService == "purifier")
        #expect(project.service("people")?.build.timeoutSeconds == ProjectManifest.defaultBuildTimeoutSeconds)
    }

    /// schemas/project.schema.json says what the parser says: the same manifests pass and fail.
    @Test func theSchemaAgreesWithTheParser() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let refs = ["v1", "release/2.0", "a..b", "-x", "v1.lock", "bad ref", "tag^", "main"]
        var cases: [(String, JSONValue)] = [("good", try DocumentReader.read(Data(Self.good.utf8), format: .yaml))]
        for ref in refs {
            let doc = Self.good.replacingOccurrences(of: "ref: v1", with: "ref: \"\(ref)\"")
            cases.append((ref, try DocumentReader.read(Data(doc.utf8), format: .yaml)))
        }
        // The mesh section: listen addresses, pin propagation, unknown fields.
        let listens = ["127.0.0.1:8000", "gw.local:65535", "localhost:65536", "h:0", "h:080", "-h:80", "h:", "[::1]:80", "h:1"]
        for listen in listens {
            let doc = Self.good + "\n  mesh: {gateway: {listen: \"\(listen)\", service: purifier}}\n"
            cases.append(("listen " + listen, try DocumentReader.read(Data(doc.utf8), format: .yaml)))
        }
        for extra in ["pinPropagation: application", "pinPropagation: sometimes", "colour: red"] {
            let doc = Self.good + "\n  mesh: {gateway: {listen: \"127.0.0.1:8000\", service: purifier}, \(extra)}\n"
            cases.append((extra, try DocumentReader.read(Data(doc.utf8), format: .yaml)))
        }
        // Gateway routes by path: a prefix other than "/", without spaces, '?' or '#'.
        for route in [
            "{prefix: /agents/people/, service: people}", "{prefix: /, service: people}", "{prefix: \"/a b\", service: people}",
            "{prefix: \"/x?y\", service: people}", "{prefix: agents/, service: people}", "{prefix: /p/, service: people, weight: 1}",
        ] {
            let doc = Self.good + "\n  mesh: {gateway: {listen: \"127.0.0.1:8000\", service: purifier, routes: [\(route)]}}\n"
            cases.append(("route " + route, try DocumentReader.read(Data(doc.utf8), format: .yaml)))
        }
        // The gateway's bound on requests in progress: an integer from 1 to 100000.
        for limit in ["64", "1", "100000", "0", "2.5", "many", "100001"] {
            let doc = Self.good + "\n  mesh: {gateway: {listen: \"127.0.0.1:8000\", service: purifier, maxInFlight: \(limit)}}\n"
            cases.append(("maxInFlight " + limit, try DocumentReader.read(Data(doc.utf8), format: .yaml)))
        }
        let input = JSONValue.array(cases.map { .object(["name": .string($0.0), "doc": $0.1]) })
        let script = """
            import json, sys, jsonschema
            schema = json.load(open(sys.argv[1]))
            validator = jsonschema.Draft202012Validator(schema)
            print(json.dumps({c["name"]: validator.is_valid(c["doc"]) for c in json.load(sys.stdin)}))
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, root.appendingPathComponent("schemas/project.schema.json").path]
        let stdin = Pipe()
        let stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        try process.run()
        stdin.fileHandleForWriting.write(JSONCoding.encode(input))
        try stdin.fileHandleForWriting.close()
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let verdicts = try JSONCoding.parse(output)
        for (name, doc) in cases {
            let parsed = (try? ProjectManifest.parse(doc)) != nil
            #expect(verdicts[name] == .bool(parsed), "\(name): schema \(String(describing: verdicts[name])), parser \(parsed)")
        }
        #expect(verdicts["good"] == .bool(true) && verdicts["a..b"] == .bool(false))
    }

    @Test func everyProblemIsNamedAtOnce() throws {
        let bad = """
            apiVersion: triad.io/v1alpha1
            kind: Project
            metadata: {name: Building}
            spec:
              services:
                - name: agent
                  repository: "ext::sh -c touch% /tmp/x"
                  ref: "--upload-pack=x"
                  build: {command: [], artifact: ../outside, timeout: 9h, env: {1BAD: x}}
                  run: [agent]
                  health: healthz
                  meshService: agent
                  colour: blue
                - name: agent
                  repository: /srv/git/b
                  ref: v1
                  build: {command: [make], artifact: out/b}
                  run: [b]
                  health: /healthz
                  meshService: b
            """
        do {
            _ = try Self.parse(bad)
            Issue.record("an invalid manifest was accepted")
        } catch let invalid as ProjectManifest.Invalid {
            let pointers = Set(invalid.violations.map(\.pointer))
            for expected in [
                "/metadata/name", "/spec/services/0/repository", "/spec/services/0/ref", "/spec/services/0/build/command",
                "/spec/services/0/build/artifact", "/spec/services/0/build/timeout", "/spec/services/0/build/env/1BAD", "/spec/services/0/health",
                "/spec/services/0/colour", "/spec/services/1/name",
            ] {
                #expect(pointers.contains(expected), "\(expected) is named in \(invalid)")
            }
            #expect(invalid.description.contains("duplicates the name of /spec/services/0"))
        }
        #expect(throws: ProjectManifest.Invalid.self) {
            try Self.parse("apiVersion: triad.io/v1alpha1\nkind: Project\nmetadata: {name: p}\nspec: {services: []}\n")
        }
    }
}
