import ArgumentParser
import Foundation
import TriadClient

/// Where the server is and who we are: flags, then TRIAD_SERVER / TRIAD_TOKEN, then defaults
/// (http://127.0.0.1:8080 and, on the server's own machine, ./.triad/admin.token).
struct ClientOptions: ParsableArguments {
    @Option(help: "Server URL (env TRIAD_SERVER; default http://127.0.0.1:8080).")
    var server: String?

    @Option(help: "Bearer token (env TRIAD_TOKEN; default: the contents of ./.triad/admin.token if present).")
    var token: String?

    func client() throws -> TriadClient {
        let env = ProcessInfo.processInfo.environment
        let server = self.server ?? env["TRIAD_SERVER"] ?? "http://127.0.0.1:8080"
        guard server.hasPrefix("http://") || server.hasPrefix("https://") else {
            throw CLIError("--server must be an http:// or https:// URL, not \(server)")
        }
        var token = self.token ?? env["TRIAD_TOKEN"]
        // The local admin token goes only to a server on this machine: a --server pointing
        // elsewhere must not receive it just because the CLI runs in the server's directory.
        if token == nil, Self.isLoopback(server), let data = FileManager.default.contents(atPath: ".triad/admin.token") {
            token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return TriadClient(server: server, token: token, http: TriadClient.failingFast)
    }

    static func isLoopback(_ server: String) -> Bool {
        guard let host = URLComponents(string: server)?.host?.lowercased() else { return false }
        return host == "localhost" || host == "::1" || host == "[::1]" || host.hasPrefix("127.")
    }
}

func percentEncode(_ s: String) -> String {
    var allowed = CharacterSet.urlQueryAllowed
    allowed.remove(charactersIn: "&=+,;#")
    return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
}
