#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// RFC 3339 UTC times with nanoseconds, as OTLP timestamps are: `2026-12-04T05:00:00.000000001Z`.
/// Written by hand with `gmtime_r` (a `DateFormatter` per call was the alternative; audit
/// bundles write one per decision).
public enum Timestamp {
    public static func rfc3339(_ nanos: UInt64) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(30)
        rfc3339(nanos, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// The same, appended to `out`.
    public static func rfc3339(_ nanos: UInt64, into out: inout [UInt8]) {
        var t = time_t(nanos / 1_000_000_000)
        var tm = tm()
        gmtime_r(&t, &tm)
        func digits(_ v: Int, _ width: Int) {
            var v = v
            let end = out.count + width
            out.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: width))
            for k in stride(from: end - 1, through: end - width, by: -1) {
                out[k] = UInt8(ascii: "0") + UInt8(v % 10)
                v /= 10
            }
        }
        digits(Int(tm.tm_year) + 1900, 4)
        out.append(UInt8(ascii: "-"))
        digits(Int(tm.tm_mon) + 1, 2)
        out.append(UInt8(ascii: "-"))
        digits(Int(tm.tm_mday), 2)
        out.append(UInt8(ascii: "T"))
        digits(Int(tm.tm_hour), 2)
        out.append(UInt8(ascii: ":"))
        digits(Int(tm.tm_min), 2)
        out.append(UInt8(ascii: ":"))
        digits(Int(tm.tm_sec), 2)
        out.append(UInt8(ascii: "."))
        digits(Int(nanos % 1_000_000_000), 9)
        out.append(UInt8(ascii: "Z"))
    }
}
