import Foundation

/// A file only its owner may read, from the moment it exists: created 0600 with
/// `O_CREAT|O_EXCL|O_NOFOLLOW` (never briefly world-readable, never through a planted link).
public enum SecretFile {
    public struct WriteFailed: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    public static func create(_ path: String, contents: Data) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw WriteFailed(description: "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        // The mode given to open is cut by the umask; 0600 is what is meant, whatever the umask.
        guard fchmod(fd, 0o600) == 0 else { throw WriteFailed(description: "cannot set the mode of \(path)") }
        let written = contents.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == contents.count, fsync(fd) == 0 else {
            throw WriteFailed(description: "cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }
}
