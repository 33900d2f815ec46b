public import Logging

#if canImport(Glibc)
import Glibc
#endif

/// What every listener of both daemons does once bound: a Unix socket gets its file mode
/// (0660 by default), and one `listening` line names the listener and where it listens. Tests
/// and operators wait for that line.
public enum ListenerAnnouncement {
    public enum Bound: Sendable {
        case tcp(address: String, tls: Bool)
        case unix(path: String, mode: Int)
    }

    public static func announce(_ bound: Bound, name: String, logger: Logger) {
        switch bound {
        case .unix(let path, let mode):
            if chmod(path, mode_t(mode)) != 0 {
                logger.error("cannot set socket mode", metadata: ["path": "\(path)"])
            }
            logger.notice("listening", metadata: ["listener": "\(name)", "path": "\(path)"])
        case .tcp(let address, let tls):
            logger.notice("listening", metadata: ["listener": "\(name)", "address": "\(address)", "tls": "\(tls)"])
        }
    }
}
