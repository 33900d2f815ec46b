import Testing

@testable import FlightRecorderStorage

@Suite struct BlockCacheTests {
    @Test func keepsTheMostRecentlyUsedWithinItsBytes() {
        let cache = BlockCache(capacityBytes: 1_000)
        func key(_ n: Int) -> BlockCache.Key { .init(segment: 1, offset: n) }
        cache.put(key(1), [UInt8](repeating: 1, count: 200))
        cache.put(key(2), [UInt8](repeating: 2, count: 200))
        cache.put(key(3), [UInt8](repeating: 3, count: 200))
        cache.put(key(4), [UInt8](repeating: 4, count: 200))
        #expect(cache.get(key(1))?.first == 1)  // 1 is now the most recent
        cache.put(key(5), [UInt8](repeating: 5, count: 250))  // 1,050 bytes: the oldest (2) goes
        #expect(cache.get(key(2)) == nil)
        #expect(cache.get(key(1))?.count == 200 && cache.get(key(3))?.first == 3 && cache.get(key(5))?.first == 5)
        // A block too large for a quarter of the cache is not kept.
        cache.put(key(6), [UInt8](repeating: 6, count: 300))
        #expect(cache.get(key(6)) == nil && cache.get(key(4))?.first == 4)
        // Same offset in another segment is another block.
        #expect(cache.get(.init(segment: 2, offset: 1)) == nil)
    }
}
