import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Walks a segment's blocks from an offset, verifying each checksum. Used at start-up for
/// the tail the index has not covered, and by `reindex` for every segment.
struct SegmentScanner {
    struct Block {
        var offset: Int
        var header: BlockCodec.Header
    }

    struct Result {
        var blocks: [Block] = []
        /// End of the last valid block: where appending may continue.
        var validEnd: Int
        /// Bytes after the last valid block that form no valid block: a torn tail.
        var tornBytes: Int = 0
        /// Damaged regions followed by valid blocks (corruption, not a crash): skipped, never truncated.
        var corruptRegions: [(offset: Int, length: Int)] = []
    }

    let path: String

    /// Scans from `start` to the end of the file, or to `end` (the durable length, for a
    /// segment the writer is still appending to).
    func scan(from start: Int, to end: Int? = nil) throws(StorageError) -> Result {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io("open \(path)") }
        defer { close(fd) }
        let size = min(try SegmentFile.fileSize(fd), end ?? .max)
        var result = Result(validEnd: max(start, SegmentFile.headerSize))
        var offset = result.validEnd
        var headerBuffer = [UInt8](repeating: 0, count: BlockCodec.headerSize)
        var frame: [UInt8] = []
        while offset < size {
            if let block = readValid(fd, at: offset, size: size, header: &headerBuffer, frame: &frame) {
                result.blocks.append(block)
                offset += block.header.frameLength
                result.validEnd = offset
                continue
            }
            // A damaged block. If any valid block follows, this is corruption: skip it.
            // Otherwise it is the torn tail of an interrupted append.
            guard let next = nextValid(fd, after: offset, size: size, header: &headerBuffer, frame: &frame) else {
                result.tornBytes = size - offset
                break
            }
            result.corruptRegions.append((offset, next - offset))
            offset = next
        }
        return result
    }

    private func readValid(
        _ fd: Int32, at offset: Int, size: Int, header: inout [UInt8], frame: inout [UInt8]
    ) -> Block? {
        guard size - offset >= BlockCodec.headerSize else { return nil }
        let got = header.withUnsafeMutableBytes { SegmentFile.preadFully(fd, $0, at: offset) }
        guard got == BlockCodec.headerSize,
            let h = header.withUnsafeBytes({ BlockCodec.header($0) }),
            offset + h.frameLength <= size
        else { return nil }
        if frame.count < h.frameLength { frame = [UInt8](repeating: 0, count: h.frameLength) }
        let n = frame.withUnsafeMutableBytes {
            SegmentFile.preadFully(fd, UnsafeMutableRawBufferPointer(rebasing: $0[0..<h.frameLength]), at: offset)
        }
        guard n == h.frameLength,
            frame.withUnsafeBytes({ BlockCodec.verify(frame: UnsafeRawBufferPointer(rebasing: $0[0..<h.frameLength])) })
                != nil
        else { return nil }
        return Block(offset: offset, header: h)
    }

    /// The offset of the next valid block after a damaged one, searching for the block magic
    /// (`BlockCodec.isMagic`).
    private func nextValid(
        _ fd: Int32, after offset: Int, size: Int, header: inout [UInt8], frame: inout [UInt8]
    ) -> Int? {
        let chunk = 1 << 20
        var pos = offset + 1
        var buffer = [UInt8](repeating: 0, count: chunk + 3)
        while pos < size - BlockCodec.headerSize {
            let n = buffer.withUnsafeMutableBytes { SegmentFile.preadFully(fd, $0, at: pos) }
            guard n >= 4 else { return nil }
            let found = buffer.withUnsafeBytes { b in
                (0..<(n - 3)).filter { BlockCodec.isMagic(UnsafeRawBufferPointer(rebasing: b[0..<n]), at: $0) }
            }
            for i in found where readValid(fd, at: pos + i, size: size, header: &header, frame: &frame) != nil {
                return pos + i
            }
            pos += n - 3
        }
        return nil
    }
}

/// Reads blocks back for queries. Thread-safe: it only uses `pread` on descriptors opened per
/// call, and its cache has its own lock.
public struct SegmentReader: Sendable {
    public let directory: String
    /// Recently read blocks, decompressed. A block never changes once written, so its
    /// segment and offset name its content for good.
    let cache: BlockCache?
    /// Where the blocks that fail to read are recorded (logged once each, counted).
    public let damage: DamageLog?

    public init(directory: String, cacheBytes: Int = 0, damage: DamageLog? = nil) {
        self.directory = directory
        cache = cacheBytes > 0 ? BlockCache(capacityBytes: cacheBytes) : nil
        self.damage = damage
    }

    /// Reads, verifies and decompresses the block at `offset` of segment `segment`, or
    /// answers from the cache.
    public func readBlock(segment: Int64, offset: Int, length: Int) throws(StorageError) -> [UInt8] {
        guard let cache else { return try readUncached(segment: segment, offset: offset, length: length) }
        let key = BlockCache.Key(segment: segment, offset: offset)
        if let hit = cache.get(key) { return hit }
        let raw = try readUncached(segment: segment, offset: offset, length: length)
        cache.put(key, raw)
        return raw
    }

    /// Drops `segment`'s blocks from the cache: an erasure rewrote it, so its offsets name
    /// other blocks now.
    func forget(segment: Int64) { cache?.remove(segment: segment) }

    /// The `length` bytes at `offset` of the file at `path`, as stored (no decoding).
    static func readFrame(path: String, offset: Int, length: Int) throws(StorageError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io("open \(path)") }
        defer { close(fd) }
        var frame = [UInt8](repeating: 0, count: length)
        let n = frame.withUnsafeMutableBytes { SegmentFile.preadFully(fd, $0, at: offset) }
        guard n == length else { throw .corrupt("\(path) ends before byte \(offset + length)") }
        return frame
    }

    func readUncached(segment: Int64, offset: Int, length: Int) throws(StorageError) -> [UInt8] {
        let path = SegmentFile.path(directory, segment)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io("open \(path)") }
        defer { close(fd) }
        var frame = [UInt8](repeating: 0, count: length)
        let n = frame.withUnsafeMutableBytes { SegmentFile.preadFully(fd, $0, at: offset) }
        guard n == length else {
            throw .corrupt("segment \(segment) is shorter than its index says (block at \(offset))")
        }
        let decoded = frame.withUnsafeBytes { b in Result { () throws(StorageError) in try BlockCodec.decode(frame: b) }
        }
        switch decoded {
        case .success(let raw): return raw
        case .failure(let error): throw .corrupt("segment \(segment), block at byte \(offset): \(error.message)")
        }
    }
}

/// A least-recently-used cache of decompressed blocks, bounded by their bytes. A query that
/// looks up a value and then reads the value's run, or a run view that asks for the graph and
/// then a path, reads the same blocks again; they are decompressed once.
final class BlockCache: @unchecked Sendable {
    struct Key: Hashable {
        var segment: Int64
        var offset: Int
    }

    private let lock = NSLock()
    private let capacityBytes: Int
    /// Guarded by `lock`.
    private var entries: [Key: (bytes: [UInt8], lastUse: UInt64)] = [:]
    private var bytes = 0
    private var clock: UInt64 = 0

    init(capacityBytes: Int) { self.capacityBytes = capacityBytes }

    func get(_ key: Key) -> [UInt8]? {
        lock.withLock {
            guard var e = entries[key] else { return nil }
            clock += 1
            e.lastUse = clock
            entries[key] = e
            return e.bytes
        }
    }

    func remove(segment: Int64) {
        lock.withLock {
            for key in entries.keys where key.segment == segment {
                bytes -= entries[key]!.bytes.count
                entries[key] = nil
            }
        }
    }

    func put(_ key: Key, _ value: [UInt8]) {
        guard value.count <= capacityBytes / 4 else { return }
        lock.withLock {
            clock += 1
            if let old = entries.updateValue((value, clock), forKey: key) { bytes -= old.bytes.count }
            bytes += value.count
            // Entries are whole blocks (a few hundred KiB), so there are few: a scan finds the oldest.
            while bytes > capacityBytes, let oldest = entries.min(by: { $0.value.lastUse < $1.value.lastUse }) {
                bytes -= oldest.value.bytes.count
                entries[oldest.key] = nil
            }
        }
    }
}
