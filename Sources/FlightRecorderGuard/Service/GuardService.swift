public import FlightRecorderCore
public import FlightRecorderGuardPolicy
import FlightRecorderOTLP
public import FlightRecorderRedaction
import Foundation
public import Logging
import NIOCore
import NIOPosix

/// The sidecar's core, behind the HTTP API:
///
///     request -> validate schema -> evaluate policy -> blocked | awaiting_approval
///             -> execute(idempotency key, timeout) -> confirmed result
///
/// An actor: decisions, approvals and run state change one request at a time. The backend
/// call is awaited outside that critical section; the `executing` record written before it
/// keeps a concurrent request with the same key from running the call again, and marks it
/// `unknown` if the sidecar dies mid-call.
///
/// The actor runs on a dedicated thread of its own (`stateThread`), so its SQLite commits,
/// which fsync, never block a NIO event loop or the cooperative pool; `shutdown()` stops it.
public actor GuardService {
    private nonisolated let stateThread: MultiThreadedEventLoopGroup
    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        stateThread.next().executor.asUnownedSerialExecutor()
    }

    public let engine: PolicyEngine
    let store: GuardStore
    /// Spans emitted and not yet committed (`save`). Never held across a suspension point.
    var pendingSpans: [GuardSpan] = []
    var outboxChecks = 0
    var outboxFull = false
    let backend: ToolBackend
    let exporter: SpanExporter
    let redactor: Redactor
    let logger: Logger
    /// Timestamps of spans and records; tests inject their own.
    let clock: any WallClock

    public init(
        policy: GuardPolicy, dataDirectory: String, backend: ToolBackend, exporter: SpanExporter, redactor: Redactor,
        clock: any WallClock = SystemWallClock(), logger: Logger
    ) throws {
        self.stateThread = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.clock = clock
        self.engine = PolicyEngine(policy: policy)
        do {
            self.store = try GuardStore(directory: dataDirectory)
        } catch {
            try? stateThread.syncShutdownGracefully()
            throw error
        }
        self.backend = backend
        self.exporter = exporter
        do {
            try exporter.attach(databasePath: store.path)
        } catch {
            try? stateThread.syncShutdownGracefully()
            throw error
        }
        self.redactor = redactor
        self.logger = logger
        let recovered: Int
        do {
            recovered = try store.recoverInFlight()
        } catch {
            try? stateThread.syncShutdownGracefully()
            throw error
        }
        if recovered > 0 {
            logger.warning(
                "executions were in flight when the sidecar stopped; marked unknown, see /v1/uncertain",
                metadata: ["count": "\(recovered)"])
        }
    }

    var policy: GuardPolicy { engine.policy }

    /// Span export and redaction counters (never values), for monitoring the sidecar.
    public struct Stats: Sendable, Encodable {
        public var spansExported: Int
        public var spansDropped: Int
        public var spansQueued: Int
        public var exportFailures: Int
        public var redactions: [String: Int]

        enum CodingKeys: String, CodingKey {
            case spansExported = "spans_exported"
            case spansDropped = "spans_dropped"
            case spansQueued = "spans_queued"
            case exportFailures = "export_failures"
            case redactions
        }
    }

    public func stats() -> Stats {
        let c = exporter.counters
        return Stats(
            spansExported: c.exported, spansDropped: c.dropped, spansQueued: c.queued, exportFailures: c.failedAttempts,
            redactions: redactor.ruleCounts)
    }

    func record(
        _ r: GuardRequest, key: String, tenant: String, tier: String, decision d: Decision,
        status: ExecutionRecord.Status
    ) -> ExecutionRecord {
        ExecutionRecord(
            tenant: tenant, idempotencyKey: key, runID: r.runID, actor: r.actorID, tool: r.tool, tier: tier,
            digest: r.call.digest, status: status, reason: d.reason, rule: d.rule, ticket: d.ticket, operationID: nil,
            backendStatus: nil, result: nil, startedNanos: now(), finishedNanos: nil, traceID: nil, spanID: nil,
            reconciledBy: nil)
    }

    func load(_ tenant: String, _ run: String) throws(GuardError) -> RunState {
        try fetch { () throws in try store.runState(tenant: tenant, run: run) }
    }

    /// Queues spans for the next `save`, which commits them with the state they describe.
    func emit(_ spans: [GuardSpan]) {
        if exporter.isExporting { pendingSpans += spans }
    }

    /// A durable write, with the spans emitted since the last one (the outbox); a failure is
    /// a 503 (the answer it would back is never sent, nor are its spans).
    func save(_ body: () throws -> Void) throws(GuardError) {
        let spans = pendingSpans
        pendingSpans = []
        if !spans.isEmpty { try checkOutboxBound() }
        do {
            try store.transaction {
                try body()
                if !spans.isEmpty { try store.enqueue(spans) }
            }
        } catch {
            logger.error("cannot write the sidecar store", metadata: ["error": "\(error)"])
            throw GuardError(
                .unavailable, "the sidecar cannot write its store; nothing was executed", retryAfterSeconds: 1)
        }
    }

    /// Commits spans emitted after the last state write (a decision that changed no state),
    /// before the answer goes out.
    func flushSpans() throws(GuardError) {
        if !pendingSpans.isEmpty { try save {} }
    }

    /// Refuses new decisions once the store holds `exporter.limitBytes` (spans waiting for a
    /// collector that is gone): a decision that cannot be recorded is not made. Warns from 80 %.
    func checkOutboxBound() throws(GuardError) {
        outboxChecks += 1
        // The store's size is read once per 64 decisions; between, the last answer holds.
        if outboxChecks % 64 == 1 {
            let bytes = store.diskBytes
            let limit = exporter.limitBytes
            outboxFull = bytes >= limit
            if outboxFull {
                logger.error(
                    "span outbox full: refusing decisions until the collector takes the sidecar's spans",
                    metadata: ["store_bytes": "\(bytes)", "limit_bytes": "\(limit)"])
            } else if bytes * 5 >= limit * 4 {
                logger.warning(
                    "span outbox near its bound: the collector has not taken the sidecar's spans",
                    metadata: ["store_bytes": "\(bytes)", "limit_bytes": "\(limit)"])
            }
        }
        if outboxFull {
            throw GuardError(
                .unavailable, "the sidecar cannot record more decisions until its collector is back",
                retryAfterSeconds: 5)
        }
    }

    func fetch<T>(_ body: () throws -> T) throws(GuardError) -> T {
        do {
            return try body()
        } catch {
            logger.error("cannot read the sidecar store", metadata: ["error": "\(error)"])
            throw GuardError(.unavailable, "the sidecar cannot read its store", retryAfterSeconds: 1)
        }
    }

    static func text(_ v: JSONValue) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(v)).map { String(decoding: $0, as: UTF8.self) } ?? "null"
    }

    static func parse(_ text: String?) -> JSONValue? {
        text.flatMap { try? JSONValue.parse(Data($0.utf8)) }
    }

    /// Wall-clock nanoseconds, as OTLP timestamps are.
    func now() -> UInt64 { clock.nowNanos() }

    /// Stops the actor's thread, after the API has stopped calling it.
    public nonisolated func shutdown() async {
        try? await stateThread.shutdownGracefully()
    }
}
