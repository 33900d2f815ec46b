import FlightRecorderCore
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
}
