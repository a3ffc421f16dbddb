import Foundation
import NIOHTTP1
import Testing
import TriadClient
import TriadCore
import TriadServer
import TriadTesting

/// `schemas/openapi.yaml` is the contract: every route the server has is in it, and what the
/// server answers conforms to it.
@Suite("OpenAPI conformance")
struct OpenAPIConformanceTests {
    @Test func specIsValidAndMirrorsTheResourceSchema() async throws {
        let result = try await Python.run("check_openapi.py", ["lint"])
        #expect(result.status == 0, "\(result.output)")
    }

    /// deploy/kubernetes carries the same schema as a CRD; it is generated, and must not drift.
    @Test func kubernetesCRDMatchesTheResourceSchema() async throws {
        let result = try await Python.run("render_crd.py", ["--check"])
        #expect(result.status == 0, "\(result.output)")
    }

    @Test func everyServedRouteIsDocumentedAndEveryDocumentedRouteIsServed() async throws {
        try await withServer(.sqlite) { server in
            let routes = server.server.makeRouter().1.routes
            #expect(routes.count >= 17)
            let file = try TestPaths.temporaryDirectory() + "/routes.txt"
            try routes.joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
            let result = try await Python.run("check_openapi.py", ["routes", file])
            #expect(result.status == 0, "\(result.output)")
        }
    }

    /// Records responses with the route template they answered, for the checker.
    actor Recorder {
        var lines: [String] = []
        func record(_ method: String, _ template: String, _ reply: TriadClient.Reply) {
            let contentType = reply.header("content-type") ?? ""
            let body: JSONValue = contentType.contains("json") ? ((try? JSONCoding.parse(reply.body)) ?? .null) : .null
            let line: JSONValue = .object([
                "method": .string(method), "path": .string(template),
                "status": .number(Double(reply.status)), "contentType": .string(contentType), "body": body,
            ])
            lines.append(String(decoding: JSONCoding.encode(line), as: UTF8.self))
        }
    }

    @Test(arguments: BackendKind.allCases)
    func responsesConformToTheSpec(_ kind: BackendKind) async throws {
        try await withServer(kind) { server in
            let recorder = Recorder()
            let appToken = try await server.token(.app)
            func call(
                _ client: TriadClient, _ method: HTTPMethod, _ path: String, _ template: String, body: Data? = nil,
                contentType: String = "application/json", headers: [(String, String)] = []
            ) async throws -> TriadClient.Reply {
                let reply = try await client.send(method, path, body: body, contentType: contentType, headers: headers)
                await recorder.record(method.rawValue, template, reply)
                return reply
            }
            let admin = server.admin
            let app = server.client(token: appToken)
            let anon = TriadClient(server: server.baseURL, token: nil)
            let one = "/api/v1/resources/{name}"
            let device = Docs.json(Docs.device("coffee-3f", labels: ["triad.io/space": "pantry-3f"]))
            _ = try await call(admin, .POST, "/api/v1/resources", "/api/v1/resources", body: device)  // 201
            _ = try await call(admin, .POST, "/api/v1/resources", "/api/v1/resources", body: device)  // 409
            _ = try await call(admin, .POST, "/api/v1/resources", "/api/v1/resources", body: Data("{".utf8))  // 400
            _ = try await call(admin, .POST, "/api/v1/resources", "/api/v1/resources", body: Data("{}".utf8))  // 422
            _ = try await call(admin, .POST, "/api/v1/resources", "/api/v1/resources", body: device, contentType: "text/plain")  // 415
            _ = try await call(app, .POST, "/api/v1/resources", "/api/v1/resources", body: device)  // 403
            _ = try await call(anon, .GET, "/api/v1/resources", "/api/v1/resources")  // 401
            _ = try await call(admin, .GET, "/api/v1/resources?labelSelector=triad.io/space%3Dpantry-3f", "/api/v1/resources")  // 200
            _ = try await call(admin, .GET, "/api/v1/resources?limit=nope", "/api/v1/resources")  // 400
            _ = try await call(admin, .GET, "/api/v1/resources/coffee-3f", one)  // 200
            _ = try await call(admin, .GET, "/api/v1/resources/missing", one)  // 404
            _ = try await call(admin, .PUT, "/api/v1/resources/alice", one, body: Docs.json(Docs.resource("alice", kind: "Person")))  // 201
            _ = try await call(admin, .PUT, "/api/v1/resources/alice", one, body: Docs.json(Docs.resource("alice", kind: "Person")))  // 200
            _ = try await call(
                admin, .PUT, "/api/v1/resources/alice", one, body: Docs.json(Docs.resource("alice", kind: "Person")), headers: [("If-Match", "\"1\"")])  // 412
            _ = try await call(
                admin, .PATCH, "/api/v1/resources/coffee-3f", one, body: Data(#"{"spec":{"aliasName":"Coffee"}}"#.utf8),
                contentType: "application/merge-patch+json")  // 200
            _ = try await call(
                admin, .PATCH, "/api/v1/resources/coffee-3f", one, body: Data(#"{"metadata":{"resourceVersion":"1"}}"#.utf8),
                contentType: "application/merge-patch+json")  // 409
            _ = try await call(admin, .GET, "/api/v1/resources/coffee-3f/status", one + "/status")  // 200
            _ = try await call(
                admin, .PATCH, "/api/v1/resources/coffee-3f/status", one + "/status",
                body: Data(
                    #"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True","reason":"AgentUp"}],"location":{"space":"pantry-3f","since":"2026-11-25T10:00:00Z"}}}"#
                        .utf8),
                contentType: "application/merge-patch+json")  // 200
            _ = try await call(admin, .PUT, "/api/v1/resources/coffee-3f/status", one + "/status", body: Data(#"{"status":{"phase":"Bogus"}}"#.utf8))  // 422
            _ = try await call(admin, .PUT, "/api/v1/resources/missing/status", one + "/status", body: Data(#"{"status":{}}"#.utf8))  // 404
            _ = try await call(admin, .GET, "/api/v1/events?follow=false&since=0", "/api/v1/events")  // 200
            _ = try await call(admin, .GET, "/api/v1/events?since=x", "/api/v1/events")  // 400
            _ = try await call(app, .GET, "/api/v1/events?follow=false&since=0", "/api/v1/events")  // 200: apps watch
            _ = try await call(anon, .GET, "/api/v1/events", "/api/v1/events")  // 401
            // 201
            _ = try await call(admin, .POST, "/api/v1/tokens", "/api/v1/tokens", body: Data(#"{"name":"probe-1","role":"device","resource":"coffee-3f"}"#.utf8))
            _ = try await call(admin, .POST, "/api/v1/tokens", "/api/v1/tokens", body: Data(#"{"name":"probe-1","role":"app"}"#.utf8))  // 409
            _ = try await call(admin, .POST, "/api/v1/tokens", "/api/v1/tokens", body: Data(#"{"name":"x","role":"root"}"#.utf8))  // 422
            _ = try await call(admin, .GET, "/api/v1/tokens", "/api/v1/tokens")  // 200
            _ = try await call(admin, .DELETE, "/api/v1/tokens/probe-1", "/api/v1/tokens/{name}")  // 200
            _ = try await call(admin, .DELETE, "/api/v1/tokens/nobody", "/api/v1/tokens/{name}")  // 404
            _ = try await call(admin, .DELETE, "/api/v1/resources/alice", one)  // 200
            _ = try await call(admin, .DELETE, "/api/v1/resources/alice", one)  // 404
            // Operations and the ledger, against an upstream of the test's own.
            let upstream = try await Upstream.start()
            let kettle = Docs.json(InvocationTests.device("kettle", upstream: upstream, closedPort: try InvocationTests.closedPort()))
            _ = try await admin.call(.PUT, "/api/v1/resources/kettle", body: kettle)
            let invoke = "/api/v1/resources/{name}/operations/{op}"
            let ledger = "/api/v1/invocations"
            _ = try await call(app, .POST, "/api/v1/resources/kettle/operations/brew", invoke)  // 409
            _ = try await call(app, .POST, "/api/v1/resources/kettle/operations/nosuch", invoke)  // 404
            _ = try await app.call(.POST, "/api/v1/resources/kettle/binding", body: Data("{}".utf8))
            _ = try await call(app, .POST, "/api/v1/resources/kettle/operations/brew", invoke, body: Data(#"{"cups":1}"#.utf8))  // 200
            _ = try await call(app, .POST, "/api/v1/resources/kettle/operations/brew", invoke, headers: [("Prefer", "respond-async")])  // 202
            _ = try await call(app, .POST, "/api/v1/resources/kettle/operations/explode", invoke)  // 502
            _ = try await call(app, .POST, "/api/v1/resources/kettle/operations/brew", invoke, body: Data("x".utf8), contentType: "text/plain")  // 415
            let listed = try await call(app, .GET, ledger + "?resource=kettle&limit=2", ledger)  // 200
            _ = try await call(app, .GET, ledger + "?limit=0", ledger)  // 400
            _ = try await call(TriadClient(server: server.baseURL, token: try await server.token(.device, resource: "kettle")), .GET, ledger, ledger)  // 403
            let id = listed.json?["items"]?.arrayValue?.first?["id"]?.stringValue ?? ""
            _ = try await call(app, .GET, ledger + "/" + id, ledger + "/{id}")  // 200
            _ = try await call(app, .GET, ledger + "/nosuch", ledger + "/{id}")  // 404
            await upstream.stop()
            _ = try await call(anon, .GET, "/healthz", "/healthz")
            _ = try await call(anon, .GET, "/readyz", "/readyz")
            _ = try await call(admin, .GET, "/metrics", "/metrics")
            _ = try await call(anon, .GET, "/metrics", "/metrics")  // 401
            _ = try await call(admin, .GET, "/openapi.yaml", "/openapi.yaml")
            let file = try TestPaths.temporaryDirectory() + "/responses.jsonl"
            try await recorder.lines.joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
            let result = try await Python.run("check_openapi.py", ["responses", file])
            #expect(result.status == 0, "\(result.output)")
            #expect(result.output.contains("0 failures"), "\(result.output)")
        }
    }
}
