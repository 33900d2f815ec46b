import Testing

@testable import FlightRecorderStorage

@Suite struct ActiveAttributesTests {
    /// One row per (value, trace), whether the value is carried by one trace or by thousands
    /// (past `commonAfter` a set does the checking).
    @Test func keepsOneRowPerValueAndTrace() {
        let a = ActiveAttributes()
        #expect(a.add(hash: 7, trace: 1))
        #expect(!a.add(hash: 7, trace: 1))
        #expect(a.add(hash: -7, trace: 1))
        for t in UInt32(1)...5_000 { a.add(hash: 42, trace: t) }
        for t in UInt32(1)...5_000 { #expect(!a.add(hash: 42, trace: t)) }
        a.add([(42, 5_001), (42, 17), (9, 3), (9, 3)])
        #expect(a.traces(7) == [1])
        #expect(Set(a.traces(42)) == Set((UInt32(1)...5_001).map { Int64($0) }) && a.traces(42).count == 5_001)
        #expect(a.traces(9) == [3] && a.traces(1234).isEmpty)
        #expect(a.count == 5_004)
        let short = a.shortEntries()
        #expect(short.count == 5_004)
        // Pages keep the high 32 bits of the hash: 7, 9 and 42 share them (zero).
        #expect(short.filter { $0.hash == IndexSchema.shortHash(42) }.count == 5_003)
        #expect(short.filter { $0.hash == IndexSchema.shortHash(-7) }.map(\.trace) == [1])
    }
}
