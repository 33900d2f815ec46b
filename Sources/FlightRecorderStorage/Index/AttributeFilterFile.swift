import CZlib

#if canImport(Glibc)
import Glibc
#endif

/// A sealed segment's Bloom filter of its indexed attribute values,
/// `segments/segment-N.attrfilter`, so that a lookup by external ID reads the attribute pages
/// of only the segments that may hold the value instead of every segment's. The query side
/// keeps as many in memory as fit its budget (`StoreConfiguration.attributeFilterMemoryBytes`)
/// and probes the rest with one 64-byte `pread` of the line the value hashes to
/// (`BloomFilter`): all of them in memory would grow with the store (about 0.5 MiB per 64 MiB
/// segment).
///
/// Its keys are the pages' 32-bit short hashes (`IndexSchema.shortHash`), so a filter can be
/// rebuilt from the sealed index alone. At 6 bits per value and 4 probes about 1 absent value
/// in 17 answers "maybe" (measured in `AttributeFilterFileTests`), and a "maybe" costs only
/// the page probe every segment used to get. The filter is derived from the index: a missing
/// or damaged one is rebuilt from the pages (`IndexReader`), and until then every value is a
/// "maybe": slower, never wrong. `open` checks the whole file's checksum, so a flipped bit
/// cannot hide a value.
///
/// Layout, little-endian: "FRAF0001", the line count (u32), the probe count (u32), the key
/// count (u64), the CRC-32 of the lines (u32), the CRC-32 of the 28 header bytes before it
/// (u32); then the lines, 64 bytes each.
final class AttributeFilterFile {
    static let bitsPerKey = 6
    static let probes = 4
    static let headerSize = 32
    private static let magic = Array("FRAF0001".utf8)

    private let fd: Int32
    private let lines: Int
    private let probes: Int
    /// The whole file, when it was kept in memory.
    private let bytes: [UInt8]?

    /// Opens and verifies the filter at `path`, keeping it in memory when it is at most
    /// `keepInMemoryUpTo` bytes; nil when it is missing, of another layout, or damaged.
    init?(path: String, keepInMemoryUpTo limit: Int = 0) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        let size = SegmentFile.fileSize(path: path)
        var bytes = [UInt8](repeating: 0, count: max(size, Self.headerSize))
        guard size > Self.headerSize,
            bytes.withUnsafeMutableBytes({ SegmentFile.preadFully(fd, $0, at: 0) }) == size,
            let (lines, probes) = Self.verified(bytes), size == Self.headerSize + lines * BloomFilter.lineBytes
        else {
            close(fd)
            return nil
        }
        self.fd = fd
        self.lines = lines
        self.probes = probes
        self.bytes = size <= limit ? bytes : nil
    }

    deinit { close(fd) }

    var bytesInMemory: Int { bytes?.count ?? 0 }

    /// False only when no value with this `IndexedAttribute.hash` is in the segment; true also
    /// when the line cannot be read.
    func mayContain(_ hash: Int64) -> Bool {
        let key = IndexKey.attribute(IndexSchema.shortHash(hash))
        let offset = Self.headerSize + BloomFilter.line(key, lines: lines) * BloomFilter.lineBytes
        if let bytes {
            return bytes.withUnsafeBytes { b in
                BloomFilter.line(
                    UnsafeRawBufferPointer(rebasing: b[offset..<offset + BloomFilter.lineBytes]), holds: key,
                    probes: probes)
            }
        }
        var line = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        return withUnsafeMutableBytes(of: &line) { b in
            guard SegmentFile.preadFully(fd, b, at: offset) == BloomFilter.lineBytes else { return true }
            return BloomFilter.line(UnsafeRawBufferPointer(b), holds: key, probes: probes)
        }
    }

    /// The filter of `shortHashes` (each once), and how many there are.
    static func filter(_ shortHashes: [UInt32]) -> BloomFilter {
        var bloom = BloomFilter(expectedKeys: shortHashes.count, bitsPerKey: bitsPerKey, probes: probes)
        for h in shortHashes { bloom.insert(IndexKey.attribute(h)) }
        return bloom
    }

    /// `filter` of the distinct hashes in `sorted` (ascending, repeats side by side), written
    /// to `path`.
    static func write(sortedShortHashes sorted: some Sequence<UInt32>, to path: String) throws(StorageError) {
        var distinct: [UInt32] = []
        for h in sorted where distinct.last != h { distinct.append(h) }
        try write(filter(distinct), keys: distinct.count, to: path)
    }

    /// Writes `bloom` to `path` durably: a temporary file, synced, renamed over `path`, and the
    /// directory synced.
    static func write(_ bloom: BloomFilter, keys: Int, to path: String) throws(StorageError) {
        let body = bloom.serialized
        var bytes = magic
        func append<T: FixedWidthInteger>(_ v: T) {
            withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
        }
        append(UInt32(bloom.lines))
        append(UInt32(bloom.probes))
        append(UInt64(keys))
        append(crc(body))
        append(crc(bytes))
        bytes += body
        try SegmentFile.replaceDurably(path, with: bytes)
    }

    private static func verified(_ bytes: [UInt8]) -> (lines: Int, probes: Int)? {
        bytes.withUnsafeBytes { b -> (Int, Int)? in
            func u32(_ at: Int) -> UInt32 { UInt32(littleEndian: b.loadUnaligned(fromByteOffset: at, as: UInt32.self)) }
            guard Array(b[0..<8]) == magic, crc(UnsafeRawBufferPointer(rebasing: b[0..<28])) == u32(28),
                crc(UnsafeRawBufferPointer(rebasing: b[headerSize...])) == u32(24)
            else { return nil }
            let lines = Int(u32(8))
            let probes = Int(u32(12))
            guard lines > 0, (1...8).contains(probes) else { return nil }
            return (lines, probes)
        }
    }

    private static func crc(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { crc($0) } }

    private static func crc(_ b: UnsafeRawBufferPointer) -> UInt32 {
        UInt32(
            truncatingIfNeeded: crc32(
                crc32(0, nil, 0), b.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt32(b.count)))
    }
}
