import Foundation
import Testing
import TriadClient
import TriadCore
import TriadServer

/// Bindings (docs/api.md): exclusive leases with a TTL that the controller expires.
@Suite("Bindings")
struct BindingTests {
    @Test(arguments: BackendKind.allCases)
    func leasesAreExclusiveRenewableReleasableAndExpire(_ kind: BackendKind) async throws {
        try await withServer(kind) { server in
            let coffee = TelemetryTests.name("coffee"), lamp = TelemetryTests.name("lamp")
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(coffee)))
            var shared = Docs.device(lamp)
            if case .object(var root) = shared, case .object(var spec)? = root["spec"] {
                spec["accessMode"] = .string("Shared"); root["spec"] = .object(spec); shared = .object(root)
            }
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(shared))
            let app = server.client(token: try await server.token(.app))
            let path = "/api/v1/resources/\(coffee)/binding"
            func bind(_ holder: String, ttl: Int = 60, as client: TriadClient? = nil) async throws -> TriadClient.Reply {
                try await (client ?? app).send(.POST, path, body: Data(#"{"holder":"\#(holder)","ttlSeconds":\#(ttl)}"#.utf8))
            }

            let first = try await bind("alice")
            #expect(first.status == 201)
            #expect(first.json?["holder"] == .string("alice") && first.json?["bound"] == .bool(true))
            let status = try await server.admin.call(.GET, "/api/v1/resources/\(coffee)").json?["status"]
            #expect(status?["bound"] == .bool(true) && status?["binding"]?["holder"] == .string("alice"))
            #expect(try await bind("alice", ttl: 120).status == 200, "its holder renews it")
            let taken = try await bind("bob")
            #expect(taken.status == 409 && taken.json?["type"] == .string("https://triad.io/problems/binding-conflict"))

            // Status writes cannot forge or drop a lease.
            _ = try await server.admin.call(.PATCH, "/api/v1/resources/\(coffee)/status",
                                            body: Data(#"{"status":{"bound":false,"phase":"Running"}}"#.utf8), contentType: "application/merge-patch+json")
            #expect(try await server.admin.call(.GET, "/api/v1/resources/\(coffee)").json?["status"]?["bound"] == .bool(true))

            // Bad input: each a clear problem, nothing changed.
            let before = try await server.admin.call(.GET, "/api/v1/resources/\(coffee)").json
            for body in [#"{"ttlSeconds":10}"#, #"{"holder":""}"#, #"{"holder":"x","ttlSeconds":0}"#, #"{"holder":"x","ttlSeconds":1.5}"#,
                         #"{"holder":"x","ttlSeconds":999999}"#, #"{"holder":"x","color":"red"}"#, #"["x"]"#] {
                let reply = try await app.send(.POST, path, body: Data(body.utf8))
                #expect(reply.status == 422, "\(body) → \(reply.status)")
            }
            #expect(try await app.send(.POST, path, body: Data("{oops".utf8)).status == 400)
            #expect(try await bind("x", ttl: 10, as: server.client(token: try await server.token(.integrator))).status == 403)
            #expect(try await app.send(.POST, "/api/v1/resources/nosuch-\(coffee)/binding", body: Data(#"{"holder":"x"}"#.utf8)).status == 404)
            #expect(try await app.send(.POST, "/api/v1/resources/\(lamp)/binding", body: Data(#"{"holder":"x"}"#.utf8)).status == 422,
                    "Shared resources are not bound")
            #expect(try await server.admin.call(.GET, "/api/v1/resources/\(coffee)").json == before)

            // Release: by its holder (bob may not), then anyone can take it.
            #expect(try await app.send(.DELETE, path + "?holder=bob").status == 409)
            #expect(try await app.send(.DELETE, path).status == 400, "an app names the holder")
            let released = try await app.send(.DELETE, path + "?holder=alice")
            #expect(released.status == 200 && released.json?["bound"] == .bool(false))
            #expect(try await app.send(.DELETE, path + "?holder=alice").status == 409, "not bound any more")

            // Expiry: the controller gives back a lease past its TTL.
            #expect(try await bind("carol", ttl: 1).status == 201)
            try await TelemetryTests.eventually("the expired lease is released", within: 10) {
                let s = try await server.admin.call(.GET, "/api/v1/resources/\(coffee)").json?["status"]
                return s?["bound"] == .bool(false) && s?["binding"] == nil
            }
            #expect(try await bind("bob").status == 201)

            // Each acquisition and release is an event of its own.
            let log = String(decoding: try await server.admin.call(.GET, "/api/v1/events?follow=false&since=0&types=io.triad.binding.acquired,io.triad.binding.released").body, as: UTF8.self)
            let types = try log.split(separator: "\n").filter { $0.hasPrefix("data:") }
                .map { try JSONCoding.parse(Data($0.dropFirst(5).drop { $0 == " " }.utf8)) }
                .filter { $0["subject"] == .string(coffee) }.map { $0["type"]?.stringValue ?? "" }
            #expect(types == ["io.triad.binding.acquired", "io.triad.binding.released", "io.triad.binding.acquired",
                              "io.triad.binding.released", "io.triad.binding.acquired"])
        }
    }
}
