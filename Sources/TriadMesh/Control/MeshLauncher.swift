import Foundation
import TriadProcess

#if canImport(Glibc)
    import Glibc
#endif

/// `mesh up` and `mesh down` as seen from the CLI: the control process runs detached (its own
/// session, its log in `.triad-mesh/control.log`) and announces itself through the state file.
public enum MeshLauncher {
    /// Starts `executable mesh serve …` detached in `workingDirectory` and waits until the
    /// mesh is up (its state file names it) or the control process gave up.
    public static func up(
        executable: String, meshFile: String, envoy: String, workingDirectory: String, plainEnvoy: Bool = false,
        timeout: Duration = .seconds(120)
    ) async throws -> MeshState {
        if let old = MeshState.load(from: workingDirectory) {
            if ChildProcess.alive(Int32(old.pid)) {
                throw MeshClient.Failure("mesh \(old.name) is already running here (pid \(old.pid)); run triad mesh down first")
            }
            MeshState.remove(in: workingDirectory)
        }
        let dir = MeshState.directory(in: workingDirectory)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let logPath = dir + "/control.log"
        let child = try ChildProcess(
            id: "control", kind: "control", executable: executable,
            arguments: ["mesh", "serve", "-f", meshFile, "--envoy", envoy, "--directory", workingDirectory] + (plainEnvoy ? ["--plain-envoy"] : []),
            environment: ProcessInfo.processInfo.environment, directory: workingDirectory, logPath: logPath)
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let state = MeshState.load(from: workingDirectory), state.pid == Int(child.pid) { return state }
            if !child.isRunning {
                throw MeshClient.Failure("the mesh did not start; \(logPath) ends:\n\(ChildProcess.tail(of: logPath, bytes: 3000))")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        await child.stop()
        throw MeshClient.Failure("the mesh was not up after \(timeout); \(logPath) ends:\n\(ChildProcess.tail(of: logPath, bytes: 3000))")
    }

    /// Asks the control process to stop everything and waits until it has; if it is gone
    /// already, stops the processes its state file lists. Returns the pids that were stopped.
    @discardableResult
    public static func down(workingDirectory: String, timeout: Duration = .seconds(30)) async throws -> [Int] {
        let (client, state) = try MeshClient.find(in: workingDirectory)
        let pids = [state.pid] + state.processes.map(\.pid)
        if ChildProcess.alive(Int32(state.pid)) {
            try? await client.down()
            let deadline = ContinuousClock.now + timeout
            while ChildProcess.alive(Int32(state.pid)) && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        // Whatever still runs (the control process was killed, or did not finish in time).
        for entry in state.processes.reversed() where ChildProcess.alive(Int32(entry.pid)) { kill(Int32(entry.pid), SIGTERM) }
        if ChildProcess.alive(Int32(state.pid)) { kill(Int32(state.pid), SIGKILL) }
        let deadline = ContinuousClock.now + .seconds(5)
        while pids.contains(where: { ChildProcess.alive(Int32($0)) }) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        for pid in pids where ChildProcess.alive(Int32(pid)) { kill(Int32(pid), SIGKILL) }
        MeshState.remove(in: workingDirectory)
        return pids
    }
}
