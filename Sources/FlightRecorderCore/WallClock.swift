import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Where a component reads the time of day (Unix nanoseconds, as OTLP timestamps are).
/// Production passes `SystemWallClock`; tests pass a `ManualWallClock` and move it by hand.
public protocol WallClock: Sendable {
    /// Nanoseconds since 1970-01-01T00:00:00Z.
    func nowNanos() -> UInt64
}

/// `CLOCK_REALTIME`.
public struct SystemWallClock: WallClock {
    public init() {}

    public func nowNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

/// A wall clock that only moves when told to, for tests.
public final class ManualWallClock: WallClock {
    private let now: Mutex<UInt64>

    public init(nanos: UInt64 = 1_764_000_000_000_000_000) { now = Mutex(nanos) }

    public func nowNanos() -> UInt64 { now.withLock { $0 } }

    /// Moves the clock forward by `nanos`.
    public func advance(by nanos: UInt64) { now.withLock { $0 += nanos } }
}
