import FlightRecorderAnalysis
public import FlightRecorderConfig
import FlightRecorderHTTP
import FlightRecorderIngest
import FlightRecorderMetrics
import FlightRecorderOTLP
import FlightRecorderQuery
import FlightRecorderRedaction
import FlightRecorderStorage
import Foundation
import Hummingbird
import HummingbirdTLS
public import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization
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
        let metrics = MetricsEndpoint(settings: configuration.metrics)
        var storeConfiguration = configuration.storeConfiguration
        storeConfiguration.metricsFactory = metrics.factory
        // The run analyser needs the store, and the store tells it which runs each round touched.
        let analyserBox = AnalyserBox()
        if configuration.metrics.enabled {
            storeConfiguration.onMetrics = { metrics.observe($0) }
            storeConfiguration.onRunsTouched = { analyserBox.analyser.withLock { $0 }?.touched($0) }
        }
        if configuration.evidence.enabled {
            storeConfiguration.evidence = try Self.evidence(configuration, logger: logger)
        }
        // Expired runs leave the run statistics too (made after the store, like the analyser).
        let statsBox = StatsBox()
        let expiryLogger = logger
        storeConfiguration.onExpired = { segments in
            // Exemplars name runs, and a span's names its trace while no span has named the run.
            metrics.agent.forgetExemplars(
                runs: Set(segments.flatMap { $0.runs.map(\.run) + $0.traces.map(\.trace) }))
            guard let stats = statsBox.stats.withLock({ $0 }) else { return }
            do {
                try stats.forget(segments.flatMap(\.runs))
            } catch {
                expiryLogger.error(
                    "retention: could not forget expired runs' statistics", metadata: ["error": "\(error)"])
            }
        }
        // A `where` hold keeps every run with a matching span: found by the same search as
        // `GET /api/v1/runs?where=`, every run scanned; nil (expiry waits) unless complete.
        let storeBox = StoreBox()
        storeConfiguration.heldRuns = { holds in
            guard let store = storeBox.store.withLock({ $0 }) else { return nil }
            let indexed = Set(store.configuration.indexedKeys.keys)
            let found = Mutex<[(tenant: String, run: String)]?>(nil)
            let done = DispatchSemaphore(value: 0)
            Task {
                defer { done.signal() }
                var runs: [(tenant: String, run: String)] = []
                for hold in holds {
                    guard let filter = try? SpanFilter.parse(hold.value),
                        let result = try? await store.search(
                            narrow: filter.requiredEqualities(among: indexed), scope: .all, since: nil, until: nil,
                            limit: 1_000_000, scanLimit: Int.max, filter: filter),
                        result.complete
                    else { return }
                    runs += result.hits.map { ($0.run.tenant ?? ResourceFacts.defaultTenant, $0.run.runID) }
                }
                found.withLock { $0 = runs }
            }
            done.wait()
            return found.withLock { $0 }
        }
        let store = try SpanStore(configuration: storeConfiguration, logger: logger)
        storeBox.store.withLock { $0 = store }
        let retention = configuration.retention
        if retention.expires {
            logger.notice(
                "retention on: sealed segments expire whole",
                metadata: [
                    "max_age_seconds": "\(retention.maxAgeSeconds.map { String(Int($0)) } ?? "none")",
                    "max_bytes": "\(retention.maxBytes.map(String.init) ?? "none")",
                    "floor_seconds": "\(Int(retention.floorSeconds))",
                    "tenant_ages": "\(retention.tenantMaxAgeSeconds.count)",
                    "holds_in_force": "\(store.holds.all.count)",
                ])
            if !retention.tenantMaxAgeSeconds.isEmpty {
                logger.notice(
                    """
                    retention: segments hold every tenant's spans; a segment shared with a tenant kept longer is \
                    rewritten without the spans of tenants past their age
                    """)
            }
        }
        var analyser: RunAnalyser?
        var runStats: RunStatsStore?
        if let rules = configuration.metrics.rules {
            let stats = try RunStatsStore(path: configuration.dataDirectory + "/stats.db")
            let a = RunAnalyser(
                store: store, stats: stats, rules: rules, settle: configuration.metrics.runSettleSeconds,
                logger: logger, spillPath: configuration.dataDirectory + "/stats.spill",
                onMetrics: { metrics.observe($0) })
            analyserBox.analyser.withLock { $0 = a }
            statsBox.stats.withLock { $0 = stats }
            analyser = a
            runStats = stats
        }
        var redaction = configuration.redaction
        if redaction.enabled && !redaction.identityKeys.isEmpty {
            redaction.pseudonymKey = try Self.pseudonymKey(configuration, logger: logger)
        }
        let policy = try IngestPolicy(
            runIdentity: RunIdentity(keys: configuration.runIDKeys), indexedKeys: configuration.indexedKeys,
            limits: configuration.limits,
            redaction: redaction, metrics: configuration.metrics.rules,
            evidenceLeaves: configuration.evidence.enabled)
        if !configuration.redaction.enabled {
            logger.warning("redaction is disabled: span values are stored as sent")
        }
        let auth = Authenticator(tokens: configuration.tokens)
        if !auth.enabled {
            logger.notice("no auth.tokens configured: single default tenant, loopback listeners only")
        }
        let ingest = IngestService(
            store: store, policy: policy, auth: auth,
            rateLimiter: configuration.rateLimit.map { TenantRateLimiter(limit: $0) },
            budget: MemoryBudget(limit: max(configuration.queueBytes, 2 * configuration.maxRequestBytes)),
            maxRequestBytes: configuration.maxRequestBytes, logger: logger)
        let otlpRouter = Router(context: BasicRequestContext.self)
        OTLPHTTPReceiver(ingest: ingest, logger: logger).addRoutes(to: otlpRouter)
        let apiRouter = Router(context: BasicRequestContext.self)
        let gate = DrainGate()
        let api = QueryAPI(store: store, policy: policy, ingest: ingest, auth: auth, gate: gate, logger: logger)
        api.addRoutes(to: apiRouter)
        metrics.attach(store: store, ingest: ingest, analyser: analyser)
        metrics.addRoute(to: apiRouter, api: api)
        if let runStats { StatsAPI(api: api, stats: runStats).addRoutes(to: apiRouter) }
        RunViewAPI(api: api, stats: runStats).addRoutes(to: apiRouter)
        HoldsAPI(api: api).addRoutes(to: apiRouter)
        let erasureLogger = logger
        ErasuresAPI(
            api: api,
            onErased: { runs, tenant in
                if let tenant { metrics.agent.forgetExemplars(tenant: tenant) }
                // The runs' aggregates go, so statistics and the run pages forget them too.
                guard let stats = statsBox.stats.withLock({ $0 }) else { return }
                do {
                    try stats.forget(runs)
                    if let tenant { try stats.forget(tenant: tenant) }
                    try stats.scrub()
                } catch {
                    erasureLogger.error(
                        "erasure: could not forget the runs' statistics", metadata: ["error": "\(error)"])
                }
            }
        ).addRoutes(to: apiRouter)
        WebUI().addRoutes(to: apiRouter)

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
            listeners.append(.init(service: try http(otlpRouter, .tcp(address), tls: tls, key: "listeners.otlp_http")))
        }
        if let path = configuration.otlpHTTPSocket {
            listeners.append(
                .init(
                    service: try http(
                        otlpRouter, .unix(path: path, mode: configuration.socketMode), tls: nil,
                        key: "listeners.otlp_http_socket")))
        }
        listeners.append(.init(service: try http(apiRouter, .tcp(configuration.api), tls: tls, key: "listeners.api")))
        // Shutdown runs in reverse order: the drain window (503 + Retry-After for
        // `listeners.shutdown_grace`), then the listeners drain, then the store closes.
        let drain = DrainWindow(
            gate: gate, ingest: ingest, grace: .milliseconds(Int(configuration.shutdownGraceSeconds * 1000)),
            logger: logger)
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: store),
                    .init(service: PolicyReloader(policy: policy, configPath: configPath, logger: logger)),
                ] + (analyser.map { [.init(service: $0)] } ?? []) + listeners + [.init(service: drain)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    static func tlsConfiguration(_ files: TLSFiles) throws -> TLSConfiguration {
        let chain = try NIOSSLCertificate.fromPEMFile(files.certificateChain).map {
            NIOSSLCertificateSource.certificate($0)
        }
        let key = try NIOSSLPrivateKey(file: files.privateKey, format: .pem)
        return TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
    }

    func http(
        _ router: Router<BasicRequestContext>, _ address: HTTPListener.Address, tls: TLSConfiguration?, key: String
    ) throws -> HTTPListener {
        try HTTPListener(router: router, address: address, tls: tls, key: key, serverName: "flightrec", logger: logger)
    }
}

extension HTTPListener.Address {
    static func tcp(_ hp: HostPort) -> Self { .tcp(host: hp.host, port: hp.port) }
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
                logger.error(
                    "redaction policy reload refused; keeping the previous policy", metadata: ["error": "\(error)"])
            }
        }
    }
}

/// Where the store's `heldRuns` finds the store, made after its configuration.
final class StoreBox: Sendable {
    let store = Mutex<SpanStore?>(nil)
}

/// Where the store's `onExpired` finds the run statistics, made after the store.
final class StatsBox: Sendable {
    let stats = Mutex<RunStatsStore?>(nil)
}

/// Where the store's `onRunsTouched` finds the run analyser, made after the store.
final class AnalyserBox: Sendable {
    let analyser = Mutex<RunAnalyser?>(nil)
}
