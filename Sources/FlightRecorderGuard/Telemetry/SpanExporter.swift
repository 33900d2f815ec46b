import AsyncHTTPClient
import FlightRecorderGuardPolicy
import FlightRecorderSQLite
import Foundation
public import Logging
import NIOCore
import NIOHTTP1
public import ServiceLifecycle
import Synchronization

/// Sends the sidecar's spans to the collector over OTLP/HTTP (protobuf), in the background:
/// a decision never waits for the collector. The spans are read from the store's outbox
/// (`GuardStore.enqueue`), where each was committed with the state it describes before the
/// agent got its answer, and deleted only once the collector acknowledged them: a collector
/// outage or a crash of the sidecar loses none (the collector deduplicates a batch sent
/// twice by span ID). Batches go out every 100 ms or at up to 512 spans; a refused or failed
/// export is retried with backoff. The outbox is bounded by `limitBytes` of store on disk
/// (`GuardService` refuses new decisions beyond it, and warns from 80 %).
public final class SpanExporter: Service, Sendable {
    public struct Counters: Sendable, Equatable {
        public var exported = 0
        public var dropped = 0
        public var failedAttempts = 0
        public var queued = 0
    }

    let endpoint: String?
    let token: String?
    /// How large the store may grow while spans wait for the collector.
    public let limitBytes: Int64
    let logger: Logger
    /// The outbox, on a connection of the exporter's own (`attach`); the counters.
    private let state = Mutex<(outbox: OutboxReader?, counters: Counters)>((nil, Counters()))
    /// Logs a failing collector once, and its recovery once, not every retry.
    private let failing = Mutex(false)

    /// `endpoint` nil: no span is kept or sent (`collector: off`).
    public init(endpoint: String?, token: String?, limitBytes: Int64 = 1 << 30, logger: Logger) {
        self.endpoint = endpoint
        self.token = token
        self.limitBytes = limitBytes
        self.logger = logger
    }

    /// Whether spans are kept for the collector at all.
    public var isExporting: Bool { endpoint != nil }

    /// Opens the outbox of the store at `path` (after the store made it).
    func attach(databasePath path: String) throws {
        guard endpoint != nil else { return }
        let reader = try OutboxReader(path: path)
        state.withLock { $0.outbox = reader }
    }

    public var counters: Counters {
        state.withLock { s in
            var c = s.counters
            c.queued = (try? s.outbox?.queuedSpans()) ?? 0
            return c
        }
    }

    public func run() async throws {
        guard let endpoint else {
            try? await gracefulShutdown()
            return
        }
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        var backoff = 0.1
        while !Task.isShuttingDownGracefully {
            let sent = await exportOnce(client, endpoint)
            if sent == nil {
                try? await Task.sleep(for: .seconds(backoff))
                backoff = min(backoff * 2, 5)
                continue
            }
            backoff = 0.1
            if sent == 0 { try? await Task.sleep(for: .milliseconds(100)) }
        }
        // Send what is left, for a bounded time; the rest stays in the outbox for next time.
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline, let n = await exportOnce(client, endpoint), n > 0 {}
        let left = counters.queued
        if left > 0 {
            logger.notice("spans kept in the outbox for the next start", metadata: ["spans": "\(left)"])
        }
        try? await client.shutdown()
    }

    /// Sends the oldest outbox entries (up to 512 spans): the number sent, 0 when the outbox
    /// was empty, nil when the collector refused or could not be reached (they stay).
    func exportOnce(_ client: HTTPClient, _ endpoint: String) async -> Int? {
        let batch: OutboxReader.Batch?
        do {
            batch = try state.withLock { s in try s.outbox?.oldest(spans: 512) }
        } catch {
            logger.error("cannot read the span outbox", metadata: ["error": "\(error)"])
            return nil
        }
        guard let batch, batch.spans > 0 else { return 0 }
        var request = HTTPClientRequest(url: endpoint)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-protobuf")
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        // Serialized requests one after another are one request (protobuf concatenation).
        request.body = .bytes(ByteBuffer(bytes: batch.body))
        do {
            let response = try await client.execute(request, timeout: .seconds(3))
            _ = try? await response.body.collect(upTo: 64 * 1024)
            guard (200..<300).contains(Int(response.status.code)) else {
                // 4xx other than 429 will not improve on retry: drop the batch, loudly.
                let retryable = response.status.code == 429 || response.status.code >= 500
                state.withLock { $0.counters.failedAttempts += 1 }
                if !retryable {
                    try? state.withLock { s in try s.outbox?.delete(through: batch.lastID) }
                    state.withLock { $0.counters.dropped += batch.spans }
                }
                logger.warning(
                    "collector refused sidecar spans",
                    metadata: [
                        "status": "\(response.status.code)", "spans": "\(batch.spans)", "retrying": "\(retryable)",
                    ])
                return retryable ? nil : batch.spans
            }
        } catch {
            state.withLock { $0.counters.failedAttempts += 1 }
            if !failing.withLock({ f in
                defer { f = true }; return f
            }) {
                logger.warning(
                    "cannot reach the collector; spans are kept in the outbox and retried (see /v1/stats)",
                    metadata: ["endpoint": "\(endpoint)", "error": "\(type(of: error))"])
            }
            return nil
        }
        do {
            try state.withLock { s in try s.outbox?.delete(through: batch.lastID) }
        } catch {
            // Sent but still in the outbox: sent again later, and deduplicated by the collector.
            logger.error("cannot delete exported spans from the outbox", metadata: ["error": "\(error)"])
        }
        state.withLock { $0.counters.exported += batch.spans }
        if failing.withLock({ f in
            defer { f = false }; return f
        }) {
            logger.notice("collector reachable again; exporting the outbox", metadata: ["endpoint": "\(endpoint)"])
        }
        return batch.spans
    }
}

/// The exporter's own connection to the store: reads the oldest outbox entries and deletes
/// them once sent. `@unchecked Sendable`: used only under the exporter's lock.
final class OutboxReader: @unchecked Sendable {
    struct Batch {
        var lastID: Int64
        var spans: Int
        var body: [UInt8]
    }

    let db: SQLiteDatabase
    private let select: SQLiteStatement
    private let remove: SQLiteStatement
    private let count: SQLiteStatement

    init(path: String) throws {
        db = try SQLiteDatabase(path: path)
        select = try db.prepare("SELECT id, spans, body FROM outbox ORDER BY id LIMIT 64")
        remove = try db.prepare("DELETE FROM outbox WHERE id <= ?1")
        count = try db.prepare("SELECT coalesce(sum(spans), 0) FROM outbox")
    }

    func oldest(spans limit: Int) throws -> Batch {
        var batch = Batch(lastID: 0, spans: 0, body: [])
        defer { select.reset() }
        while try select.step() {
            let n = Int(select.int64(1))
            if batch.spans > 0 && batch.spans + n > limit { break }
            batch.lastID = select.int64(0)
            batch.spans += n
            batch.body += select.blob(2)
        }
        return batch
    }

    func delete(through id: Int64) throws { try remove.bind(1, id).run() }

    func queuedSpans() throws -> Int {
        defer { count.reset() }
        return try count.step() ? Int(count.int64(0)) : 0
    }
}
