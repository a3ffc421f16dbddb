import Crypto
import Foundation
import TriadCore
import TriadProcess

/// Turns a service's ref into an artifact: resolves the ref to a commit, fetches the repository
/// into the mirror, runs the build in a clean checkout of that commit within its time limit,
/// keeps the log, and records the artifact with its SHA-256. A commit built once is not built
/// again; a tag moved to another commit resolves to that commit and is built anew.
///
/// Layout under `directory`: `<project>/<service>/<commit>/` holds `build.json` (the record),
/// `build.log` and `artifact/<file>`.
public actor BuildManager {
    public struct Record: Codable, Sendable, Equatable {
        public enum Outcome: String, Codable, Sendable {
            case succeeded = "Succeeded"
            case failed = "Failed"
        }
        public var project: String
        public var service: String
        public var ref: String
        /// Empty when the ref could not be resolved.
        public var commit: String
        public var outcome: Outcome
        /// Why it failed, with the log's last lines when the build itself failed.
        public var reason: String?
        public var artifact: String?
        public var sha256: String?
        public var log: String?
        public var startedAt: String
        public var finishedAt: String
        /// True when an earlier build of the same commit was found, not built again.
        public var reused: Bool?
    }

    public enum Progress: Sendable, Equatable {
        case resolved(commit: String)
        case checkingOut(commit: String)
        case building(seconds: Double, lastLine: String)
    }

    public let directory: String
    private let git: GitRepositories
    private let clock: @Sendable () -> Date
    /// Builds under way, by their directory: a second request for one waits for the first.
    private var running: [String: Task<Record, Never>] = [:]

    public init(directory: String, git: GitRepositories, clock: @escaping @Sendable () -> Date = { Date() }) {
        self.directory = directory
        self.git = git
        self.clock = clock
    }

    /// Builds `service` of `project` at `ref` (default: the service's own), or finds the build of
    /// that commit done before. Failures are records too (outcome `Failed`), never thrown.
    public func build(
        project: String, service: ProjectManifest.Service, ref: String? = nil, progress: @escaping @Sendable (Progress) -> Void = { _ in }
    ) async -> Record {
        let ref = ref ?? service.ref
        let startedAt = Timestamp.format(clock())
        func failed(_ commit: String, _ reason: String) -> Record {
            Record(
                project: project, service: service.name, ref: ref, commit: commit, outcome: .failed, reason: reason, startedAt: startedAt,
                finishedAt: Timestamp.format(clock()))
        }
        // Names become directories: only the manifest's DNS labels may.
        guard ResourceValidator.isValidName(project), ResourceValidator.isValidName(service.name) else {
            return failed("", "project and service names must be DNS-1123 labels")
        }
        let commit: String
        do {
            commit = try await git.resolve(service.repository, ref: ref)
        } catch {
            return failed("", error.description)
        }
        progress(.resolved(commit: commit))
        let place = "\(directory)/\(project)/\(service.name)/\(commit)"
        if var done = Self.load(place + "/build.json"), done.outcome == .succeeded, let artifact = done.artifact,
            FileManager.default.fileExists(atPath: artifact)
        {
            done.reused = true
            done.ref = ref
            return done
        }
        if let underway = running[place] { return await underway.value }
        // One build per commit, shared: this caller and every caller that asks for the same commit
        // meanwhile await its value (above), so it outlives none of them and runs only once.
        let task = Task { [git, clock] in
            await Self.run(
                project: project, service: service, ref: ref, commit: commit, place: place, git: git, clock: clock, startedAt: startedAt, progress: progress)
        }
        running[place] = task
        let record = await task.value
        running[place] = nil
        return record
    }

    /// Every recorded build of `project` (of one service, if named), newest first.
    public func builds(project: String, service: String? = nil) -> [Record] {
        let base = "\(directory)/\(project)"
        let services = service.map { [$0] } ?? ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [])
        var records: [Record] = []
        for name in services {
            let commits = (try? FileManager.default.contentsOfDirectory(atPath: "\(base)/\(name)")) ?? []
            records += commits.compactMap { Self.load("\(base)/\(name)/\($0)/build.json") }
        }
        return records.sorted { $0.finishedAt > $1.finishedAt }
    }

    private static func run(
        project: String, service: ProjectManifest.Service, ref: String, commit: String, place: String, git: GitRepositories,
        clock: @Sendable () -> Date, startedAt: String, progress: @escaping @Sendable (Progress) -> Void
    ) async -> Record {
        var record = Record(
            project: project, service: service.name, ref: ref, commit: commit, outcome: .failed, log: place + "/build.log", startedAt: startedAt,
            finishedAt: startedAt)
        func finish(_ reason: String?) -> Record {
            record.reason = reason
            record.outcome = reason == nil ? .succeeded : .failed
            record.finishedAt = Timestamp.format(clock())
            if let data = try? JSONEncoder().encode(record) { _ = FileManager.default.createFile(atPath: place + "/build.json", contents: data) }
            return record
        }
        let files = FileManager.default
        let checkout = place + "/checkout"
        let home = place + "/home"
        do {
            try? files.removeItem(atPath: place)
            try files.createDirectory(atPath: home, withIntermediateDirectories: true)
            _ = files.createFile(atPath: place + "/build.log", contents: nil)
        } catch {
            return finish("cannot prepare \(place): \(error.localizedDescription)")
        }
        // The checkout and the build's HOME go when the build ends; the record, log and artifact stay.
        defer {
            try? files.removeItem(atPath: checkout)
            try? files.removeItem(atPath: home)
        }
        progress(.checkingOut(commit: commit))
        do {
            try await git.fetch(service.repository)
            try await git.checkout(service.repository, commit: commit, into: checkout)
        } catch {
            return finish(error.description)
        }
        var environment = service.build.env
        let own = ProcessInfo.processInfo.environment
        environment["PATH"] = environment["PATH"] ?? own["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        environment["HOME"] = home
        environment["LANG"] = environment["LANG"] ?? "C.UTF-8"
        environment["TRIAD_PROJECT"] = project
        environment["TRIAD_SERVICE"] = service.name
        environment["TRIAD_REF"] = ref
        environment["TRIAD_COMMIT"] = commit
        let limit = service.build.timeoutSeconds
        let ending = await CommandRunner.run(
            service.build.command, directory: checkout, environment: environment, log: place + "/build.log", timeoutSeconds: limit
        ) { seconds, line in
            progress(.building(seconds: seconds, lastLine: line))
        }
        let tail = ChildProcess.tail(of: place + "/build.log", bytes: 2000)
        switch ending {
        case .exited(0): break
        case .exited(let code): return finish("the build exited with status \(code); its log ends:\n\(tail)")
        case .timedOut: return finish("the build ran past its time limit of \(Int(limit)) s and was stopped; its log ends:\n\(tail)")
        case .cannotStart(let why): return finish("the build could not start: \(why)")
        }
        let produced = checkout + "/" + service.build.artifact
        var isDirectory: ObjCBool = false
        guard files.fileExists(atPath: produced, isDirectory: &isDirectory), !isDirectory.boolValue else {
            return finish("the build succeeded but produced no file at \(service.build.artifact); its log ends:\n\(tail)")
        }
        let kept = place + "/artifact/" + (service.build.artifact as NSString).lastPathComponent
        do {
            try files.createDirectory(atPath: place + "/artifact", withIntermediateDirectories: true)
            try files.copyItem(atPath: produced, toPath: kept)
            let data = try Data(contentsOf: URL(fileURLWithPath: kept))
            record.sha256 = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
        } catch {
            return finish("cannot keep the artifact: \(error.localizedDescription)")
        }
        record.artifact = kept
        return finish(nil)
    }

    private static func load(_ path: String) -> Record? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? JSONDecoder().decode(Record.self, from: data)
    }
}
