public import Logging
import Synchronization

/// Logs a repeated condition once per reason per interval, with how many times it happened
/// meanwhile, so a full disk refusing hundreds of requests a second writes one line every
/// `interval`, not one per request.
public final class LogLimiter: Sendable {
    private struct Entry {
        var lastLogged: ContinuousClock.Instant
        var suppressed: Int
    }

    public let interval: Duration
    private let entries = Mutex<[String: Entry]>([:])

    public init(interval: Duration = .seconds(10)) { self.interval = interval }

    /// Logs `message` unless `reason` was logged less than `interval` ago; the line that is
    /// logged says how many were suppressed since the last one (`suppressed`).
    public func log(
        _ logger: Logger, _ level: Logger.Level, reason: String, _ message: @autoclosure () -> Logger.Message,
        metadata: @autoclosure () -> Logger.Metadata = [:], file: String = #fileID, function: String = #function,
        line: UInt = #line
    ) {
        let now = ContinuousClock.now
        let suppressed: Int? = entries.withLock { entries in
            if var e = entries[reason], now - e.lastLogged < interval {
                e.suppressed += 1
                entries[reason] = e
                return nil
            }
            let count = entries[reason]?.suppressed ?? 0
            entries[reason] = Entry(lastLogged: now, suppressed: 0)
            return count
        }
        guard let suppressed else { return }
        var m = metadata()
        if suppressed > 0 { m["suppressed"] = "\(suppressed)" }
        logger.log(level: level, message(), metadata: m, file: file, function: function, line: line)
    }
}
