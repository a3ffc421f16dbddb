import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import TriadCore

/// Writes Envoy's files and talks to its admin endpoint.
public enum EnvoyFiles {
    /// Writes `value` to `path` by renaming a finished temporary file from the same directory
    /// over it: Envoy's watched directory reloads on the rename and never reads half a file.
    public static func writeAtomically(_ value: JSONValue, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let tmp = url.deletingLastPathComponent().appendingPathComponent(".tmp-\(url.lastPathComponent)")
        try JSONCoding.encode(value).write(to: tmp)
        guard rename(tmp.path, path) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    }

    /// Lays out one Envoy's directory: the bootstrap and the dynamic files it watches.
    public static func install(_ files: EnvoyConfig.Files, plan: MeshPlan) throws -> String {
        let dir = EnvoyConfig.envoyDirectory(plan, id: files.id)
        let cfg = EnvoyConfig.configDirectory(plan, id: files.id)
        try FileManager.default.createDirectory(atPath: cfg, withIntermediateDirectories: true)
        for (file, value) in files.dynamic { try writeAtomically(value, to: "\(cfg)/\(file.name)") }
        let bootstrap = dir + "/bootstrap.json"
        try writeAtomically(files.bootstrap, to: bootstrap)
        return bootstrap
    }

    /// A new version of one file for one Envoy.
    public struct Update: Sendable {
        public var envoy: String
        public var adminPort: Int
        public var file: EnvoyFile
        public var value: JSONValue
    }

    /// Writes every file, then returns once each Envoy reports it applied its file (the file's
    /// counter grew); `what` names the change in the error. Envoy acknowledges a watched file
    /// only in its counters, so this reads them (every 5 ms) until they move or time runs out.
    /// The Envoys are asked side by side: a retirement waits for this, so its time is that of
    /// the slowest Envoy, not the sum of all.
    public static func push(_ updates: [Update], plan: MeshPlan, what: String, timeout: Duration = .seconds(5)) async throws {
        let before = await withTaskGroup(of: (Int, Int).self) { group in
            for (i, u) in updates.enumerated() { group.addTask { (i, await stat(adminPort: u.adminPort, name: u.file.appliedCounter) ?? 0) } }
            var counts = [Int](repeating: 0, count: updates.count)
            for await (i, count) in group { counts[i] = count }
            return counts
        }
        for u in updates { try writeAtomically(u.value, to: EnvoyConfig.configDirectory(plan, id: u.envoy) + "/" + u.file.name) }
        let deadline = ContinuousClock.now + timeout
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (i, u) in updates.enumerated() {
                group.addTask {
                    while (await stat(adminPort: u.adminPort, name: u.file.appliedCounter) ?? 0) <= before[i] {
                        if ContinuousClock.now > deadline { throw MeshRuntime.Failure("Envoy \(u.envoy) did not apply \(what) in time") }
                        try await Task.sleep(for: .milliseconds(5))
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// A counter or gauge from Envoy's admin `/stats` (nil when Envoy does not answer or lacks it).
    public static func stat(adminPort: Int, name: String) async -> Int? {
        let escaped = name.replacingOccurrences(of: ".", with: "\\.")
        let query = "^\(escaped)$".addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(adminPort)/stats?filter=\(query)")
        request.method = .GET
        guard let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(2)), response.status == .ok,
            let body = try? await response.body.collect(upTo: 1 << 20)
        else { return nil }
        for line in String(buffer: body).split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2, parts[0].trimmingCharacters(in: .whitespaces) == name {
                return Int(parts[1].trimmingCharacters(in: .whitespaces))
            }
        }
        return nil
    }

    /// Whether Envoy finished its initial configuration (admin `/ready` answers 200 LIVE).
    public static func ready(adminPort: Int) async -> Bool {
        let request = HTTPClientRequest(url: "http://127.0.0.1:\(adminPort)/ready")
        guard let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(2)) else { return false }
        _ = try? await response.body.collect(upTo: 4096)
        return response.status == .ok
    }
}
