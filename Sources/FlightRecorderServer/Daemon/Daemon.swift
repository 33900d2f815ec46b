public import FlightRecorderConfig
import FlightRecorderOTLP
import FlightRecorderRedaction
import FlightRecorderStorage
import Hummingbird
import HummingbirdTLS
import NIOSSL
public import Logging
import NIOCore
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif
import UnixSignals

/// Wires the store, the OTLP/HTTP receiver and the query API into one `ServiceGroup` with
/// graceful shutdown on SIGTERM/SIGINT: the listeners stop and drain first, then the store
/// flushes, fsyncs and closes.
public struct Daemon: Sendable {
    public let configuration: DaemonConfiguration
    /// Re-read on SIGHUP to reload the redaction policy; nil when started without a file.
    public let configPath: String?
    public let logger: Logger

    public init(configuration: DaemonConfiguration, configPath: String? = nil, logger: Logger) {
        self.configuration = configuration
        self.configPath = configPath
        self.logger = logger
    }

    public func run() async throws {
        // Certificates load before the data directory is opened, so a bad file stops start-up cleanly.
        let tls = try configuration.tls.map(Self.tlsConfiguration)
        let exposed = [configuration.otlpGRPC, configuration.otlpHTTP, configuration.api].compactMap { $0 }
            .filter { !$0.isLoopback }
        if tls == nil && !exposed.isEmpty {
            logger.warning(
                "listening beyond loopback without TLS: bearer tokens cross the network in clear text",
                metadata: ["addresses": "\(exposed.map(\.description).joined(separator: ", "))"])
        }
        let store = try SpanStore(configuration: configuration.storeConfiguration, logger: logger)
        let policy = try IngestPolicy(
            runIdentity: RunIdentity(keys: configuration.runIDKeys), indexedKeys: configuration.indexedKeys,
            limits: configuration.limits,
            redaction: configuration.redaction)
        if !configuration.redaction.enabled {
            logger.warning("redaction is disabled: span values are stored as sent")
        }
        let auth = Authenticator(tokens: configuration.tokens)
        if !auth.enabled {
            logger.notice("no auth.tokens configured: single default tenant, loopback listeners only")
        }
        let ingest = IngestService(
            store: store, policy: policy, auth: auth, rateLimiter: configuration.rateLimit.map { TenantRateLimiter(limit: $0) },
            budget: MemoryBudget(limit: max(configuration.queueBytes, 2 * configuration.maxRequestBytes)),
            maxRequestBytes: configuration.maxRequestBytes, logger: logger)
        let otlpRouter = Router(context: BasicRequestContext.self)
        OTLPHTTPReceiver(ingest: ingest, logger: logger).addRoutes(to: otlpRouter)
        let apiRouter = Router(context: BasicRequestContext.self)
        QueryAPI(store: store, policy: policy, ingest: ingest, auth: auth, logger: logger).addRoutes(to: apiRouter)

        var listeners: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let address = configuration.otlpGRPC {
            listeners.append(
                .init(
                    service: GRPCListener(
                        address: .tcp(address), tls: configuration.tls, ingest: ingest, listener: "otlp_grpc",
                        logger: logger)))
        }
        if let path = configuration.otlpGRPCSocket {
            listeners.append(
                .init(
                    service: GRPCListener(
                        address: .unix(path: path, mode: configuration.socketMode), tls: nil, ingest: ingest,
                        listener: "otlp_grpc_socket", logger: logger)))
        }
        if let address = configuration.otlpHTTP {
            listeners.append(.init(service: try application(otlpRouter, address, tls: tls, listener: "otlp_http")))
        }
        if let path = configuration.otlpHTTPSocket {
            listeners.append(.init(service: socketApplication(otlpRouter, path: path, listener: "otlp_http_socket")))
        }
        listeners.append(.init(service: try application(apiRouter, configuration.api, tls: tls, listener: "api")))
        // Shutdown runs in reverse order: listeners drain before the store closes.
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: store), .init(service: PolicyReloader(policy: policy, configPath: configPath, logger: logger)),
                ] + listeners,
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    static func tlsConfiguration(_ files: TLSFiles) throws -> TLSConfiguration {
        let chain = try NIOSSLCertificate.fromPEMFile(files.certificateChain).map { NIOSSLCertificateSource.certificate($0) }
        let key = try NIOSSLPrivateKey(file: files.privateKey, format: .pem)
        return TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
    }

    func application(
        _ router: Router<BasicRequestContext>, _ address: HostPort, tls: TLSConfiguration?, listener: String
    ) throws -> some Service {
        Application(
            router: router,
            server: try tls.map { try .tls(.http1(), tlsConfiguration: $0) } ?? .http1(),
            configuration: .init(address: .hostname(address.host, port: address.port), serverName: "flightrec"),
            onServerRunning: { [logger] channel in
                logger.notice(
                    "listening",
                    metadata: ["listener": "\(listener)", "address": "\(Self.describe(channel))", "tls": "\(tls != nil)"])
            },
            logger: logger)
    }

    /// A listener on a Unix socket, chmod-ed to `socketMode` once bound (0660 by default).
    func socketApplication(_ router: Router<BasicRequestContext>, path: String, listener: String) -> some Service {
        let mode = configuration.socketMode
        return Application(
            router: router,
            configuration: .init(address: .unixDomainSocket(path: path), serverName: "flightrec"),
            onServerRunning: { [logger] _ in
                if chmod(path, mode_t(mode)) != 0 {
                    logger.error("cannot set socket mode", metadata: ["path": "\(path)"])
                }
                logger.notice("listening", metadata: ["listener": "\(listener)", "path": "\(path)"])
            },
            logger: logger)
    }

    static func describe(_ channel: any Channel) -> String {
        guard let address = channel.localAddress else { return "unknown" }
        return "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
    }
}

/// Reloads the redaction policy on SIGHUP. An invalid new policy is refused and logged; the
/// daemon keeps running with the previous one, never without redaction.
struct PolicyReloader: Service {
    let policy: IngestPolicy
    let configPath: String?
    let logger: Logger

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            guard let configPath else {
                logger.notice("SIGHUP ignored: the daemon was started without --config")
                continue
            }
            do {
                let next = try DaemonConfiguration.load(path: configPath)
                try policy.reload(redaction: next.redaction)
                logger.notice("redaction policy reloaded", metadata: ["config": "\(configPath)"])
            } catch {
                logger.error("redaction policy reload refused; keeping the previous policy", metadata: ["error": "\(error)"])
            }
        }
    }
}
