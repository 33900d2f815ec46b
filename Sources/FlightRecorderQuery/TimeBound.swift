public import Foundation

/// Parses `since`/`until` query values: Unix nanoseconds, an RFC 3339 timestamp, or a
/// duration before now such as `90s`, `15m`, `2h`, `7d`.
public enum TimeBound {
    public static func parse(_ text: String, now: Date = Date()) -> Int64? {
        if let n = Int64(text) { return n }
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let unit = text.last.flatMap({ units[$0] }), let n = Double(text.dropLast()), n >= 0 {
            return nanos((now.timeIntervalSince1970 - n * unit) * 1e9)
        }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = formatter.date(from: text) { return nanos(d.timeIntervalSince1970 * 1e9) }
        formatter.formatOptions = [.withInternetDateTime]
        if let d = formatter.date(from: text) { return nanos(d.timeIntervalSince1970 * 1e9) }
        return nil
    }

    /// `value` as whole nanoseconds; nil when it is not finite or outside Int64 (a time after
    /// the year 2262, a duration of centuries): such a bound is refused, never a trap.
    static func nanos(_ value: Double) -> Int64? {
        guard value.isFinite, value > -9.2e18, value < 9.2e18 else { return nil }
        return Int64(value)
    }
}
