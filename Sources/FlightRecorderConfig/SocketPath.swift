#if canImport(Glibc)
import Glibc
#endif

/// Checks a Unix-socket listener path before binding. The HTTP server removes an existing
/// file at the path, so this refuses a path that is not a socket, or whose socket a live
/// process still answers on; only a stale socket (left by a crash) may be replaced.
public enum SocketPath {
    public enum State: Equatable {
        case free, stale
    }

    public static func check(_ path: String, key: String) throws(ConfigError) -> State {
        guard path.utf8.count < 108 else {
            throw ConfigError(key: key, reason: "socket path is longer than 107 bytes")
        }
        var st = stat()
        guard lstat(path, &st) == 0 else {
            var dir = path
            while let last = dir.last, last != "/" { dir.removeLast() }
            if !dir.isEmpty && access(dir, W_OK) != 0 {
                throw ConfigError(key: key, reason: "directory \(dir) does not exist or is not writable")
            }
            return .free
        }
        guard (st.st_mode & S_IFMT) == S_IFSOCK else {
            throw ConfigError(key: key, reason: "\(path) exists and is not a socket; refusing to replace it")
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { buf in
            for (i, b) in path.utf8.enumerated() { buf[i] = b }
        }
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if connected == 0 {
            throw ConfigError(key: key, reason: "\(path) is in use by a running process")
        }
        return .stale
    }
}
