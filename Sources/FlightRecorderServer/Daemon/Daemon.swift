public import FlightRecorderConfig
import FlightRecorderOTLP
import FlightRecorderStorage
import Hummingbird
public import Logging
import NIOCore
import ServiceLifecycle
import UnixSignals

/// Wires the store, the OTLP/HTTP receiver and the query API into one `ServiceGroup` with
/// graceful shutdown on SIGTERM/SIGINT: the listeners stop and drain first, then the store
/// flushes, fsyncs and closes.
public struct Daemon: Sendable {
    public let configuration: DaemonConfiguration
    public let logger: Logger

    public init(configuration: DaemonConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    public func run() async throws {
        let store = try SpanStore(configuration: configuration.storeConfiguration, logger: logger)
        let receiver = OTLPHTTPReceiver(
            store: store, decoder: ExportRequestDecoder(runIdentity: RunIdentity(keys: configuration.runIDKeys)),
            maxRequestBytes: configuration.maxRequestBytes,
            budget: MemoryBudget(limit: max(configuration.queueBytes, 2 * configuration.maxRequestBytes)),
            logger: logger)
        let otlpRouter = Router(context: BasicRequestContext.self)
        receiver.addRoutes(to: otlpRouter)
        let apiRouter = Router(context: BasicRequestContext.self)
        QueryAPI(store: store, logger: logger).addRoutes(to: apiRouter)

        let otlp = application(otlpRouter, configuration.otlpHTTP, listener: "otlp_http")
        let api = application(apiRouter, configuration.api, listener: "api")
        // Shutdown runs in reverse order: listeners drain before the store closes.
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: store), .init(service: otlp), .init(service: api)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    func application(_ router: Router<BasicRequestContext>, _ address: HostPort, listener: String) -> some Service {
        Application(
            router: router,
            configuration: .init(address: .hostname(address.host, port: address.port), serverName: "flightrec"),
            onServerRunning: { [logger] channel in
                logger.notice("listening", metadata: ["listener": "\(listener)", "address": "\(Self.describe(channel))"])
            },
            logger: logger)
    }

    static func describe(_ channel: any Channel) -> String {
        guard let address = channel.localAddress else { return "unknown" }
        return "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
    }
}
