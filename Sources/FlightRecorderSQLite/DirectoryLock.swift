#if canImport(Glibc)
import Glibc
#endif

/// An exclusive `flock` on `DIR/LOCK`, held while a store or the sidecar owns a data
/// directory, so a second process on the same directory stops at start-up instead of
/// interleaving writes. The kernel drops the lock when the process dies, so a crash never
/// leaves a stale lock behind.
///
/// `@unchecked Sendable`: the descriptor is written once in `init` and closed once in `release`.
public final class DirectoryLock: @unchecked Sendable {
    private var fd: Int32

    public init(directory: String) throws(SQLiteError) {
        let path = directory + "/LOCK"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw .io("open \(path)", errno: errno) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw .locked(directory)
        }
        self.fd = fd
    }

    /// Releases the lock; later calls do nothing.
    public func release() {
        guard fd >= 0 else { return }
        close(fd)
        fd = -1
    }

    deinit { release() }
}
