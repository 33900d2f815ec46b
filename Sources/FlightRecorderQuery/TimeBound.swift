public import Foundation

/// Parses `since`/`until` query values: Unix nanoseconds, an RFC 3339 timestamp, or a
/// duration before now such as `90s`, `15m`, `2h`, `7d`.
public enum TimeBound {
    public static func parse(_ text: String, now: Date = Date()) -> Int64? {
        if let n = Int64(text) { return n }
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let unit = text.last.flatMap({ units[$0] }), let n = Double(text.dropLast()), n >= 0 {
            return Int64((now.timeIntervalSince1970 - n * unit) * 1e9)
        }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = formatter.date(from: text) { return Int64(d.timeIntervalSince1970 * 1e9) }
        formatter.formatOptions = [.withInternetDateTime]
        if let d = formatter.date(from: text) { return Int64(d.timeIntervalSince1970 * 1e9) }
        return nil
    }
}
