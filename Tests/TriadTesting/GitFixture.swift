import Foundation

/// Real git repositories made by a test: a shell step runner and the repository the devops
/// tests share (a build script that copies `VERSION` to `out/agent`; tags v1, annotated, and v2).
public enum GitFixture {
    /// `dir`: a fresh temporary directory; `repo`: the repository inside it.
    public static func makeRepository() throws -> (dir: String, repo: String) {
        let dir = try TestPaths.temporaryDirectory()
        let repo = dir + "/agent"
        try FileManager.default.createDirectory(atPath: repo, withIntermediateDirectories: true)
        try sh("git init -q -b main . && git config user.email t@example.invalid && git config user.name test", in: repo)
        try write(repo + "/build.sh", "#!/bin/sh\nset -e\necho building $(cat VERSION)\nmkdir -p out\ncp VERSION out/agent\n")
        try write(repo + "/VERSION", "v1\n")
        try sh("chmod +x build.sh && git add -A && git commit -qm v1 && git tag -a v1 -m v1", in: repo)
        try write(repo + "/VERSION", "v2\n")
        try sh("git commit -qam v2 && git tag v2", in: repo)
        return (dir, repo)
    }

    /// Runs `script` with /bin/sh in `dir`; throws when it fails.
    public static func sh(_ script: String, in dir: String) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", script]
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw SetupError("`\(script)` failed in \(dir)") }
    }

    public static func write(_ path: String, _ text: String) throws { try text.write(toFile: path, atomically: true, encoding: .utf8) }
}
