import Foundation
import TriadCore
import TriadProcess

/// What `mesh up` leaves in the working directory (`.triad-mesh/state.json`, mode 0600: it
/// holds the control API's secret) so that `mesh status/audit/down` and `upgrade` find the mesh.
public struct MeshState: Sendable, Codable, Equatable {
    public struct ProcessEntry: Sendable, Codable, Equatable {
        public var id: String
        public var kind: String
        public var pid: Int
    }
    public var name: String
    public var controlURL: String
    public var token: String
    /// The control process.
    public var pid: Int
    public var gateway: String
    public var runDirectory: String
    public var startedAt: String
    /// Everything the control process started, for `mesh down` when the control process is gone.
    public var processes: [ProcessEntry]

    public static let directoryName = ".triad-mesh"

    public static func directory(in workingDirectory: String) -> String { workingDirectory + "/" + directoryName }
    public static func path(in workingDirectory: String) -> String { directory(in: workingDirectory) + "/state.json" }

    public static func load(from workingDirectory: String) -> MeshState? {
        guard let data = FileManager.default.contents(atPath: path(in: workingDirectory)) else { return nil }
        return try? JSONDecoder().decode(MeshState.self, from: data)
    }

    public func save(in workingDirectory: String) throws {
        let dir = Self.directory(in: workingDirectory)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        // Written whole under a temporary name, 0600 from its creation (never through a planted
        // link), then renamed over the old state.
        let tmp = dir + "/.state.json.tmp"
        unlink(tmp)
        try SecretFile.create(tmp, contents: JSONCoding.encode(self))
        guard rename(tmp, Self.path(in: workingDirectory)) == 0 else {
            throw SecretFile.WriteFailed(description: "cannot replace \(Self.path(in: workingDirectory)): \(String(cString: strerror(errno)))")
        }
    }

    public static func remove(in workingDirectory: String) {
        try? FileManager.default.removeItem(atPath: path(in: workingDirectory))
    }

    /// A random secret for the control API (never logged).
    public static func newToken() -> String {
        var rng = SystemRandomNumberGenerator()
        return (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &rng)) }.joined()
    }
}
