import Foundation
import TriadProcess

/// The executables the local probe runtime may start (`--probe-allow`): a probe's image must
/// resolve to one of them. By default only the `triad` executable that runs the server, which
/// `probeImage: triad` names even when `triad` is not on the server's PATH.
public struct ProbeAllowList: Sendable, Equatable {
    /// As given (paths or program names); empty means the default.
    public var entries: [String]

    public init(_ entries: [String] = []) { self.entries = entries }

    /// The running executable (`/proc/self/exe`), or nil where that cannot be read.
    static let serverExecutable: String? = {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments.first.flatMap { ChildProcess.resolve($0, directory: FileManager.default.currentDirectoryPath) }
    }()

    struct Refused: Error, CustomStringConvertible {
        var description: String
    }

    /// The absolute path to run for `image`, if it is allowed.
    func program(for image: String, directory: String) throws -> String {
        let allowed = Set(allowedPaths(directory: directory))
        let candidate: String?
        if image == "triad", let own = Self.serverExecutable, allowed.contains(Self.real(own)) {
            candidate = own
        } else {
            candidate = ChildProcess.resolve(image, directory: directory)
        }
        guard let path = candidate else {
            throw Refused(description: "probeImage \(image) is not an executable file or a program on PATH")
        }
        guard allowed.contains(Self.real(path)) else {
            throw Refused(description: "probeImage \(image) is not on the server's --probe-allow list")
        }
        return path
    }

    private func allowedPaths(directory: String) -> [String] {
        let names = entries.isEmpty ? [Self.serverExecutable].compactMap { $0 } : entries
        return names.compactMap { name in
            if name == "triad", entries.isEmpty == false, let own = Self.serverExecutable { return Self.real(own) }
            return ChildProcess.resolve(name, directory: directory).map(Self.real)
        }
    }

    static func real(_ path: String) -> String {
        URL(fileURLWithPath: path).resolvingSymlinksInPath().path
    }
}
