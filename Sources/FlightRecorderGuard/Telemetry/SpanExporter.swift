import AsyncHTTPClient
import FlightRecorderGuardPolicy
import Foundation
public import Logging
import NIOCore
import NIOHTTP1
public import ServiceLifecycle
import Synchronization

/// Sends the sidecar's spans to the collector over OTLP/HTTP (protobuf), in the background:
/// a decision never waits for the collector. Batches go out every 100 ms or at 512 spans;
/// a refused or failed export is retried with backoff, keeping the spans. The queue is
/// bounded (`capacity` spans): beyond it the oldest are dropped and counted, so an outage
/// of the collector never grows the sidecar's memory without limit. On shutdown the queue
/// is flushed for up to five seconds.
public final class SpanExporter: Service, Sendable {
    public struct Counters: Sendable, Equatable {
        public var exported = 0
        public var dropped = 0
        public var failedAttempts = 0
        public var queued = 0
    }

    let endpoint: String?
    let token: String?
    let capacity: Int
    let logger: Logger
    /// `head` is the sequence number of `queue[0]`, so a batch in flight is removed exactly
    /// even when older spans were dropped meanwhile.
    private let state = Mutex<(queue: [GuardSpan], head: Int, counters: Counters)>(([], 0, Counters()))
    /// Logs a failing collector once, and its recovery once, not every retry.
    private let failing = Mutex(false)

    /// `endpoint` nil: spans are counted and discarded (`collector: off`).
    public init(endpoint: String?, token: String?, capacity: Int = 50_000, logger: Logger) {
        self.endpoint = endpoint
        self.token = token
        self.capacity = capacity
        self.logger = logger
    }

    public func emit(_ spans: [GuardSpan]) {
        guard endpoint != nil, !spans.isEmpty else { return }
        state.withLock { s in
            s.queue.append(contentsOf: spans)
            let excess = s.queue.count - capacity
            if excess > 0 {
                s.queue.removeFirst(excess)
                s.head += excess
                s.counters.dropped += excess
            }
        }
    }

    public var counters: Counters {
        state.withLock { s in
            var c = s.counters
            c.queued = s.queue.count
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
        // Flush what is left, for a bounded time.
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline, state.withLock({ !$0.queue.isEmpty }) {
            if await exportOnce(client, endpoint) == nil { try? await Task.sleep(for: .milliseconds(200)) }
        }
        let left = state.withLock { $0.queue.count }
        if left > 0 { logger.warning("spans not exported at shutdown", metadata: ["spans": "\(left)"]) }
        try? await client.shutdown()
    }

    /// Sends up to 512 queued spans: the number sent, 0 when the queue was empty, nil when the
    /// collector refused or could not be reached (the spans stay queued, in order).
    func exportOnce(_ client: HTTPClient, _ endpoint: String) async -> Int? {
        let (batch, first) = state.withLock { s in (Array(s.queue.prefix(512)), s.head) }
        guard !batch.isEmpty else { return 0 }
        var request = HTTPClientRequest(url: endpoint)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-protobuf")
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        request.body = .bytes(ByteBuffer(bytes: GuardSpanEncoder.request(batch)))
        do {
            let response = try await client.execute(request, timeout: .seconds(3))
            _ = try? await response.body.collect(upTo: 64 * 1024)
            guard (200..<300).contains(Int(response.status.code)) else {
                // 4xx other than 429 will not improve on retry: drop the batch, loudly.
                let retryable = response.status.code == 429 || response.status.code >= 500
                state.withLock { s in
                    s.counters.failedAttempts += 1
                    if !retryable {
                        Self.remove(&s, through: first + batch.count)
                        s.counters.dropped += batch.count
                    }
                }
                logger.warning(
                    "collector refused sidecar spans",
                    metadata: [
                        "status": "\(response.status.code)", "spans": "\(batch.count)", "retrying": "\(retryable)",
                    ])
                return retryable ? nil : batch.count
            }
        } catch {
            state.withLock { $0.counters.failedAttempts += 1 }
            if !failing.withLock({ f in
                defer { f = true }; return f
            }) {
                logger.warning(
                    "cannot reach the collector; spans are kept and retried (see /v1/stats)",
                    metadata: ["endpoint": "\(endpoint)", "error": "\(type(of: error))"])
            }
            return nil
        }
        state.withLock { s in
            Self.remove(&s, through: first + batch.count)
            s.counters.exported += batch.count
        }
        if failing.withLock({ f in
            defer { f = false }; return f
        }) {
            logger.notice("collector reachable again; exporting queued spans", metadata: ["endpoint": "\(endpoint)"])
        }
        return batch.count
    }

    private static func remove(_ s: inout (queue: [GuardSpan], head: Int, counters: Counters), through end: Int) {
        let n = max(0, min(s.queue.count, end - s.head))
        s.queue.removeFirst(n)
        s.head += n
    }
}
