import Foundation
import Testing
import TriadMesh

/// The mesh file: the schema's rules and the ones it cannot express, each bad input named.
@Suite("Mesh file")
struct MeshConfigTests {
    static let good = """
        apiVersion: triad.io/v1alpha1
        kind: Mesh
        metadata: {name: demo}
        spec:
          gateway: {listen: 127.0.0.1:8000, service: portal}
          services:
            - name: portal
              default: v1
              versions:
                - {version: v1, command: [python3, portal.py]}
            - name: auth
              default: v1
              versions:
                - {version: v1, command: [python3, auth.py, --version, v1], health: /healthz, replicas: 2}
                - {version: v2, upstream: "127.0.0.1:9011"}
        """

    func parse(_ text: String) throws -> MeshConfig {
        try MeshConfigParser.parse(Data(text.utf8), file: "mesh.yaml", baseDirectory: "/srv/mesh")
    }

    /// The problems of a bad file, as text.
    func problems(_ text: String) -> [String] {
        do {
            _ = try parse(text)
            return []
        } catch let error as MeshConfigError {
            return error.problems.map(\.description)
        } catch {
            return ["unexpected \(error)"]
        }
    }

    @Test func aGoodFileParses() throws {
        let c = try parse(Self.good)
        #expect(c.name == "demo")
        #expect(c.pinPropagation == .mesh, "mesh is the default")
        #expect(c.gateway.listen == HostPort(host: "127.0.0.1", port: 8000))
        #expect(c.service("auth")?.versions.count == 2)
        #expect(c.service("auth")?.version("v1")?.replicas == 2)
        #expect(c.service("auth")?.version("v2")?.source == .upstream(HostPort(host: "127.0.0.1", port: 9011)))
        #expect(c.service("portal")?.version("v1")?.health == "/healthz")
        #expect(c.baseDirectory == "/srv/mesh")
    }

    @Test func theExampleSystemsFileParses() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let c = try MeshConfigParser.load(path: root.path + "/agents/examples/mesh.yaml")
        #expect(c.services.map(\.name) == ["portal", "auth", "proc", "db"])
        #expect(c.baseDirectory == root.path + "/agents/examples")
    }

    @Test func gatewayNamingAnUnknownService() {
        let p = problems(Self.good.replacingOccurrences(of: "service: portal}", with: "service: shop}"))
        #expect(p == [#"spec.gateway.service: "shop" is not a service of this mesh (services: portal, auth)"#])
    }

    @Test func gatewayRoutesByPath() throws {
        let routed = Self.good.replacingOccurrences(
            of: "service: portal}", with: "service: portal, routes: [{prefix: /agents/auth/, service: auth}, {prefix: /agents/a, service: portal}]}")
        let c = try parse(routed)
        #expect(c.gateway.routes == [.init(prefix: "/agents/auth/", service: "auth"), .init(prefix: "/agents/a", service: "portal")])
        #expect(c.gateway.service(forPath: "/agents/auth/operations/x") == "auth", "the longest prefix wins")
        #expect(c.gateway.service(forPath: "/agents/alice/meta") == "portal")
        #expect(c.gateway.service(forPath: "/order") == "portal")
        let bad = Self.good.replacingOccurrences(
            of: "service: portal}",
            with:
                "service: portal, routes: [{prefix: /x/, service: shop}, {prefix: /, service: auth}, {prefix: /x/, service: auth}, {prefix: /y, service: auth, weight: 2}]}"
        )
        #expect(
            problems(bad) == [
                #"spec.gateway.routes[1].prefix: "/" is not an HTTP path prefix other than / (no spaces, '?' or '#')"#,
                #"spec.gateway.routes[2].prefix: duplicate prefix "/x/" (also spec.gateway.routes[0])"#,
                #"spec.gateway.routes[3].weight: unknown field (allowed: prefix, service)"#,
                #"spec.gateway.routes[0].service: "shop" is not a service of this mesh (services: portal, auth)"#,
            ])
    }

    @Test func theGatewaysLimitOfRequestsInProgress() throws {
        #expect(try parse(Self.good).gateway.maxInFlight == nil, "unset: Envoy's own limits")
        #expect(try parse(Self.good.replacingOccurrences(of: "service: portal}", with: "service: portal, maxInFlight: 64}")).gateway.maxInFlight == 64)
        for bad in ["0", "2.5", "\"many\"", "100001"] {
            #expect(
                problems(Self.good.replacingOccurrences(of: "service: portal}", with: "service: portal, maxInFlight: \(bad)}")) == [
                    "spec.gateway.maxInFlight: must be an integer from 1 to 100000"
                ], "\(bad)")
        }
    }

    @Test func aDuplicateVersion() {
        let p = problems(Self.good.replacingOccurrences(of: "{version: v2, upstream", with: "{version: v1, upstream"))
        #expect(p.count == 1)
        #expect(p.first?.hasPrefix(#"spec.services[1].versions[1].version: duplicate version "v1" of service "auth""#) == true)
    }

    @Test func aDuplicateService() {
        let p = problems(Self.good.replacingOccurrences(of: "- name: auth", with: "- name: portal"))
        #expect(p.count == 1)
        #expect(p.first?.hasPrefix(#"spec.services[1].name: duplicate service "portal""#) == true)
    }

    @Test func neitherCommandNorUpstream() {
        let p = problems(Self.good.replacingOccurrences(of: "{version: v2, upstream: \"127.0.0.1:9011\"}", with: "{version: v2}"))
        #expect(p == ["spec.services[1].versions[1]: needs exactly one of command (Triad starts the instances) or upstream (already running); it has neither"])
    }

    @Test func bothCommandAndUpstream() {
        let p = problems(Self.good.replacingOccurrences(of: "upstream: \"127.0.0.1:9011\"", with: "upstream: \"127.0.0.1:9011\", command: [x]"))
        #expect(p == ["spec.services[1].versions[1]: needs exactly one of command or upstream; it has both"])
    }

    @Test func aDefaultThatIsNotAVersion() {
        let p = problems(Self.good.replacingOccurrences(of: "  - name: auth\n      default: v1", with: "  - name: auth\n      default: v3"))
        #expect(p == [#"spec.services[1].default: "v3" is not one of the service's versions (v1, v2)"#])
    }

    @Test func schemaRules() {
        #expect(problems(Self.good.replacingOccurrences(of: "kind: Mesh", with: "kind: Mash")) == ["kind: must be Mesh"])
        #expect(
            problems(Self.good.replacingOccurrences(of: "8000", with: "80000")) == [
                #"spec.gateway.listen: "127.0.0.1:80000" is not HOST:PORT with a port from 1 to 65535"#
            ])
        #expect(
            problems(Self.good.replacingOccurrences(of: "{version: v2,", with: "{version: v-2,")).first?.hasPrefix(
                "spec.services[1].versions[1].version: \"v-2\" is not a version name") == true)
        #expect(
            problems(Self.good.replacingOccurrences(of: "replicas: 2", with: "replicas: 0")) == [
                "spec.services[1].versions[0].replicas: must be an integer from 1 to 1000"
            ])
        #expect(
            problems(Self.good.replacingOccurrences(of: "spec:\n", with: "spec:\n  pinPropagation: sometimes\n")) == [
                "spec.pinPropagation: must be mesh or application"
            ])
        #expect(
            problems(Self.good.replacingOccurrences(of: "metadata: {name: demo}", with: "metadata: {name: demo, owner: me}")).first?.hasPrefix(
                "metadata.owner: unknown field") == true)
        #expect(
            problems(Self.good.replacingOccurrences(of: "command: [python3, portal.py]", with: "command: []")) == [
                "spec.services[0].versions[0].command: must be a non-empty array of strings (program and arguments, no shell)"
            ])
    }

    @Test func everyProblemIsReportedAtOnce() {
        let text = Self.good
            .replacingOccurrences(of: "service: portal}", with: "service: shop}")
            .replacingOccurrences(of: "{version: v2, upstream: \"127.0.0.1:9011\"}", with: "{version: v2}")
        let p = problems(text)
        #expect(p.count == 2, "\(p)")
    }

    @Test func yamlSyntaxErrorsSayWhere() {
        let p = problems("apiVersion: triad.io/v1alpha1\nkind: [Mesh\n")
        #expect(p.count == 1)
        #expect(p.first?.contains("line ") == true, "\(p)")
    }
}

@Suite("Mesh state file")
struct MeshStateFileTests {
    @Test func theStateFileHoldingTheControlSecretIsOwnerOnlyFromItsCreation() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("triad-state-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var state = try JSONDecoder().decode(
            MeshState.self,
            from: Data(
                """
                {"name": "m", "controlURL": "http://127.0.0.1:1", "token": "\(MeshState.newToken())", "pid": 1, "gateway": "",
                 "runDirectory": "\(dir)", "startedAt": "2026-01-01T00:00:00Z", "processes": []}
                """.utf8))
        // A link planted where the temporary file goes must not be written through.
        try FileManager.default.createDirectory(atPath: MeshState.directory(in: dir), withIntermediateDirectories: true)
        let target = dir + "/planted"
        try FileManager.default.createSymbolicLink(atPath: MeshState.directory(in: dir) + "/.state.json.tmp", withDestinationPath: target)
        try state.save(in: dir)
        #expect(!FileManager.default.fileExists(atPath: target))
        func mode(_ path: String) throws -> Int { (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int ?? -1) & 0o777 }
        #expect(try mode(MeshState.path(in: dir)) == 0o600)
        state.pid = 2
        try state.save(in: dir)
        #expect(try mode(MeshState.path(in: dir)) == 0o600)
        #expect(MeshState.load(from: dir)?.pid == 2)
    }
}
