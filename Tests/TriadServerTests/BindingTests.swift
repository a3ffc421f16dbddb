import Foundation
import NIOHTTP1
import Testing
import TriadClient
import TriadCore
import TriadServer
import TriadTesting

/// Bindings (docs/api.md): exclusive leases with a TTL that the controller expires.
@Suite("Bindings")
struct BindingTests {
    @Test(arguments: BackendKind.allCases)
    func leasesAreExclusiveRenewableReleasableAndExpire(_ kind: BackendKind) async throws {
        try await withServer(kind) { server in
            let coffee = TelemetryTests.name("coffee")
            let lamp = TelemetryTests.name("lamp")
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device(coffee)))
            var shared = Docs.device(lamp)
            if case .object(var root) = shared, case .object(var spec)? = root["spec"] {
                spec["accessMode"] = .string("Shared")
                root["spec"] = .object(spec)
                shared = .object(root)
            }
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(shared))
            // The holder of a lease is the caller: alice and bob are apps, each with its own token.
            let (alice, aliceSecret) = try await server.namedToken(.app)
            let (bob, bobSecret) = try await server.namedToken(.app)
            let app = server.client(token: aliceSecret)
            let other = server.client(token: bobSecret)
            let path = "/api/v1/resources/\(coffee)/binding"
            func bind(ttl: Int = 60, as client: TriadClient? = nil) async throws -> TriadClient.Reply {
                try await (client ?? app).send(.POST, path, body: Data(#"{"ttlSeconds":\#(ttl)}"#.utf8))
            }

            let first = try await bind()
            #expect(first.status == 201)
            #expect(first.json?["holder"] == .string(alice) && first.json?["bound"] == .bool(true))
            let status = try await server.admin.call(.GET, "/api/v1/resources/\(coffee)").json?["status"]
            #expect(status?["bound"] == .bool(true) && status?["binding"]?["holder"] == .string(alice))
            #expect(try await bind(ttl: 120).status == 200, "its holder renews it")
            let taken = try await bind(as: other)
            #expect(taken.status == 409 && taken.json?["type"] == .string("https://triad.io/problems/binding-conflict"))

            // Status writes cannot forge or drop a lease.
            _ = try await server.admin.call(
                .PATCH, "/api/v1/resources/\(coffee)/status",
                body: Data(#"{"status":{"bound":false,"phase":"Running"}}"#.utf8), contentType: "application/merge-patch+json")
            #expect(try await server.admin.call(.GET, "/api/v1/resources/\(coffee)").json?["status"]?["bound"] == .bool(true))

            // Bad input and refusals: each a clear problem, nothing changed.
            let before = try await server.admin.call(.GET, "/api/v1/resources/\(coffee)").json
            for body in [
                #"{"holder":""}"#, #"{"ttlSeconds":0}"#, #"{"ttlSeconds":1.5}"#,
                #"{"ttlSeconds":999999}"#, #"{"color":"red"}"#, #"["x"]"#,
            ] {
                let reply = try await app.send(.POST, path, body: Data(body.utf8))
                #expect(reply.status == 422, "\(body) → \(reply.status)")
            }
            #expect(
                try await app.send(.POST, path, body: Data(#"{"holder":"\#(bob)"}"#.utf8)).status == 403,
                "an app binds as itself, not on behalf of another")
            #expect(try await app.send(.POST, path, body: Data("{oops".utf8)).status == 400)
            #expect(try await bind(ttl: 10, as: server.client(token: try await server.token(.integrator))).status == 403)
            #expect(try await app.send(.POST, "/api/v1/resources/nosuch-\(coffee)/binding", body: Data("{}".utf8)).status == 404)
            let sharedBind = try await app.send(.POST, "/api/v1/resources/\(lamp)/binding", body: Data("{}".utf8))
            #expect(
                sharedBind.status == 409 && sharedBind.json?["type"] == .string("https://triad.io/problems/binding-conflict"),
                "Shared resources are not bound")
            #expect(try await other.send(.DELETE, path).status == 403, "bob may not release alice's lease")
            #expect(try await app.send(.DELETE, path + "?holder=\(bob)").status == 403)
            #expect(try await server.admin.call(.GET, "/api/v1/resources/\(coffee)").json == before)

            // Release: by its holder; then anyone can take it.
            let released = try await app.send(.DELETE, path)
            #expect(released.status == 200 && released.json?["bound"] == .bool(false))
            #expect(try await app.send(.DELETE, path).status == 409, "not bound any more")

            // Operators bind on behalf of a named holder and release any lease.
            let op = server.client(token: try await server.token(.operator))
            let onBehalf = try await op.send(.POST, path, body: Data(#"{"holder":"carol","ttlSeconds":60}"#.utf8))
            #expect(onBehalf.status == 201 && onBehalf.json?["holder"] == .string("carol"))
            #expect(try await op.send(.DELETE, path).status == 200)

            // Expiry: the controller gives back a lease past its TTL.
            #expect(try await bind(ttl: 1, as: other).status == 201)
            try await eventually("the expired lease is released", within: 10) {
                let s = try await server.admin.call(.GET, "/api/v1/resources/\(coffee)").json?["status"]
                return s?["bound"] == .bool(false) && s?["binding"] == nil
            }
            #expect(try await bind(as: other).status == 201)

            // Each acquisition and release is an event of its own.
            let log = String(
                decoding: try await server.admin.call(.GET, "/api/v1/events?follow=false&since=0&types=io.triad.binding.acquired,io.triad.binding.released")
                    .body, as: UTF8.self)
            let types = try log.split(separator: "\n").filter { $0.hasPrefix("data:") }
                .map { try JSONCoding.parse(Data($0.dropFirst(5).drop { $0 == " " }.utf8)) }
                .filter { $0["subject"] == .string(coffee) }.map { $0["type"]?.stringValue ?? "" }
            #expect(
                types == [
                    "io.triad.binding.acquired", "io.triad.binding.released", "io.triad.binding.acquired",
                    "io.triad.binding.released", "io.triad.binding.acquired", "io.triad.binding.released",
                    "io.triad.binding.acquired",
                ])
        }
    }
}
