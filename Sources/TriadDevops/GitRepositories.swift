import Crypto
import Foundation
import TriadCore
import TriadProcess

/// The project's git repositories as the build manager sees them: refs checked where they live
/// (`git ls-remote`), and a bare mirror of each repository under `directory` from which clean
/// checkouts of one commit are made. Git runs with an environment of its own: no prompt for a
/// password (a repository that needs one fails), no system configuration, only the file, https
/// and ssh transports.
public struct GitRepositories: Sendable {
    public struct Failure: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    public let directory: String
    public var timeoutSeconds: Double

    public init(directory: String, timeoutSeconds: Double = 120) {
        self.directory = directory
        self.timeoutSeconds = timeoutSeconds
    }

    /// The commit `ref` names in `repository` as the repository advertises it (a tag, peeled to
    /// its commit, or a branch); for a commit id, the commit once fetched. A repository that
    /// cannot be reached, or a ref it does not have, is a `Failure` saying which.
    public func resolve(_ repository: String, ref: String) async throws(Failure) -> String {
        if let problem = GitSyntax.repositoryProblem(repository) { throw Failure("repository \(repository) \(problem)") }
        if let problem = GitSyntax.refProblem(ref) { throw Failure("ref \(ref) \(problem)") }
        let repository = Self.locate(repository)
        let listing = try await git(["ls-remote", "--", repository], in: nil, what: "reach the repository \(repository)")
        var refs: [String: String] = [:]
        for line in listing.split(whereSeparator: \.isNewline) {
            let parts = line.split(separator: "\t", maxSplits: 1)
            if parts.count == 2 { refs[String(parts[1])] = String(parts[0]) }
        }
        // An annotated tag's own id is not a commit: its peeled line (^{}) is.
        for name in ["refs/tags/\(ref)^{}", "refs/tags/\(ref)", "refs/heads/\(ref)", ref] {
            if let commit = refs[name] { return commit }
        }
        if ref.count >= 7, ref.count <= 64, ref.allSatisfy(\.isHexDigit) {
            let mirror = try await fetch(repository)
            if let commit = try? await git(["rev-parse", "--verify", "--quiet", "--end-of-options", "\(ref)^{commit}"], in: mirror, what: "find \(ref)") {
                return commit.trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }
        throw Failure("\(repository) has no tag, branch or commit named \(ref)")
    }

    /// Brings the mirror of `repository` up to date (tags moved upstream move here too); its path.
    @discardableResult
    public func fetch(_ repository: String) async throws(Failure) -> String {
        let repository = Self.locate(repository)
        let mirror = mirrorPath(repository)
        if !FileManager.default.fileExists(atPath: mirror + "/HEAD") {
            do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) } catch {
                throw Failure("cannot create \(directory): \(error.localizedDescription)")
            }
            _ = try await git(["init", "--quiet", "--bare", mirror], in: nil, what: "create a mirror of \(repository)")
        }
        _ = try await git(
            ["fetch", "--quiet", "--prune", "--force", "--", repository, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"], in: mirror,
            what: "fetch \(repository)")
        return mirror
    }

    /// A clean checkout of `commit` (fetched before) at `destination`, which must not exist.
    public func checkout(_ repository: String, commit: String, into destination: String) async throws(Failure) {
        let mirror = mirrorPath(Self.locate(repository))
        _ = try await git(["clone", "--quiet", "--shared", "--no-checkout", "--", mirror, destination], in: nil, what: "check out \(commit)")
        _ = try await git(["checkout", "--quiet", "--detach", commit], in: destination, what: "check out \(commit)")
    }

    func mirrorPath(_ repository: String) -> String {
        let digest = SHA256.hash(data: Data(repository.utf8)).prefix(12).map { String(format: "%02x", $0) }.joined()
        return "\(directory)/\(digest).git"
    }

    /// Runs git; its output, or a `Failure` naming what could not be done and git's own words.
    private func git(_ arguments: [String], in repository: String?, what: String) async throws(Failure) -> String {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("triad-git-\(UUID().uuidString)").path
        do { try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true) } catch {
            throw Failure("cannot \(what): no temporary directory (\(error.localizedDescription))")
        }
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let log = scratch + "/git.log"
        let argv =
            ["git", "-c", "protocol.allow=never", "-c", "protocol.file.allow=always", "-c", "protocol.https.allow=always", "-c", "protocol.ssh.allow=always"]
            + (repository.map { ["-C", $0] } ?? []) + arguments
        let ending = await CommandRunner.run(
            argv, directory: scratch, environment: Self.environment, log: log, timeoutSeconds: timeoutSeconds)
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        switch ending {
        case .exited(0): return output
        case .exited: throw Failure("cannot \(what): \(Self.gitSays(output))")
        case .timedOut: throw Failure("cannot \(what): git did not finish within \(Int(timeoutSeconds)) s")
        case .cannotStart(let why): throw Failure("cannot \(what): \(why)")
        }
    }

    /// Git's last lines, which say why (a long listing is not the reason).
    static func gitSays(_ output: String) -> String {
        let lines = output.split(whereSeparator: \.isNewline).map(String.init).filter { !$0.isEmpty }
        return lines.suffix(3).joined(separator: "; ")
    }

    /// The user's HOME stays (ssh keys, credential helpers); nothing else of the server's does.
    static var environment: [String: String] {
        let own = ProcessInfo.processInfo.environment
        return [
            "PATH": own["PATH"] ?? "/usr/local/bin:/usr/bin:/bin",
            "HOME": own["HOME"] ?? "/",
            "LANG": "C.UTF-8",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
        ]
    }

    /// A relative path names a repository relative to the current directory; git runs elsewhere.
    static func locate(_ repository: String) -> String {
        if repository.contains("://") || repository.hasPrefix("/") { return repository }
        return FileManager.default.currentDirectoryPath + "/" + repository
    }
}
