import Testing

@testable import FlightRecorderCore

@Suite struct ByteSearchTests {
    /// The byte search agrees with `String.contains` on ASCII and multi-byte text, at either
    /// end, for an empty needle and for a needle longer than the text.
    @Test func agreesWithContains() {
        let texts = ["", "w", "write", "low_write", "privileged_write", "read", "wri", "écrire write", "ab ab abc"]
        let needles = ["", "write", "w", "abc", " ab ", "é", "writes", "e w"]
        for t in texts {
            for n in needles {
                #expect(t.containsBytes(n) == t.contains(n), "\(t) / \(n)")
            }
        }
    }
}
