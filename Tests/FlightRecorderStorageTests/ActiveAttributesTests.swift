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
        let before = a.count
        // Every one of several values: a common one (42) with rare ones.
        a.add([(100, 17), (100, 3), (100, 99_999), (200, 17), (200, 3)])
        #expect(Set(a.traces(withAll: [42, 100])) == [17, 3])
        #expect(Set(a.traces(withAll: [100, 42, 200])) == [17, 3])
        #expect(a.traces(withAll: [42, 9]) == [3] && a.traces(withAll: [42, 555]).isEmpty)
        #expect(a.traces(withAll: [42]).count == 5_001 && a.traces(withAll: []).isEmpty)
        a.add([(42, 9), (9, 9)])  // (42, 9) is there already
        #expect(Set(a.traces(withAll: [9, 42])) == [3, 9])
        #expect(a.count == before + 6)
    }
}
