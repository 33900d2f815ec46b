import FlightRecorderOTLP
import FlightRecorderTesting
import Foundation
import Testing

@testable import FlightRecorderStorage

#if canImport(Glibc)
import Glibc
#endif

@Suite struct AttributeFilterFileTests {
    /// Every value written answers "maybe"; absent values mostly answer "no", which is what
    /// spares a lookup the other segments' pages.
    @Test func valuesWrittenAreFoundAndMostAbsentOnesAreNot() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var rng = SplitMix(seed: 11)
        let present = (0..<50_000).map { _ in Int64(bitPattern: rng.next()) }
        let path = dir.path + "/segment-000000000001.attrfilter"
        try AttributeFilterFile.write(sortedShortHashes: present.map(IndexSchema.shortHash).sorted(), to: path)
        let filter = try #require(AttributeFilterFile(path: path))
        let inMemory = try #require(AttributeFilterFile(path: path, keepInMemoryUpTo: 1 << 20))
        #expect(filter.bytesInMemory == 0 && inMemory.bytesInMemory == SegmentFile.fileSize(path: path))
        #expect(present.allSatisfy { filter.mayContain($0) && inMemory.mayContain($0) })
        let absent = 100_000
        var maybe = 0
        for _ in 0..<absent {
            let h = Int64(bitPattern: rng.next())
            #expect(filter.mayContain(h) == inMemory.mayContain(h))
            if filter.mayContain(h) { maybe += 1 }
        }
        // Measured 5.8% at 6 bits per value and 4 probes.
        #expect(Double(maybe) / Double(absent) < 0.09)
        #expect(SegmentFile.fileSize(path: path) < present.count * AttributeFilterFile.bitsPerKey / 8 + 128)
        #expect(access(path + ".tmp", F_OK) != 0)
    }

    /// Values as the index hashes them: external IDs that differ in their last characters.
    @Test func similarValuesStillSpreadOut() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let present = (0..<5_000).map { IndexedAttribute.hash(key: "operation.id", value: "op-\($0)") }
        let path = dir.path + "/f.attrfilter"
        try AttributeFilterFile.write(sortedShortHashes: present.map(IndexSchema.shortHash).sorted(), to: path)
        let filter = try #require(AttributeFilterFile(path: path))
        let maybe = (5_000..<55_000).filter {
            filter.mayContain(IndexedAttribute.hash(key: "operation.id", value: "op-\($0)"))
        }
        #expect(Double(maybe.count) / 50_000 < 0.09)
    }

    /// A filter that is damaged anywhere, cut short or missing is not used: a flipped bit
    /// could otherwise hide a value.
    @Test func aDamagedTruncatedOrMissingFilterIsRefused() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.path + "/f.attrfilter"
        try AttributeFilterFile.write(sortedShortHashes: (0..<1_000).map { UInt32($0) * 7_919 }, to: path)
        let good = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(AttributeFilterFile(path: path) != nil)
        for offset in [3, 9, 26, 30, AttributeFilterFile.headerSize + 5, good.count - 1] {
            var bad = good
            bad[offset] ^= 0x10
            try bad.write(to: URL(fileURLWithPath: path))
            #expect(AttributeFilterFile(path: path) == nil, "flipped byte at \(offset)")
        }
        try good.prefix(good.count - 64).write(to: URL(fileURLWithPath: path))
        #expect(AttributeFilterFile(path: path) == nil)
        unlink(path)
        #expect(AttributeFilterFile(path: path) == nil)
    }
}
