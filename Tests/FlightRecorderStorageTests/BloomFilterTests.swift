import Testing

@testable import FlightRecorderStorage

@Suite struct BloomFilterTests {
    /// Every key put in answers "maybe", and absent keys rarely do: the rate, times the
    /// number of sealed segments, is how often the indexer reads a sealed index for nothing.
    @Test func noFalseNegativesAndFewFalsePositives() throws {
        var rng = SplitMix(seed: 7)
        let present = (0..<20_000).map { _ in IndexKey.mix(rng.next()) }
        var bloom = BloomFilter(expectedKeys: present.count)
        for k in present { bloom.insert(k) }
        #expect(present.allSatisfy { bloom.mayContain($0) })
        let absent = 200_000
        var maybe = 0
        for _ in 0..<absent where bloom.mayContain(IndexKey.mix(rng.next())) { maybe += 1 }
        // Measured 0.035% at 20 bits per key; a filter whose probes are not independent of
        // each other (as one with 15% was) fails here.
        #expect(Double(maybe) / Double(absent) < 0.001)
        let restored = try #require(BloomFilter(serialized: bloom.serialized))
        #expect(present.allSatisfy { restored.mayContain($0) })
    }

    /// Keys as the index makes them, from trace IDs that differ in one byte.
    @Test func similarTraceIDsStillSpreadOut() {
        let keys = (0..<5_000).map { i -> UInt64 in
            var id = [UInt8](repeating: 0xAB, count: 16)
            id[15] = UInt8(i & 0xFF)
            id[14] = UInt8(i >> 8)
            return IndexKey.trace(id)
        }
        var bloom = BloomFilter(expectedKeys: keys.count)
        for k in keys { bloom.insert(k) }
        var maybe = 0
        for i in 5_000..<55_000 {
            var id = [UInt8](repeating: 0xAB, count: 16)
            id[15] = UInt8(i & 0xFF)
            id[14] = UInt8((i >> 8) & 0xFF)
            id[13] = UInt8(i >> 16)
            if bloom.mayContain(IndexKey.trace(id)) { maybe += 1 }
        }
        #expect(Double(maybe) / 50_000 < 0.001)
    }
}

/// A small deterministic generator for test keys.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return IndexKey.mix(state)
    }
}
