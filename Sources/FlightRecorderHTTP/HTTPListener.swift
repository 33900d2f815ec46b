public import Hummingbird
import HummingbirdTLS
public import Logging
public import NIOSSL
public import ServiceLifecycle

/// One Hummingbird HTTP/1.1 listener, on TCP (optionally TLS) or a Unix socket, as a
/// lifecycle service. Shared by the collector's OTLP/HTTP receiver and query API and by the
/// sidecar: it logs "listening" once bound, sets a socket's file mode, and turns a bind
/// failure into a `ListenError` that names the configuration key.
public struct HTTPListener: Service {
    public enum Address: Sendable {
        case tcp(host: String, port: Int)
        /// A Unix socket, chmod-ed to `mode` once bound (0660 by default in both daemons).
        case unix(path: String, mode: Int)

        var description: String {
            switch self {
            case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case .unix(let path, _): path
            }
        }
    }

    let application: any Service
    let key: String
    let address: Address

    /// - Parameters:
    ///   - key: the listener's configuration key, named in errors.
    ///   - name: the listener's name in the "listening" log (default: the key's last part).
    ///   - serverName: the `Server` header.
    public init(
        router: Router<BasicRequestContext>, address: Address, tls: TLSConfiguration? = nil, key: String,
        name: String? = nil, serverName: String, logger: Logger
    ) throws {
        let bind: BindAddress
        switch address {
        case .tcp(let host, let port): bind = .hostname(host, port: port)
        case .unix(let path, _): bind = .unixDomainSocket(path: path)
        }
        let name = name ?? key.split(separator: ".").last.map(String.init) ?? key
        self.key = key
        self.address = address
        application = Application(
            router: router,
            server: try tls.map { try .tls(.http1(), tlsConfiguration: $0) } ?? .http1(),
            configuration: .init(address: bind, serverName: serverName),
            onServerRunning: { channel in
                switch address {
                case .unix(let path, let mode):
                    ListenerAnnouncement.announce(.unix(path: path, mode: mode), name: name, logger: logger)
                case .tcp:
                    let local = channel.localAddress
                    ListenerAnnouncement.announce(
                        .tcp(address: "\(local?.ipAddress ?? "?"):\(local?.port ?? 0)", tls: tls != nil), name: name,
                        logger: logger)
                }
            },
            logger: logger)
    }

    public func run() async throws {
        do {
            try await application.run()
        } catch {
            throw ListenError.from(error, key: key, address: address.description) ?? error
        }
    }
}
