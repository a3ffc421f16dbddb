import Foundation
import Synchronization

/// An exclusive advisory lock on a file (flock), held until released; the kernel also releases
/// it when the process dies, even on kill -9.
final class FileLock: Sendable {
    private let descriptor: Atomic<Int32>

    /// nil when another process holds the lock.
    init?(path: String) {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return nil }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            return nil
        }
        descriptor = Atomic(fd)
    }

    /// Unlocks, then closes; a second call does nothing. Closing alone is not enough: a child
    /// being spawned at that moment holds a copy of the descriptor until its exec, and with it
    /// the lock (a reopen right after a close was refused under load).
    func release() {
        let fd = descriptor.exchange(-1, ordering: .acquiringAndReleasing)
        if fd >= 0 {
            flock(fd, LOCK_UN)
            close(fd)
        }
    }

    deinit { release() }
}
