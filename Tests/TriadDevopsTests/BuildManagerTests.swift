import Foundation
import Synchronization
import Testing
import TriadCore
import TriadTesting

@testable import TriadDevops

/// Real git repositories made by the test; real builds (shell scripts) in clean checkouts.
@Suite("Builds")
struct BuildManagerTests {
    static func makeRepository() throws -> (dir: String, repo: String) { try GitFixture.makeRepository() }

    static func service(_ repo: String, ref: String = "v1", command: [String] = ["./build.sh"], artifact: String = "out/agent", timeout: Double = 60)
        -> ProjectManifest.Service
    {
        ProjectManifest.Service(
            name: "agent", repository: repo, ref: ref,
            build: .init(command: command, artifact: artifact, env: [:], timeoutSeconds: timeout),
            run: ["{artifact}"], health: "/healthz", meshService: "agent")
    }

    static func sh(_ script: String, in dir: String) throws { try GitFixture.sh(script, in: dir) }

    static func write(_ path: String, _ text: String) throws { try GitFixture.write(path, text) }

    @Test func aTagIsBuiltOnceAndAMovedTagAnew() async throws {
        let (dir, repo) = try Self.makeRepository()
        let manager = BuildManager(directory: dir + "/builds", git: GitRepositories(directory: dir + "/git"))
        let steps = Steps()
        let first = await manager.build(project: "demo", service: Self.service(repo)) { steps.add($0) }
        #expect(first.outcome == .succeeded, "\(first.reason ?? "")")
        #expect(try String(contentsOfFile: first.artifact ?? "", encoding: .utf8) == "v1\n")
        #expect(first.sha256?.count == 64)
        #expect(try String(contentsOfFile: first.log ?? "", encoding: .utf8).contains("building v1"))
        #expect(steps.all.contains(.resolved(commit: first.commit)))
        #expect(first.reused == nil)

        let again = await manager.build(project: "demo", service: Self.service(repo))
        #expect(again.reused == true && again.commit == first.commit && again.sha256 == first.sha256)

        // The tag moves to another commit: a new build, of that commit.
        try Self.write(repo + "/VERSION", "v1-fixed\n")
        try Self.sh("git commit -qam fix && git tag -f -a v1 -m v1-fixed", in: repo)
        let moved = await manager.build(project: "demo", service: Self.service(repo))
        #expect(moved.outcome == .succeeded && moved.reused == nil && moved.commit != first.commit)
        #expect(try String(contentsOfFile: moved.artifact ?? "", encoding: .utf8) == "v1-fixed\n")

        let v2 = await manager.build(project: "demo", service: Self.service(repo), ref: "v2")
        #expect(v2.outcome == .succeeded)
        #expect(try String(contentsOfFile: v2.artifact ?? "", encoding: .utf8) == "v2\n")
        // A branch and a commit id name commits too; builds are by commit, whatever named it.
        let main = await manager.build(project: "demo", service: Self.service(repo), ref: "main")
        #expect(main.commit == moved.commit && main.reused == true)
        let byId = await manager.build(project: "demo", service: Self.service(repo), ref: String(v2.commit.prefix(12)))
        #expect(byId.commit == v2.commit && byId.reused == true)

        let commits = await manager.builds(project: "demo", service: "agent").map(\.commit)
        #expect(Set(commits) == [first.commit, moved.commit, v2.commit] && commits.count == 3)
    }

    @Test func whatCannotBeBuiltSaysWhy() async throws {
        let (dir, repo) = try Self.makeRepository()
        let manager = BuildManager(directory: dir + "/builds", git: GitRepositories(directory: dir + "/git"))
        func reason(_ service: ProjectManifest.Service, ref: String? = nil) async -> String {
            let record = await manager.build(project: "demo", service: service, ref: ref)
            #expect(record.outcome == .failed)
            return record.reason ?? ""
        }
        #expect(await reason(Self.service(dir + "/nowhere")).contains("cannot reach the repository"))
        #expect(await reason(Self.service(repo, ref: "v9")).contains("no tag, branch or commit named v9"))
        #expect(await reason(Self.service(repo, ref: "--upload-pack=touch")).contains("must not start with '-'"))
        #expect(await reason(Self.service("ext::sh -c touch% /tmp/pwned")).contains("file://, https:// or ssh://"))

        let failing = await reason(Self.service(repo, command: ["sh", "-c", "echo compiling; echo 'error: it broke' >&2; exit 3"]))
        #expect(failing.contains("exited with status 3") && failing.contains("error: it broke"), "\(failing)")

        let slow = await reason(Self.service(repo, command: ["sh", "-c", "echo started; sleep 60"], timeout: 1))
        #expect(slow.contains("time limit of 1 s") && slow.contains("started"), "\(slow)")

        let noArtifact = await reason(Self.service(repo, artifact: "out/missing"))
        #expect(noArtifact.contains("produced no file at out/missing"), "\(noArtifact)")

        // A failed build is not remembered as done: fixed, the same commit builds.
        #expect(await manager.build(project: "demo", service: Self.service(repo)).outcome == .succeeded)
    }

    /// The build sees its own variables and not the server's (which may hold its admin token).
    @Test func aBuildGetsOnlyItsOwnEnvironment() async throws {
        let (dir, repo) = try Self.makeRepository()
        setenv("TRIAD_ADMIN_TOKEN", "must-not-reach-builds", 1)
        defer { unsetenv("TRIAD_ADMIN_TOKEN") }
        var service = Self.service(repo, command: ["sh", "-c", "mkdir -p out && env > out/agent"])
        service.build.env = ["GREETING": "hello"]
        let manager = BuildManager(directory: dir + "/builds", git: GitRepositories(directory: dir + "/git"))
        let record = await manager.build(project: "demo", service: service)
        let env = try String(contentsOfFile: record.artifact ?? "", encoding: .utf8)
        #expect(env.contains("GREETING=hello") && env.contains("TRIAD_COMMIT=\(record.commit)") && env.contains("TRIAD_REF=v1"))
        #expect(!env.contains("must-not-reach-builds"))
    }
}

/// What the progress callback saw.
final class Steps: Sendable {
    private let steps = Mutex<[BuildManager.Progress]>([])
    func add(_ step: BuildManager.Progress) { steps.withLock { $0.append(step) } }
    var all: [BuildManager.Progress] { steps.withLock { $0 } }
}
