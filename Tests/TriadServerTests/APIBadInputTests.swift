import Foundation
import NIOHTTP1
import Testing
import TriadClient
import TriadCore

/// Every kind of bad input gets a clear 4xx problem+json, changes nothing, and does not stop
/// the server serving others.
@Suite("REST API: bad input")
struct APIBadInputTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var label: String
        var method: String = "POST"
        var path: String = "/api/v1/resources"
        var body: String
        var contentType: String = "application/json"
        var status: Int
        var pointer: String? = nil
        var testDescription: String { label }
    }

    static let valid =
        #"{"apiVersion":"triad.io/v1alpha1","kind":"Resource","metadata":{"name":"coffee-3f"},"spec":{"kind":"Device","operations":[{"name":"brew","price":3.5,"httpAction":{"action":"POST","url":"http://127.0.0.1:9101/brew"}}]}}"#

    static func variant(_ replace: String, with: String) -> String {
        valid.replacingOccurrences(of: replace, with: with)
    }

    static let cases: [Case] = [
        Case(label: "malformed JSON", body: #"{"apiVersion": "triad.io/v1alpha1", "#, status: 400),
        Case(label: "malformed YAML", body: "apiVersion: triad.io/v1alpha1\nmetadata: {name: [x\n", contentType: "application/yaml", status: 400),
        Case(label: "YAML with two documents", body: "a: 1\n---\nb: 2\n", contentType: "application/yaml", status: 400),
        Case(label: "empty body", body: "", status: 400),
        Case(label: "wrong type", body: variant(#""price":3.5"#, with: #""price":"3.5""#), status: 422, pointer: "/spec/operations/0/price"),
        Case(label: "unknown enum value", body: variant(#""kind":"Device""#, with: #""kind":"Robot""#), status: 422, pointer: "/spec/kind"),
        Case(label: "invalid name", body: variant("coffee-3f", with: "Coffee_3F"), status: 422, pointer: "/metadata/name"),
        Case(label: "name too long", body: variant("coffee-3f", with: String(repeating: "a", count: 64)), status: 422, pointer: "/metadata/name"),
        Case(
            label: "missing required field",
            body: variant(
                #","spec":{"kind":"Device","operations":[{"name":"brew","price":3.5,"httpAction":{"action":"POST","url":"http://127.0.0.1:9101/brew"}}]}"#,
                with: ""), status: 422, pointer: "/spec"),
        Case(
            label: "operation with invalid URL", body: variant("http://127.0.0.1:9101/brew", with: "ftp://127.0.0.1/brew"), status: 422,
            pointer: "/spec/operations/0/httpAction/url"),
        Case(
            label: "operation with invalid method", body: variant(#""action":"POST""#, with: #""action":"FETCH""#), status: 422,
            pointer: "/spec/operations/0/httpAction/action"),
        Case(label: "unknown field", body: variant(#""kind":"Device""#, with: #""kind":"Device","colour":"red""#), status: 422, pointer: "/spec/colour"),
        Case(
            label: "too many labels",
            body: variant(#""name":"coffee-3f""#, with: #""name":"coffee-3f","labels":{"# + (0..<65).map { "\"l\($0)\":\"v\"" }.joined(separator: ",") + "}"),
            status: 422, pointer: "/metadata/labels"),
        Case(
            label: "too many operations",
            body: variant(
                #""operations":[{"name":"brew","price":3.5,"httpAction":{"action":"POST","url":"http://127.0.0.1:9101/brew"}}]"#,
                with: #""operations":["#
                    + (0..<65).map { #"{"name":"op\#($0)","httpAction":{"action":"POST","url":"http://127.0.0.1:9101/x"}}"# }.joined(separator: ",") + "]"),
            status: 422, pointer: "/spec/operations"),
        Case(label: "unsupported media type", body: valid, contentType: "text/plain", status: 415),
        Case(label: "name differs from URL", method: "PUT", path: "/api/v1/resources/other-name", body: valid, status: 422, pointer: "/metadata/name"),
        Case(
            label: "patch that is not an object", method: "PATCH", path: "/api/v1/resources/existing", body: "[1,2]",
            contentType: "application/merge-patch+json", status: 400),
        Case(
            label: "patch making the document invalid", method: "PATCH", path: "/api/v1/resources/existing", body: #"{"spec":{"accessMode":"Private"}}"#,
            contentType: "application/merge-patch+json", status: 422, pointer: "/spec/accessMode"),
        Case(
            label: "patch with the wrong media type", method: "PATCH", path: "/api/v1/resources/existing", body: #"{"spec":{}}"#,
            contentType: "application/yaml", status: 415),
        Case(
            label: "status with an invalid phase", method: "PATCH", path: "/api/v1/resources/existing/status", body: #"{"status":{"phase":"Sleeping"}}"#,
            contentType: "application/merge-patch+json", status: 422, pointer: "/status/phase"),
        Case(
            label: "status without status", method: "PUT", path: "/api/v1/resources/existing/status", body: #"{"metadata":{}}"#, status: 422, pointer: "/status"
        ),
        Case(label: "bad label selector", method: "GET", path: "/api/v1/resources?labelSelector=a%20in%20(b", body: "", status: 400),
        Case(label: "bad limit", method: "GET", path: "/api/v1/resources?limit=0", body: "", status: 400),
        Case(label: "forged continue token", method: "GET", path: "/api/v1/resources?continue=xyz", body: "", status: 400),
        Case(label: "bad If-Match", method: "DELETE", path: "/api/v1/resources/existing", body: "", status: 400),
    ]

    @Test(arguments: BackendKind.allCases, cases)
    func rejectedWithProblemAndNothingChanges(_ kind: BackendKind, _ c: Case) async throws {
        try await withServer(kind) { server in
            let api = server.admin
            _ = try await api.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("existing")))
            let before = try await api.call(.GET, "/api/v1/resources").body
            let headers = c.label == "bad If-Match" ? [("If-Match", "42")] : []
            let reply = try await api.send(
                .init(rawValue: c.method), c.path, body: c.method == "GET" ? nil : Data(c.body.utf8),
                contentType: c.contentType, headers: headers)
            #expect(reply.status == c.status, "\(c.label): \(String(decoding: reply.body, as: UTF8.self))")
            #expect(reply.header("content-type") == "application/problem+json")
            let problem = try #require(reply.json)
            #expect(problem["type"]?.stringValue?.hasPrefix("https://triad.io/problems/") == true)
            #expect(problem["title"]?.stringValue?.isEmpty == false)
            #expect(problem["detail"]?.stringValue?.isEmpty == false)
            #expect(problem["status"] == .number(Double(c.status)))
            let detail = problem["detail"]?.stringValue ?? ""
            #expect(!detail.contains("DecodingError") && !detail.contains("codingPath") && !detail.contains("Swift."), "no internals: \(detail)")
            if let pointer = c.pointer {
                let pointers = problem["errors"]?.arrayValue?.compactMap { $0["pointer"]?.stringValue } ?? []
                #expect(pointers.contains(pointer), "\(c.label): expected \(pointer) in \(pointers)")
            }
            let after = try await api.call(.GET, "/api/v1/resources").body
            #expect(before == after, "\(c.label) changed the store")
        }
    }

    @Test(arguments: BackendKind.allCases)
    func bodyOverTheLimitIs413(_ kind: BackendKind) async throws {
        try await withServer(kind, maxBodyBytes: 4096) { server in
            let big = Self.variant(#""kind":"Device""#, with: #""kind":"Device","aliasName":""# + String(repeating: "x", count: 8000) + "\"")
            let reply = try await server.admin.send(.POST, "/api/v1/resources", body: Data(big.utf8))
            #expect(reply.status == 413)
            #expect(reply.header("content-type") == "application/problem+json")
            let list = try await server.admin.call(.GET, "/api/v1/resources")
            #expect(list.json?["items"]?.arrayValue?.isEmpty == true)
            // And the server still serves a normal request.
            #expect(try await server.admin.send(.POST, "/api/v1/resources", body: Data(Self.valid.utf8)).status == 201)
        }
    }

    @Test(arguments: BackendKind.allCases)
    func staleVersionsName409And412WithCurrentVersion(_ kind: BackendKind) async throws {
        try await withServer(kind) { server in
            let api = server.admin
            let created = try await api.call(.POST, "/api/v1/resources", body: Data(Self.valid.utf8))
            let v1 = try #require(created.json?["metadata"]?["resourceVersion"]?.stringValue)
            #expect(created.header("etag") == "\"\(v1)\"")
            #expect(created.header("location") == "/api/v1/resources/coffee-3f")
            let patched = try await api.call(
                .PATCH, "/api/v1/resources/coffee-3f", body: Data(#"{"metadata":{"labels":{"a":"b"}}}"#.utf8), contentType: "application/merge-patch+json")
            let v2 = try #require(patched.json?["metadata"]?["resourceVersion"]?.stringValue)
            #expect(patched.json?["metadata"]?["generation"] == .number(1), "label writes keep generation")

            var stale = try #require(created.json)
            if case .object(var m) = stale, case .object(var meta)? = m["metadata"] {
                meta["labels"] = .object(["a": .string("c")])
                m["metadata"] = .object(meta)
                stale = .object(m)
            }
            let conflict = try await api.send(.PUT, "/api/v1/resources/coffee-3f", body: JSONCoding.encode(stale))
            #expect(conflict.status == 409)
            #expect(conflict.json?["currentResourceVersion"]?.stringValue == v2)
            #expect(conflict.header("etag") == "\"\(v2)\"")

            let precondition = try await api.send(.PUT, "/api/v1/resources/coffee-3f", body: Data(Self.valid.utf8), headers: [("If-Match", "\"\(v1)\"")])
            #expect(precondition.status == 412)
            #expect(precondition.json?["currentResourceVersion"]?.stringValue == v2)
            #expect(precondition.header("etag") == "\"\(v2)\"")

            let current = try await api.call(.GET, "/api/v1/resources/coffee-3f")
            #expect(current.json?["metadata"]?["labels"]?["a"]?.stringValue == "b", "neither stale write landed")
            let ok = try await api.send(.PUT, "/api/v1/resources/coffee-3f", body: Data(Self.valid.utf8), headers: [("If-Match", "\"\(v2)\"")])
            #expect(ok.status == 200)
        }
    }

    @Test(arguments: BackendKind.allCases)
    func authenticationAndRoles(_ kind: BackendKind) async throws {
        try await withServer(kind) { server in
            let api = server.admin
            _ = try await api.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("fan")))
            _ = try await api.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("lamp")))
            let before = try await api.call(.GET, "/api/v1/resources").body

            // Missing, malformed, unknown.
            let anonymous = TriadClient(server: server.baseURL, token: nil)
            for reply in [
                try await anonymous.send(.GET, "/api/v1/resources"),
                try await anonymous.send(.GET, "/metrics"),
                try await server.client(token: "not-a-token").send(.GET, "/api/v1/resources"),
                try await anonymous.send(.POST, "/api/v1/resources", body: Docs.json(Docs.device("x"))),
            ] {
                #expect(reply.status == 401)
                #expect(reply.header("content-type") == "application/problem+json")
                #expect(reply.header("www-authenticate")?.hasPrefix("Bearer") == true)
            }
            var raw = try await anonymous.send(.GET, "/api/v1/resources", headers: [("Authorization", "Basic abc")])
            #expect(raw.status == 401)
            // Open routes.
            #expect(try await anonymous.send(.GET, "/healthz").status == 200)
            #expect(try await anonymous.send(.GET, "/readyz").status == 200)

            // Revoked.
            let appToken = try await server.token(.app)
            #expect(try await server.client(token: appToken).send(.GET, "/api/v1/resources").status == 200)
            let name = try #require(
                try await api.call(.GET, "/api/v1/tokens").json?["items"]?.arrayValue?.first { $0["role"]?.stringValue == "app" }?["name"]?.stringValue)
            _ = try await api.call(.DELETE, "/api/v1/tokens/\(name)")
            raw = try await server.client(token: appToken).send(.GET, "/api/v1/resources")
            #expect(raw.status == 401, "a revoked token is refused at once")

            // Roles without the right.
            let app = server.client(token: try await server.token(.app))
            let integrator = server.client(token: try await server.token(.integrator))
            let device = server.client(token: try await server.token(.device, resource: "fan"))
            let op = server.client(token: try await server.token(.operator))
            let denied: [(TriadClient, HTTPMethodName, String, Data?)] = [
                (app, .POST, "/api/v1/resources", Docs.json(Docs.device("new"))),
                (app, .DELETE, "/api/v1/resources/fan", nil),
                (app, .PATCH, "/api/v1/resources/fan/status", Data(#"{"status":{"phase":"Running"}}"#.utf8)),
                (integrator, .PUT, "/api/v1/resources/fan", Docs.json(Docs.device("fan"))),
                (integrator, .POST, "/api/v1/tokens", Data(#"{"name":"x","role":"admin"}"#.utf8)),
                (device, .GET, "/api/v1/resources", nil),
                (device, .GET, "/api/v1/resources/lamp", nil),
                (device, .PATCH, "/api/v1/resources/lamp/status", Data(#"{"status":{"phase":"Running"}}"#.utf8)),
                (device, .DELETE, "/api/v1/resources/fan", nil),
                (op, .POST, "/api/v1/tokens", Data(#"{"name":"x","role":"admin"}"#.utf8)),
            ]
            for (client, method, path, body) in denied {
                let reply = try await client.send(
                    method.method, path, body: body,
                    contentType: path.hasSuffix("/status") ? "application/merge-patch+json" : "application/json")
                #expect(reply.status == 403, "\(method) \(path)")
                #expect(reply.header("content-type") == "application/problem+json")
            }
            #expect(try await api.call(.GET, "/api/v1/resources").body == before, "no denied request changed anything")

            // What each role may do (whoever may read may also watch).
            #expect(try await app.send(.GET, "/api/v1/resources/fan").status == 200)
            #expect(try await app.send(.GET, "/api/v1/events?follow=false").status == 200)
            #expect(try await device.send(.GET, "/api/v1/resources/fan").status == 200)
            let own = try await device.send(
                .PATCH, "/api/v1/resources/fan/status", body: Data(#"{"status":{"phase":"Running"}}"#.utf8), contentType: "application/merge-patch+json")
            #expect(own.status == 200)
            #expect(try await integrator.send(.GET, "/api/v1/events?follow=false").status == 200)
            #expect(try await op.send(.POST, "/api/v1/resources", body: Docs.json(Docs.device("by-operator"))).status == 201)
        }
    }

    @Test(arguments: BackendKind.allCases)
    func tokenRequestsAreValidated(_ kind: BackendKind) async throws {
        try await withServer(kind) { server in
            let bad: [(String, String)] = [
                (#"{"name":"x","role":"root"}"#, "/role"),
                (#"{"name":"Bad Name","role":"app"}"#, "/name"),
                (#"{"role":"app"}"#, "/name"),
                (#"{"name":"d","role":"device"}"#, "/resource"),
                (#"{"name":"d","role":"device","resource":"missing"}"#, "/resource"),
                (#"{"name":"a","role":"app","resource":"x"}"#, "/resource"),
                (#"{"name":"a","role":"app","extra":1}"#, "/extra"),
            ]
            for (body, pointer) in bad {
                let reply = try await server.admin.send(.POST, "/api/v1/tokens", body: Data(body.utf8))
                #expect(reply.status == 422, "\(body)")
                #expect(reply.json?["errors"]?.arrayValue?.contains { $0["pointer"]?.stringValue == pointer } == true, "\(body)")
            }
            _ = try await server.token(.app)
            let names = try await server.admin.call(.GET, "/api/v1/tokens").json?["items"]?.arrayValue ?? []
            #expect(names.count == 2, "only the admin and the one good token exist")
            let dup = try await server.admin.send(.POST, "/api/v1/tokens", body: Data(#"{"name":"env-admin","role":"app"}"#.utf8))
            #expect(dup.status == 409)
            #expect(try await server.admin.send(.DELETE, "/api/v1/tokens/nobody").status == 404)
            let listed = try await server.admin.call(.GET, "/api/v1/tokens")
            #expect(!String(decoding: listed.body, as: UTF8.self).contains("triad_"), "secrets are never listed")
        }
    }

    @Test(arguments: BackendKind.allCases)
    func othersAreServedThroughoutBadInput(_ kind: BackendKind) async throws {
        try await withServer(kind) { server in
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("steady")))
            let reader = server.client(token: try await server.token(.app))
            let good = Task {
                var ok = 0
                for _ in 0..<200 {
                    let r = try await reader.send(.GET, "/api/v1/resources/steady")
                    if r.status == 200 { ok += 1 }
                }
                return ok
            }
            let garbage = Task {
                var answers: [Int] = []
                for i in 0..<200 {
                    let body = i % 2 == 0 ? Data("{{{{".utf8) : Data(repeating: 0xFF, count: 2000)
                    answers.append(try await server.admin.send(.POST, "/api/v1/resources", body: body).status)
                    answers.append(try await server.client(token: "bogus").send(.GET, "/api/v1/resources").status)
                }
                return answers
            }
            let refused = try await garbage.value
            #expect(refused.count == 400 && refused.allSatisfy { (400..<500).contains($0) }, "every piece of garbage got a 4xx: \(Set(refused))")
            #expect(try await good.value == 200)
        }
    }
}

/// A method name usable in test tables.
enum HTTPMethodName: String, Sendable {
    case GET, POST, PUT, PATCH, DELETE
    var method: NIOHTTP1.HTTPMethod { .init(rawValue: rawValue) }
}

extension APIBadInputTests {
    /// A method a path does not serve is a 405 naming the ones it does; an empty value where a
    /// date-time or an event id is due is a 400, not "absent".
    @Test func undeclaredMethodsAndEmptyParametersAreRefused() async throws {
        try await withServer(.sqlite) { server in
            for (method, path, allow) in [
                ("PATCH", "/healthz", "GET"), ("QUERY", "/api/v1/resources", "GET, POST"),
                ("PUT", "/api/v1/tokens", "GET, POST"), ("GET", "/api/v1/resources/x/operations/y", "POST"),
            ] {
                let reply = try await server.admin.send(.init(rawValue: method), path)
                #expect(reply.status == 405, "\(method) \(path)")
                #expect(reply.header("allow") == allow, "\(method) \(path) names what it serves")
                #expect(reply.json?["type"] == .string("https://triad.io/problems/method-not-allowed"))
            }
            #expect(try await server.admin.send(.GET, "/api/v1/nowhere").status == 404)
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("meter-1")))
            for path in [
                "/api/v1/events?since=&follow=false", "/api/v1/events?types=&follow=false", "/api/v1/invocations?since=",
                "/api/v1/resources/meter-1/telemetry?to=", "/api/v1/resources?kind=",
            ] {
                #expect(try await server.admin.send(.GET, path).status == 400, "\(path)")
            }
        }
    }
}
