import FlightRecorderCore
import Foundation
import Testing

@Suite struct TimestampTests {
    /// RFC 3339 in UTC with all nine digits of the nanoseconds, appended after what the buffer
    /// held.
    @Test func rfc3339WithNanoseconds() {
        #expect(Timestamp.rfc3339(0) == "1970-01-01T00:00:00.000000000Z")
        #expect(Timestamp.rfc3339(1_764_000_000_123_456_789) == "2025-11-24T16:00:00.123456789Z")
        #expect(Timestamp.rfc3339(4_102_444_799_999_999_999) == "2099-12-31T23:59:59.999999999Z")
        var out = Array("t=".utf8)
        Timestamp.rfc3339(1_000_000_007, into: &out)
        #expect(String(decoding: out, as: UTF8.self) == "t=1970-01-01T00:00:01.000000007Z")
    }

    /// The date arithmetic agrees with the C library's `gmtime_r` across leap years, century
    /// rules and month ends: every day from 1970 to 2400 and random instants up to the largest
    /// OTLP timestamp.
    @Test func datesAgreeWithGmtime() {
        func expected(_ nanos: UInt64) -> String {
            var t = time_t(nanos / 1_000_000_000)
            var tm = tm()
            gmtime_r(&t, &tm)
            return String(
                format: "%04d-%02d-%02dT%02d:%02d:%02d.%09dZ", Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1,
                Int(tm.tm_mday), Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec), Int(nanos % 1_000_000_000))
        }
        var mismatches: [UInt64] = []
        for day in UInt64(0)..<157_000 {  // past 2399-12-31
            let nanos = (day * 86_400 + 86_399) * 1_000_000_000 + 5
            if Timestamp.rfc3339(nanos) != expected(nanos) { mismatches.append(nanos) }
        }
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<100_000 {
            let nanos = UInt64.random(in: 0...UInt64.max, using: &generator)
            if Timestamp.rfc3339(nanos) != expected(nanos) { mismatches.append(nanos) }
        }
        #expect(mismatches.isEmpty, "first: \(mismatches.prefix(3).map { "\($0): \(Timestamp.rfc3339($0))" })")
    }
}
