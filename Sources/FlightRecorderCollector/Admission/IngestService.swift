import FlightRecorderConfig
public import FlightRecorderIngest
import FlightRecorderOTLP
public import FlightRecorderStorage
public import GRPCCore
public import HTTPTypes
public import Logging
import Synchronization

/// The ingest path every OTLP listener shares (HTTP and gRPC, TCP and Unix socket):
/// authenticate, decode with the tenant stamp, redaction and limits, rate-limit per tenant,
/// and append to the store, which answers only once the spans are durable.
public final class IngestService: Sendable {

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
    public func authorize(_ authorization: String?) throws(IngestError) -> Principal {
        do {
            return try auth.authenticate(authorization, requiring: [.ingest])
        } catch {
            throw count(error.isUnauthenticated ? .unauthenticated(error.message) : .forbidden(error.message))
        }
    }

    /// Reserves `bytes` of the shared memory budget; release it with `budget.release`.
    public func reserve(_ bytes: Int) throws(IngestError) {
        guard budget.tryReserve(bytes) else {
            throw count(.overloaded("the collector is holding too many large requests; retry later", retryAfter: 1))
        }
    }

    /// Decodes and stores one `ExportTraceServiceRequest` (protobuf wire format).
    public func ingest(_ protobuf: [UInt8], principal: Principal) async throws(IngestError) -> Accepted {
        if draining.load(ordering: .relaxed) {
            throw count(.unavailable("the collector is shutting down; retry later", retryAfter: 1))
        }
        let batch: IngestBatch
        do {
            batch = try policy.decoder.decode(protobuf, tenant: principal.ingestTenant)
        } catch {
            throw count(error.isTooManySpans ? .tooLarge(error.description) : .invalid(error.description))
        }
        if let rateLimiter, !batch.spans.isEmpty {
            let tenant = principal.ingestTenant ?? ResourceFacts.defaultTenant
            if let wait = rateLimiter.take(batch.spans.count, tenant: tenant) {
                throw count(
                    .rateLimited("tenant \(tenant) is over its ingest rate limit; retry in \(wait)s", retryAfter: wait))
            }
        }
        if !batch.spans.isEmpty {
            do {
                try await store.append(batch)
            } catch let error as StorageError {
                if error.isOverload { throw count(.overloaded("ingest queue is full; retry later", retryAfter: 1)) }
                if error.isAtCapacity { throw count(.unavailable(error.message, retryAfter: 60)) }
                if error.isShuttingDown {
                    throw count(.unavailable("the collector is shutting down; retry later", retryAfter: 1))
                }
                // The writer logged the reason, once per interval (a full disk refuses every request).
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
        return Accepted(
            storedSpans: batch.spans.count, rejectedSpans: batch.rejectedSpans, message: batch.rejectionMessage)
    }

    /// Counts a refusal by kind (never by content) and returns it.
    public func count(_ refusal: IngestError) -> IngestError {
        counters.withLock { $0.refusedRequests[refusal.reason, default: 0] += 1 }
        return refusal
    }
}

/// Why a request was refused, with the answer each protocol gives it (OTLP spec).
public struct IngestError: Error, Sendable, CustomStringConvertible {
    private enum Code: String, Sendable {
        case invalid, tooLarge = "too_large", unauthenticated, forbidden
        case rateLimited = "rate_limited", overloaded, unavailable
    }

    private let code: Code
    public let message: String
    /// Seconds after which a retry can succeed; nil when retrying cannot help.
    public let retryAfterSeconds: Int?

    private init(_ code: Code, _ message: String, retryAfter: Int? = nil) {
        self.code = code
        self.message = message
        self.retryAfterSeconds = retryAfter
    }

    /// Malformed or invalid request: HTTP 400, gRPC INVALID_ARGUMENT.
    public static func invalid(_ m: String) -> IngestError { IngestError(.invalid, m) }
    /// Over a size or count limit: HTTP 413, gRPC INVALID_ARGUMENT (retrying cannot help).
    public static func tooLarge(_ m: String) -> IngestError { IngestError(.tooLarge, m) }
    /// HTTP 401, gRPC UNAUTHENTICATED.
    public static func unauthenticated(_ m: String) -> IngestError { IngestError(.unauthenticated, m) }
    /// HTTP 403, gRPC PERMISSION_DENIED.
    public static func forbidden(_ m: String) -> IngestError { IngestError(.forbidden, m) }
    /// The tenant's rate limit: HTTP 429, gRPC RESOURCE_EXHAUSTED; both with a retry delay.
    public static func rateLimited(_ m: String, retryAfter: Int) -> IngestError {
        IngestError(.rateLimited, m, retryAfter: retryAfter)
    }
    /// Queue or memory full: HTTP 503, gRPC RESOURCE_EXHAUSTED; both with a retry delay.
    public static func overloaded(_ m: String, retryAfter: Int) -> IngestError {
        IngestError(.overloaded, m, retryAfter: retryAfter)
    }
    /// Shutting down or storage failing: HTTP 503, gRPC UNAVAILABLE; both with a retry delay.
    public static func unavailable(_ m: String, retryAfter: Int) -> IngestError {
        IngestError(.unavailable, m, retryAfter: retryAfter)
    }

    public var description: String { message }
    /// The key of `refusedRequests` in the ingest counters.
    public var reason: String { code.rawValue }
    /// A 401 asks for a bearer token.
    public var isUnauthenticated: Bool { code == .unauthenticated }

    public var httpStatus: HTTPResponse.Status {
        switch code {
        case .invalid: .badRequest
        case .tooLarge: .contentTooLarge
        case .unauthenticated: .unauthorized
        case .forbidden: .forbidden
        case .rateLimited: .tooManyRequests
        case .overloaded, .unavailable: .serviceUnavailable
        }
    }

    public var grpcCode: RPCError.Code {
        switch code {
        case .invalid, .tooLarge: .invalidArgument
        case .unauthenticated: .unauthenticated
        case .forbidden: .permissionDenied
        case .rateLimited, .overloaded: .resourceExhausted
        case .unavailable: .unavailable
        }
    }
}
