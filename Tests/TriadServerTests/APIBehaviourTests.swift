import Foundation
import NIOHTTP1
import Testing
import TriadClient
import TriadCore
import TriadServer

@Suite("REST API: behaviour")
struct APIBehaviourTests {
    /// Many clients increment one label with read-modify-write and retry on 409: none is lost.
    @Test(arguments: BackendKind.allCases)
    func concurrentIncrementsLoseNothing(_ kind: BackendKind) async throws {
        try await withServer(kind) { server in
            let api = server.admin
            _ = try await api.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("counter", labels: ["count": "0"])))
            let workers = 8
            let perWorker = 15
            let conflicts = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<workers {
                    group.addTask {
                        var conflicts = 0
                        var done = 0
                        while done < perWorker {
                            let current = try await api.call(.GET, "/api/v1/resources/counter")
                            guard case .object(var doc)? = current.json, case .object(var meta)? = doc["metadata"],
                                let count = Int(meta["labels"]?["count"]?.stringValue ?? "")
                            else { throw CLIErrorForTests("bad document") }
                            meta["labels"] = .object(["count": .string(String(count + 1))])
                            doc["metadata"] = .object(meta)
                            let reply = try await api.send(.PUT, "/api/v1/resources/counter", body: JSONCoding.encode(JSONValue.object(doc)))
                            switch reply.status {
                            case 200: done += 1
                            case 409: conflicts += 1
                            default: throw CLIErrorForTests("unexpected \(reply.status)")
                            }
                        }
                        return conflicts
                    }
                }
                return try await group.reduce(0, +)
            }
            let final = try await api.call(.GET, "/api/v1/resources/counter")
            #expect(final.json?["metadata"]?["labels"]?["count"]?.stringValue == String(workers * perWorker))
            #expect(final.json?["metadata"]?["generation"] == .number(1), "label writes never bump generation")
            // The contention was real: some writers lost rounds.
            #expect(conflicts > 0)
        }
    }

    @Test(arguments: BackendKind.allCases)
    func eventsStreamResumeAndFilter(_ kind: BackendKind) async throws {
        try await withServer(kind) { server in
            let api = server.admin
            _ = try await api.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("fan", labels: ["triad.io/space": "lab"])))
            _ = try await api.call(.POST, "/api/v1/resources", body: Docs.json(Docs.resource("alice", kind: "Person")))
            _ = try await api.call(
                .PATCH, "/api/v1/resources/fan/status", body: Data(#"{"status":{"phase":"Running"}}"#.utf8), contentType: "application/merge-patch+json")
            _ = try await api.call(.DELETE, "/api/v1/resources/alice")

            let integrator = server.client(token: try await server.token(.integrator))
            let collected = Collected()
            try await integrator.streamEvents(query: "?follow=false", lastEventID: "0") { id, type, data in await collected.add(id, type, data) }
            let all = await collected.items
            #expect(all.map(\.1) == ["io.triad.resource.created", "io.triad.resource.created", "io.triad.resource.status", "io.triad.resource.deleted"])
            let ids = all.compactMap { Int64($0.0) }
            #expect(ids == ids.sorted() && Set(ids).count == 4)
            // Each is a CloudEvent whose data is the registry's document.
            let first = try JSONCoding.parse(all[0].2)
            #expect(first["specversion"]?.stringValue == "1.0")
            #expect(first["source"]?.stringValue == "/triad/resources/fan")
            #expect(first["subject"]?.stringValue == "fan")
            #expect(first["resourcekind"]?.stringValue == "device")
            #expect(first["datacontenttype"]?.stringValue == "application/json")
            #expect(first["id"]?.stringValue == all[0].0)
            #expect(first["data"]?["metadata"]?["name"]?.stringValue == "fan")

            // Resume after the second event; filter by type and by label.
            let resumed = Collected()
            try await integrator.streamEvents(query: "?follow=false", lastEventID: all[1].0) { id, type, data in await resumed.add(id, type, data) }
            #expect(await resumed.items.map(\.0) == [all[2].0, all[3].0])
            let filtered = Collected()
            try await integrator.streamEvents(query: "?follow=false&types=io.triad.resource.status", lastEventID: "0") { id, type, data in
                await filtered.add(id, type, data)
            }
            #expect(await filtered.items.map(\.1) == ["io.triad.resource.status"])
            let bySelector = Collected()
            try await integrator.streamEvents(query: "?follow=false&labelSelector=triad.io/space%3Dlab", lastEventID: nil) { _, _, _ in }
            try await integrator.streamEvents(query: "?follow=false&since=0&labelSelector=triad.io/space%3Dlab", lastEventID: nil) { id, type, data in
                await bySelector.add(id, type, data)
            }
            #expect(await bySelector.items.count == 2, "fan's created and status events")

            // Bad parameters are 400s.
            for query in ["?types=io.triad.nope", "?since=abc", "?follow=maybe", "?labelSelector=a%20in%20(b"] {
                #expect(try await integrator.send(.GET, "/api/v1/events" + query).status == 400, "\(query)")
            }
        }
    }

    @Test(arguments: BackendKind.allCases)
    func followDeliversNewEventsLive(_ kind: BackendKind) async throws {
        try await withServer(kind) { server in
            let api = server.admin
            let received = Collected()
            // From the log's start (a fresh registry), so the writes below are seen whether the
            // stream opens before or after them; they arrive as the stream follows.
            let follower = Task {
                try await api.streamEvents(query: "", lastEventID: "0") { id, type, data in
                    guard let subject = try? JSONCoding.parse(data)["subject"]?.stringValue, ["a", "b", "c"].contains(subject) else { return }
                    await received.add(id, type, data)
                    if await received.items.count == 3 { throw StopStreaming() }
                }
            }
            for name in ["a", "b", "c"] { _ = try await api.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(name))) }
            do { try await follower.value } catch is StopStreaming {}
            #expect(await received.items.compactMap { try? JSONCoding.parse($0.2)["subject"]?.stringValue } == ["a", "b", "c"])
        }
    }

    @Test(arguments: BackendKind.allCases)
    func compactedResumePointIs410(_ kind: BackendKind) async throws {
        try await withServer(kind, eventRetention: 100) { server in
            let api = server.admin
            for i in 0..<5 { _ = try await api.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("d\(i)"))) }
            _ = try await server.server.registry.log.compactEvents(keep: 2)
            let reply = try await api.send(.GET, "/api/v1/events?follow=false&since=1")
            #expect(reply.status == 410)
            #expect(reply.header("content-type") == "application/problem+json")
            #expect(try await api.send(.GET, "/api/v1/events?follow=false&since=3").status == 200)
        }
    }

    @Test(arguments: BackendKind.allCases)
    func healthReadinessMetricsAndSpec(_ kind: BackendKind) async throws {
        try await withServer(kind) { server in
            let anonymous = TriadClient(server: server.baseURL, token: nil)
            #expect(try await anonymous.call(.GET, "/healthz").json?["status"]?.stringValue == "ok")
            let ready = try await anonymous.call(.GET, "/readyz").json
            #expect(ready?["status"]?.stringValue == "ready")
            #expect(ready?["checks"]?["database"]?["ok"] == .bool(true))
            _ = try await server.admin.call(.GET, "/api/v1/resources")
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("metered")))
            _ = try await server.admin.send(.POST, "/api/v1/resources", body: Docs.json(Docs.device("metered")))
            let metrics = String(decoding: try await server.admin.call(.GET, "/metrics").body, as: UTF8.self)
            #expect(metrics.contains("# TYPE"), "Prometheus text format")
            #expect(metrics.contains(#"triad_http_requests_total{route="/api/v1/resources",method="GET",status="200"}"#), "HTTP request metrics are exported")
            #expect(
                metrics.contains(#"triad_http_requests_total{route="/api/v1/resources",method="POST",status="409"}"#), "problems are counted with their status")
            #expect(metrics.contains(#"triad_registry_writes_total{operation="create",result="ok"}"#), "\(metrics)")
            #expect(metrics.contains(#"triad_registry_writes_total{operation="create",result="conflict"}"#))
            let spec = try await server.admin.call(.GET, "/openapi.yaml")
            #expect(spec.header("content-type") == "application/yaml")
            #expect(String(decoding: spec.body, as: UTF8.self).hasPrefix("#") || String(decoding: spec.body, as: UTF8.self).contains("openapi: 3.1"))
        }
    }

    @Test(arguments: BackendKind.allCases)
    func yamlBodiesAndListPagination(_ kind: BackendKind) async throws {
        try await withServer(kind) { server in
            let api = server.admin
            let yaml = """
                apiVersion: triad.io/v1alpha1
                kind: Resource
                metadata:
                  name: pantry-3f
                  labels: {triad.io/floor: "3"}
                spec:
                  kind: Space
                  description: {building: main}
                """
            let created = try await api.call(.POST, "/api/v1/resources", body: Data(yaml.utf8), contentType: "application/yaml")
            #expect(created.status == 201)
            #expect(created.json?["metadata"]?["labels"]?["triad.io/floor"]?.stringValue == "3")
            for i in 0..<25 { _ = try await api.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(String(format: "dev-%02d", i)))) }
            var names: [String] = []
            var token: String?
            repeat {
                let page = try await api.call(
                    .GET,
                    "/api/v1/resources?kind=Device&limit=10"
                        + (token.map { "&continue=\($0.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)" } ?? ""))
                let items = page.json?["items"]?.arrayValue ?? []
                #expect(items.count <= 10)
                names += items.compactMap { $0["metadata"]?["name"]?.stringValue }
                #expect(page.json?["metadata"]?["resourceVersion"]?.stringValue != nil)
                token = page.json?["metadata"]?["continue"]?.stringValue
            } while token != nil
            #expect(names == (0..<25).map { String(format: "dev-%02d", $0) })
        }
    }
}

struct StopStreaming: Error {}

struct CLIErrorForTests: Error {
    var message: String
    init(_ m: String) { message = m }
}

actor Collected {
    var items: [(String, String, Data)] = []
    func add(_ id: String, _ type: String, _ data: Data) { items.append((id, type, data)) }
}
