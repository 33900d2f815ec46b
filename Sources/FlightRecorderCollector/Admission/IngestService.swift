import FlightRecorderConfig
import FlightRecorderOTLP
public import FlightRecorderIngest
public import FlightRecorderStorage
public import Logging
import Synchronization

/// The ingest path every OTLP listener shares (HTTP and gRPC, TCP and Unix socket):
/// authenticate, decode with the tenant stamp, redaction and limits, rate-limit per tenant,
/// and append to the store, which answers only once the spans are durable.
public final class IngestService: Sendable {
    /// Why a request was refused; each listener maps it to its protocol's status.
    public enum Refusal: Error, Sendable {
        /// Malformed or invalid request: HTTP 400, gRPC INVALID_ARGUMENT.
        case invalid(String)
        /// Over a size or count limit: HTTP 413, gRPC INVALID_ARGUMENT (retrying cannot help).
        case tooLarge(String)
        /// HTTP 401, gRPC UNAUTHENTICATED.
        case unauthenticated(String)
        /// HTTP 403, gRPC PERMISSION_DENIED.
        case forbidden(String)
        /// The tenant's rate limit: HTTP 429, gRPC RESOURCE_EXHAUSTED; both with a retry delay.
        case rateLimited(String, retryAfter: Int)
        /// Queue or memory full: HTTP 503, gRPC RESOURCE_EXHAUSTED; both with a retry delay.
        case overloaded(String, retryAfter: Int)
        /// Shutting down or storage failing: HTTP 503, gRPC UNAVAILABLE; both with a retry delay.
        case unavailable(String, retryAfter: Int)

        public var message: String {
            switch self {
            case .invalid(let m), .tooLarge(let m), .unauthenticated(let m), .forbidden(let m): m
            case .rateLimited(let m, _), .overloaded(let m, _), .unavailable(let m, _): m
            }
        }
    }

    /// What was accepted: spans stored, and spans rejected as invalid (partial success).
    public struct Accepted: Sendable {
        public var storedSpans: Int
        public var rejectedSpans: Int
        public var message: String
    }

    /// Totals since start-up, for `GET /api/v1/ingest/stats`.
    public struct Counters: Sendable, Encodable {
        public var acceptedSpans = 0
        public var rejectedSpans = 0
        public var truncatedValues = 0
        public var droppedAttributes = 0
        public var refusedRequests: [String: Int] = [:]
    }

    public let store: SpanStore
    public let policy: IngestPolicy
    public let auth: Authenticator
    public let rateLimiter: TenantRateLimiter?
    /// Bytes held by requests being read and decoded, across every listener.
    public let budget: MemoryBudget
    public let maxRequestBytes: Int
    let logger: Logger
    private let draining = Atomic<Bool>(false)
    private let counters = Mutex(Counters())

    public init(
        store: SpanStore, policy: IngestPolicy, auth: Authenticator, rateLimiter: TenantRateLimiter?,
        budget: MemoryBudget, maxRequestBytes: Int, logger: Logger
    ) {
        self.store = store
        self.policy = policy
        self.auth = auth
        self.rateLimiter = rateLimiter
        self.budget = budget
        self.maxRequestBytes = maxRequestBytes
        self.logger = logger
    }

    public var stats: Counters { counters.withLock { $0 } }

    /// From now on every export is refused as unavailable (retryable); requests already
    /// accepted finish. Called when graceful shutdown begins.
    public func beginDraining() { draining.store(true, ordering: .relaxed) }

    /// Checks the bearer token for the ingest role.
    public func authorize(_ authorization: String?) throws(Refusal) -> Principal {
        do {
            return try auth.authenticate(authorization, requiring: [.ingest])
        } catch {
            switch error {
            case .unauthenticated(let m): throw count(.unauthenticated(m))
            case .forbidden(let m): throw count(.forbidden(m))
            }
        }
    }

    /// Reserves `bytes` of the shared memory budget; release it with `budget.release`.
    public func reserve(_ bytes: Int) throws(Refusal) {
        guard budget.tryReserve(bytes) else {
            throw count(.overloaded("the collector is holding too many large requests; retry later", retryAfter: 1))
        }
    }

    /// Decodes and stores one `ExportTraceServiceRequest` (protobuf wire format).
    public func ingest(_ protobuf: [UInt8], principal: Principal) async throws(Refusal) -> Accepted {
        if draining.load(ordering: .relaxed) {
            throw count(.unavailable("the collector is shutting down; retry later", retryAfter: 1))
        }
        let batch: IngestBatch
        do {
            batch = try policy.decoder.decode(protobuf, tenant: principal.ingestTenant)
        } catch {
            switch error.kind {
            case .malformed: throw count(.invalid(error.description))
            case .tooManySpans: throw count(.tooLarge(error.description))
            }
        }
        if let rateLimiter, !batch.spans.isEmpty {
            let tenant = principal.ingestTenant ?? ResourceFacts.defaultTenant
            if let wait = rateLimiter.take(batch.spans.count, tenant: tenant) {
                throw count(.rateLimited("tenant \(tenant) is over its ingest rate limit; retry in \(wait)s", retryAfter: wait))
            }
        }
        if !batch.spans.isEmpty {
            do {
                try await store.append(batch)
            } catch let error as StorageError {
                if error.isOverload { throw count(.overloaded("ingest queue is full; retry later", retryAfter: 1)) }
                if error.isShuttingDown {
                    throw count(.unavailable("the collector is shutting down; retry later", retryAfter: 1))
                }
                logger.error("storing spans failed", metadata: ["error": "\(error.message)"])
                throw count(.unavailable("storage is unavailable; retry later", retryAfter: 5))
            } catch {
                throw count(.unavailable("storage is unavailable; retry later", retryAfter: 5))
            }
        }
        counters.withLock { c in
            c.acceptedSpans += batch.spans.count
            c.rejectedSpans += batch.rejectedSpans
            c.truncatedValues += batch.truncatedValues
            c.droppedAttributes += batch.droppedAttributes
        }
        return Accepted(storedSpans: batch.spans.count, rejectedSpans: batch.rejectedSpans, message: batch.rejectionMessage)
    }

    /// Counts a refusal by kind (never by content) and returns it.
    public func count(_ refusal: Refusal) -> Refusal {
        let kind =
            switch refusal {
            case .invalid: "invalid"
            case .tooLarge: "too_large"
            case .unauthenticated: "unauthenticated"
            case .forbidden: "forbidden"
            case .rateLimited: "rate_limited"
            case .overloaded: "overloaded"
            case .unavailable: "unavailable"
            }
        counters.withLock { $0.refusedRequests[kind, default: 0] += 1 }
        return refusal
    }
}
