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
            digits(Int(tm.tm_year) + 1900, 4)
            mark("-")
            digits(Int(tm.tm_mon) + 1, 2)
            mark("-")
            digits(Int(tm.tm_mday), 2)
            mark("T")
            digits(Int(tm.tm_hour), 2)
            mark(":")
            digits(Int(tm.tm_min), 2)
            mark(":")
            digits(Int(tm.tm_sec), 2)
            mark(".")
            digits(Int(nanos % 1_000_000_000), 9)
            mark("Z")
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: b[..<at]))
        }
    }
}
