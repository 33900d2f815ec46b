import Synchronization

/// Bounds the bytes held by requests being read and decoded, across all connections, so a
/// burst of large bodies is refused with a retryable error instead of growing memory.
public final class MemoryBudget: Sendable {
    public let limit: Int
    private let used = Mutex(0)

    public init(limit: Int) { self.limit = limit }

    /// Reserves `bytes`; false if that would pass the limit.
    public func tryReserve(_ bytes: Int) -> Bool {
        used.withLock { used in
            guard used + bytes <= limit else { return false }
            used += bytes
            return true
        }
    }

    public func release(_ bytes: Int) {
        used.withLock { $0 -= bytes }
    }

    public var inUse: Int { used.withLock { $0 } }
}
