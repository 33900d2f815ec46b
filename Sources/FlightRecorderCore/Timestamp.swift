/// RFC 3339 UTC times with nanoseconds, as OTLP timestamps are: `2026-12-04T05:00:00.000000001Z`.
/// Written by hand (a `DateFormatter` per call was the alternative; audit bundles write one per
/// decision), the date from the day number by Howard Hinnant's `civil_from_days`: glibc's
/// `gmtime_r` took a process-wide lock for the time zone on every call, which the threads
/// deriving an audit bundle's decisions waited on (`perf`: `__tz_convert`,
/// `__lll_lock_wait_private`).
public enum Timestamp {
    public static func rfc3339(_ nanos: UInt64) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(30)
        rfc3339(nanos, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// The same, appended to `out`.
    public static func rfc3339(_ nanos: UInt64, into out: inout [UInt8]) {
        let seconds = nanos / 1_000_000_000
        let (year, month, day) = civil(days: Int64(seconds / 86_400))
        let time = Int(seconds % 86_400)
        // Made in a buffer on the stack and appended once: digit by digit into `out`, each
        // write checked its bounds and its uniqueness (1 % of an audit verification, `perf`).
        var text: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &text) { b in
            var at = 0
            func digits(_ v: Int, _ width: Int) {
                var v = v
                for k in stride(from: at + width - 1, through: at, by: -1) {
                    b[k] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: v % 10)
                    v /= 10
                }
                at += width
            }
            func mark(_ c: Unicode.Scalar) {
                b[at] = UInt8(ascii: c)
                at += 1
            }
            digits(year, 4)
            mark("-")
            digits(month, 2)
            mark("-")
            digits(day, 2)
            mark("T")
            digits(time / 3600, 2)
            mark(":")
            digits(time / 60 % 60, 2)
            mark(":")
            digits(time % 60, 2)
            mark(".")
            digits(Int(nanos % 1_000_000_000), 9)
            mark("Z")
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: b[..<at]))
        }
    }

    /// The proleptic Gregorian date of day `days` after 1970-01-01
    /// (https://howardhinnant.github.io/date_algorithms.html#civil_from_days).
    static func civil(days: Int64) -> (year: Int, month: Int, day: Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097  // 0 ... 146096
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365  // 0 ... 399
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)  // 0 ... 365, from March
        let shiftedMonth = (5 * dayOfYear + 2) / 153  // 0 ... 11, from March
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (Int(year), Int(month), Int(day))
    }
}
