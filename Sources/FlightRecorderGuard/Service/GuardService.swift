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

    /// A durable write; a failure is a 503 (the answer it would back is never sent).
    func save(_ body: () throws -> Void) throws(GuardError) {
        do {
            try store.transaction(body)
        } catch {
            logger.error("cannot write the sidecar store", metadata: ["error": "\(error)"])
            throw GuardError(
                .unavailable, "the sidecar cannot write its store; nothing was executed", retryAfterSeconds: 1)
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
