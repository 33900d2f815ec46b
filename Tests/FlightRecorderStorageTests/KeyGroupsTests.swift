import Testing

@testable import FlightRecorderStorage

@Suite struct KeyGroupsTests {
    /// Groups take up to 16 consecutive segments and hold every key of each; a segment with
    /// more keys than the open group has room for starts a new group, sized for it.
    @Test func groupsHoldEveryKeyOfTheirSegments() {
        var rng = SplitMix(seed: 11)
        var builder = KeyGroupBuilder()
        var published: [Int64: KeyGroup] = [:]
        var keysOf: [Int64: [UInt64]] = [:]
        for id in Int64(1)...40 {
            let count = id == 37 ? 200_000 : 2_000
            let keys = (0..<count).map { _ in IndexKey.mix(rng.next()) }
            keysOf[id] = keys
            let g = builder.add(segment: id, keys: keys)
            published[g.first] = g
        }
        let groups = published.values.sorted { $0.first < $1.first }
        #expect(groups.map { $0.first...$0.last } == [1...16, 17...32, 33...36, 37...40])
        for g in groups {
            for id in g.first...g.last { #expect(keysOf[id]!.allSatisfy { g.bloom.mayContain($0) }) }
        }
        // About 1 absent key in 200 answers "maybe" from a full group.
        var maybe = 0
        for _ in 0..<100_000 where groups[0].bloom.mayContain(IndexKey.mix(rng.next())) { maybe += 1 }
        #expect(maybe < 1_500)
    }

    /// A group maps onto the sealed segments of its range that no earlier group covers, and
    /// fits a snapshot only where those segments are there.
    @Test func groupsMapOntoSealedSegmentRanges() {
        let bloom = BloomFilter(expectedKeys: 1)
        func group(_ first: Int64, _ last: Int64) -> KeyGroup {
            KeyGroup(first: first, last: last, bloom: bloom, capacity: 1)
        }
        let entries = (Int64(1)...10).map { SegmentCatalog.Entry(id: $0, bloom: $0 == 10 ? nil : bloom) }
        let spans = IndexReader.spans(of: [group(1, 4), group(3, 6), group(5, 8), group(9, 12)], in: entries)
        #expect(spans.map(\.range) == [0..<4, 4..<6, 6..<8, 8..<9])
        #expect(spans.allSatisfy { $0.fits(entries) })
        #expect(!spans[3].fits(Array(entries.prefix(8))))
    }
}
