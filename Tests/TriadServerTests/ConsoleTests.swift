import Foundation
import NIOHTTP1
import Testing
import TriadClient
import TriadCore

@testable import TriadServer

/// The console's files are served without a token, under a strict Content-Security-Policy;
/// the API behind them is not opened by it. (The pages themselves are driven in a browser by
/// Tests/Console/console_test.py.)
@Suite("Web console")
struct ConsoleTests {
    @Test func theConsoleIsServedWithoutATokenUnderAStrictPolicy() async throws {
        try await withServer(.sqlite) { server in
            let anonymous = TriadClient(server: server.baseURL, token: nil)
            // `/` is redirected to the console (the client follows the redirect).
            let root = try await anonymous.send(.GET, "/")
            #expect(root.status == 200 && String(decoding: root.body, as: UTF8.self).contains("<title>Triad console</title>"))
            for path in ["/console/", "/console/app.js", "/console/api.js", "/console/views.js", "/console/console.css", "/favicon.ico"] {
                let reply = try await anonymous.send(.GET, path)
                #expect(reply.status == 200, "\(path)")
                let policy = reply.header("Content-Security-Policy") ?? ""
                #expect(policy.contains("script-src 'self'") && !policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"), "\(path): \(policy)")
                #expect(reply.header("X-Content-Type-Options") == "nosniff")
            }
            #expect(try await anonymous.send(.GET, "/console/app.js").header("Content-Type")?.hasPrefix("text/javascript") == true)
            let missing = try await anonymous.send(.GET, "/console/secrets.txt")
            #expect(missing.status == 404 && missing.header("Content-Type") == "application/problem+json")
            // The console's prefix opens nothing else.
            #expect(try await anonymous.send(.GET, "/console/../api/v1/resources").status != 200)
            #expect(try await anonymous.send(.GET, "/api/v1/resources").status == 401)
        }
    }

    @Test func whoamiTellsEachRoleWhatItMay() async throws {
        try await withServer(.sqlite) { server in
            _ = try await server.admin.call(.POST, "/api/v1/resources", body: Docs.json(Docs.device("lamp")))
            let admin = try await server.admin.call(.GET, "/api/v1/whoami").json
            #expect(admin?["role"] == .string("admin") && (admin?["may"]?.arrayValue ?? []).contains(.string("manageTokens")))
            let app = try await server.client(token: try await server.token(.app)).call(.GET, "/api/v1/whoami").json
            let appMay = Set((app?["may"]?.arrayValue ?? []).compactMap(\.stringValue))
            #expect(appMay == ["readResources", "bindResources", "invokeOperations", "readEvents"])
            let device = try await server.client(token: try await server.token(.device, resource: "lamp")).call(.GET, "/api/v1/whoami").json
            #expect(device?["resource"] == .string("lamp"))
            #expect(Set((device?["may"]?.arrayValue ?? []).compactMap(\.stringValue)) == ["readEvents", "writeStatus"])
            #expect(try await server.client(token: "not-a-token").send(.GET, "/api/v1/whoami").status == 401)
        }
    }
}
