import CLZ4
import CZlib
import CZstd
public import FlightRecorderEvidence

/// The on-disk frame of one block: a 20-byte header, then the compressed payload.
///
///     0  magic "FRB1" (LZ4 block) or "FRB2" (zstd frame); "FRS1", "FRS2" when salted
///     4  u32 body length           (little endian)
///     8  u32 raw length
///     12 u32 span count
///     16 u32 CRC-32 of bytes 4..<16 and the body
///     20 body: the compressed payload; when salted, its spans' leaf salts first
///        (`SpanSalts.encode`: the evidence log's salted leaves)
///
/// The payload, once decompressed, is one serialized OTLP `TracesData` message.
public enum BlockCodec {
    public static let headerSize = 20
    /// "FRB" and the codec's digit.
    static let magic: [UInt8] = Array("FRB".utf8)
    /// "FRS": the body starts with the spans' salts.
    static let saltedMagic = UInt8(ascii: "S")

    /// How a block's payload is compressed; every block says which in its magic, so a
    /// segment may mix them and a change of setting needs no migration.
    public enum Codec: UInt8, Sendable, CaseIterable {
        /// zstd level 1: about two thirds of LZ4's size on OTLP spans at a similar speed (default).
        case zstd = 0x32  // "2"
        /// LZ4: the fastest, the largest.
        case lz4 = 0x31  // "1"

        public var name: String { self == .zstd ? "zstd" : "lz4" }
        public init?(name: String) {
            guard let c = Self.allCases.first(where: { $0.name == name }) else { return nil }
            self = c
        }
    }
    /// Upper bound on a block's raw size; a larger header value means corruption.
    public static let maxRawLength = 256 << 20

    public struct Header: Equatable, Sendable {
        public var codec: Codec
        /// The body starts with the spans' salts.
        public var salted = false
        /// The body's length: the compressed payload, and the salts of a salted block.
        public var compressedLength: Int
        public var rawLength: Int
        public var spanCount: Int
        public var checksum: UInt32
        public var frameLength: Int { BlockCodec.headerSize + compressedLength }
    }

    /// Compresses `raw` and appends the framed block to `out`, with its spans' `salts` when
    /// given (they must be `spanCount` salts).
    public static func encode(
        _ raw: UnsafeRawBufferPointer, spanCount: Int, codec: Codec = .zstd, salts: SpanSalts? = nil,
        into out: inout [UInt8]
    ) {
        let bound = Self.bound(raw.count, codec)
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: headerSize))
        if let salts {
            precondition(salts.count == spanCount, "a salted block needs one salt per span")
            salts.encode(into: &out)
        }
        let tableEnd = out.count
        out.append(contentsOf: repeatElement(0, count: bound))
        let compressed = out.withUnsafeMutableBytes { dst -> Int in
            let into = dst.baseAddress! + tableEnd
            switch codec {
            case .lz4:
                return Int(
                    LZ4_compress_default(
                        raw.baseAddress?.assumingMemoryBound(to: CChar.self), into.assumingMemoryBound(to: CChar.self),
                        Int32(raw.count), Int32(bound)))
            case .zstd:
                let n = ZSTD_compress(into, bound, raw.baseAddress, raw.count, 1)
                return ZSTD_isError(n) != 0 ? 0 : n
            }
        }
        precondition(compressed > 0 || raw.isEmpty, "compression failed with a bound-sized buffer")
        out.removeLast(bound - compressed)
        out.withUnsafeMutableBytes { b in
            let h = b.baseAddress! + start
            for i in 0..<3 { h.storeBytes(of: magic[i], toByteOffset: i, as: UInt8.self) }
            if salts != nil { h.storeBytes(of: saltedMagic, toByteOffset: 2, as: UInt8.self) }
            h.storeBytes(of: codec.rawValue, toByteOffset: 3, as: UInt8.self)
            h.storeBytes(
                of: UInt32(tableEnd - start - headerSize + compressed).littleEndian, toByteOffset: 4, as: UInt32.self)
            h.storeBytes(of: UInt32(raw.count).littleEndian, toByteOffset: 8, as: UInt32.self)
            h.storeBytes(of: UInt32(spanCount).littleEndian, toByteOffset: 12, as: UInt32.self)
            let crc = checksum(
                UnsafeRawBufferPointer(rebasing: b[(start + 4)..<(start + 16)]),
                UnsafeRawBufferPointer(rebasing: b[(start + headerSize)...]))
            h.storeBytes(of: crc.littleEndian, toByteOffset: 16, as: UInt32.self)
        }
    }

    static func bound(_ count: Int, _ codec: Codec) -> Int {
        switch codec {
        case .lz4: Int(LZ4_compressBound(Int32(max(count, 1))))
        case .zstd: ZSTD_compressBound(max(count, 1))
        }
    }

    /// Whether the four bytes at `at` are a frame's magic (salted or not, a known codec): the
    /// one test both reading a header and searching for the next block after damage use.
    static func isMagic(_ b: UnsafeRawBufferPointer, at i: Int) -> Bool {
        b.count - i >= 4 && b[i] == magic[0] && b[i + 1] == magic[1]
            && (b[i + 2] == magic[2] || b[i + 2] == saltedMagic) && Codec(rawValue: b[i + 3]) != nil
    }

    /// Parses a header; nil if the magic or the lengths are impossible.
    public static func header(_ b: UnsafeRawBufferPointer) -> Header? {
        guard b.count >= headerSize, isMagic(b, at: 0), let codec = Codec(rawValue: b[3]) else { return nil }
        let salted = b[2] == saltedMagic
        let c = Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
        let r = Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
        let n = Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
        let crc = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
        // A salted body holds at most a 16-byte salt (and a tag and count) per span besides.
        let table = salted ? 4 + n * (LeafSalt.size + 5 + SpanSalts.keySize) : 0
        guard r <= maxRawLength, n <= maxRawLength, c <= bound(r, codec) + table else { return nil }
        return Header(codec: codec, salted: salted, compressedLength: c, rawLength: r, spanCount: n, checksum: crc)
    }

    /// Verifies the checksum of a whole frame (header and body) and decompresses it.
    public static func decode(frame b: UnsafeRawBufferPointer) throws(StorageError) -> [UInt8] {
        try decodeSalted(frame: b).raw
    }

    public static func decodeSalted(frame: [UInt8]) throws(StorageError) -> (raw: [UInt8], salts: SpanSalts?) {
        let decoded = frame.withUnsafeBytes { b in
            Result { () throws(StorageError) in try decodeSalted(frame: b) }
        }
        return try decoded.get()
    }

    /// `decode(frame:)`, with the spans' salts (nil when the block is not salted).
    public static func decodeSalted(
        frame b: UnsafeRawBufferPointer
    ) throws(StorageError) -> (
        raw: [UInt8], salts: SpanSalts?
    ) {
        guard let h = header(b), b.count >= h.frameLength else {
            throw .corrupt("block header is damaged")
        }
        let body = UnsafeRawBufferPointer(rebasing: b[headerSize..<h.frameLength])
        guard checksum(UnsafeRawBufferPointer(rebasing: b[4..<16]), body) == h.checksum else {
            throw .corrupt("block checksum mismatch")
        }
        var salts: SpanSalts?
        var payload = body
        if h.salted {
            guard let (s, length) = SpanSalts.decode(body), s.count == h.spanCount else {
                throw .corrupt("block's salts are damaged")
            }
            salts = s
            payload = UnsafeRawBufferPointer(rebasing: body[length...])
        }
        func decompress(into dst: UnsafeMutableRawBufferPointer) -> Int {
            switch h.codec {
            case .lz4:
                return Int(
                    LZ4_decompress_safe(
                        payload.baseAddress?.assumingMemoryBound(to: CChar.self),
                        dst.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(payload.count), Int32(h.rawLength)))
            case .zstd:
                // A frame that claims another size, or is damaged, is refused like a bad LZ4 block.
                let n = ZSTD_decompress(dst.baseAddress, dst.count, payload.baseAddress, payload.count)
                return ZSTD_isError(n) != 0 ? -1 : n
            }
        }
        // Decompressed into uninitialized memory (zeroing it first was 0.5 % of an audit
        // export, `perf`); only the bytes the codec wrote count as the array's.
        var n = -1
        let raw = [UInt8](unsafeUninitializedCapacity: h.rawLength) { buffer, initialized in
            n = decompress(
                into: UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(buffer)[..<h.rawLength]))
            initialized = max(0, min(n, h.rawLength))
        }
        guard n == h.rawLength else { throw .corrupt("block does not decompress to its recorded size") }
        return (raw, salts)
    }

    /// Whether the frame's checksum matches, without decompressing.
    public static func verify(frame b: UnsafeRawBufferPointer) -> Header? {
        guard let h = header(b), b.count >= h.frameLength else { return nil }
        let payload = UnsafeRawBufferPointer(rebasing: b[headerSize..<h.frameLength])
        return checksum(UnsafeRawBufferPointer(rebasing: b[4..<16]), payload) == h.checksum ? h : nil
    }

    static func checksum(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> UInt32 {
        var crc = crc32(0, nil, 0)
        crc = crc32(crc, a.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt32(a.count))
        crc = crc32(crc, b.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt32(b.count))
        return UInt32(truncatingIfNeeded: crc)
    }
}
