import AsyncHTTPClient
import FlightRecorderConfig
public import FlightRecorderGuardPolicy
import FlightRecorderHTTP
import FlightRecorderRedaction
import Foundation
import Hummingbird
public import Logging
import NIOCore
import ServiceLifecycle
import UnixSignals

/// `flightrec guard serve`: the store, the span exporter and the HTTP API in one
/// `ServiceGroup`. SIGTERM/SIGINT stop the listener first, then flush spans to the collector.
public struct GuardServer: Sendable {
    public let configuration: GuardConfiguration
    public let logger: Logger

    public init(configuration: GuardConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    public func run() async throws {
        let c = configuration
        let redactor = try Redactor(policy: c.redaction)
        var token: String?
        if let name = c.collectorTokenEnv {
            guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else {
                throw ConfigError(key: "collector_token_env", reason: "environment variable \(name) is not set")
            }
            token = value
        }
        let exporter = SpanExporter(
            endpoint: c.collector.lowercased() == "off" ? nil : c.collector, token: token,
            limitBytes: c.collectorOutboxLimit, logger: logger)
        let client = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: .init(
                timeout: .init(connect: .seconds(5)),
                connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)))
        do {
            try await serve(configuration: c, client: client, exporter: exporter, redactor: redactor)
        } catch {
            try? await client.shutdown()
            throw error
        }
        try? await client.shutdown()
    }

    /// Everything that needs the HTTP client, which `run` shuts down whatever happens here.
    private func serve(
        configuration c: GuardConfiguration, client: HTTPClient, exporter: SpanExporter, redactor: Redactor
    ) async throws {
        let service = try GuardService(
            policy: c.policy, dataDirectory: c.dataDirectory, backend: ToolBackend(client: client), exporter: exporter,
            redactor: redactor, logger: logger)
        let router = Router(context: BasicRequestContext.self)
        GuardAPI(service: service, tokens: c.actorTokens, logger: logger).addRoutes(to: router)
        let app = try HTTPListener(
            router: router,
            address: c.socket.map { .unix(path: $0, mode: c.socketMode) }
                ?? .tcp(host: c.listen.host, port: c.listen.port),
            key: c.socket != nil ? "socket" : "listen", name: "guard", serverName: "flightrec-guard", logger: logger)
        logger.notice(
            "policy loaded",
            metadata: [
                "tools": "\(c.policy.tools.count)", "rules": "\(c.policy.rules.count)",
                "actors": "\(c.policy.actors.count)",
                "collector": "\(c.collector)",
            ])
        // Shutdown runs in reverse: the listener drains before the exporter flushes; the
        // service's own thread stops last.
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: exporter), .init(service: app)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        do {
            try await group.run()
        } catch {
            await service.shutdown()
            throw error
        }
        await service.shutdown()
    }
}
