public import FlightRecorderConfig
import Foundation
import Synchronization

/// A token bucket per tenant, counted in spans. A request that does not fit is refused whole
/// with the seconds until it would fit, so the client's retry is well-timed rather than a
/// storm.
public final class TenantRateLimiter: Sendable {
    struct Bucket {
        var tokens: Double
        var updated: Double
    }

    public let limit: RateLimit
    private let buckets = Mutex<[String: Bucket]>([:])
    private let clock: @Sendable () -> Double

    /// `clock` returns seconds on a monotonic clock; tests pass their own.
    public init(limit: RateLimit, clock: (@Sendable () -> Double)? = nil) {
        self.limit = limit
        self.clock = clock ?? { ProcessInfo.processInfo.systemUptime }
    }

    /// Takes `spans` tokens from `tenant`'s bucket; nil on success, else seconds to wait (≥ 1).
    public func take(_ spans: Int, tenant: String) -> Int? {
        let now = clock()
        // A request larger than the burst could never pass; it waits for a full bucket instead.
        let cost = min(Double(spans), limit.burst)
        return buckets.withLock { all in
            var b = all[tenant] ?? Bucket(tokens: limit.burst, updated: now)
            b.tokens = min(limit.burst, b.tokens + (now - b.updated) * limit.spansPerSecond)
            b.updated = now
            defer { all[tenant] = b }
            if b.tokens >= cost {
                b.tokens -= cost
                return nil
            }
            return max(1, Int(((cost - b.tokens) / limit.spansPerSecond).rounded(.up)))
        }
    }
}
