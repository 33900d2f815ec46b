import CLZ4
import CZlib

/// The on-disk frame of one block: a 20-byte header, then the LZ4-compressed payload.
///
///     0  magic "FRB1"
///     4  u32 compressed length     (little endian)
///     8  u32 raw length
///     12 u32 span count
///     16 u32 CRC-32 of bytes 4..<16 and the compressed payload
///
/// The payload, once decompressed, is one serialized OTLP `TracesData` message.
public enum BlockCodec {
    public static let headerSize = 20
    static let magic: [UInt8] = Array("FRB1".utf8)
    /// Upper bound on a block's raw size; a larger header value means corruption.
    public static let maxRawLength = 256 << 20

    public struct Header: Equatable, Sendable {
        public var compressedLength: Int
        public var rawLength: Int
        public var spanCount: Int
        public var checksum: UInt32
        public var frameLength: Int { BlockCodec.headerSize + compressedLength }
    }

    /// Compresses `raw` and appends the framed block to `out`.
    public static func encode(_ raw: UnsafeRawBufferPointer, spanCount: Int, into out: inout [UInt8]) {
        let bound = Int(LZ4_compressBound(Int32(raw.count)))
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: headerSize + bound))
        let compressed = out.withUnsafeMutableBytes { dst -> Int32 in
            LZ4_compress_default(
                raw.baseAddress?.assumingMemoryBound(to: CChar.self),
                (dst.baseAddress! + start + headerSize).assumingMemoryBound(to: CChar.self),
                Int32(raw.count), Int32(bound))
        }
        precondition(compressed > 0 || raw.isEmpty, "LZ4 compression failed with a bound-sized buffer")
        out.removeLast(bound - Int(compressed))
        out.withUnsafeMutableBytes { b in
            let h = b.baseAddress! + start
            for i in 0..<4 { h.storeBytes(of: magic[i], toByteOffset: i, as: UInt8.self) }
            h.storeBytes(of: UInt32(compressed).littleEndian, toByteOffset: 4, as: UInt32.self)
            h.storeBytes(of: UInt32(raw.count).littleEndian, toByteOffset: 8, as: UInt32.self)
            h.storeBytes(of: UInt32(spanCount).littleEndian, toByteOffset: 12, as: UInt32.self)
            let crc = checksum(
                UnsafeRawBufferPointer(rebasing: b[(start + 4)..<(start + 16)]),
                UnsafeRawBufferPointer(rebasing: b[(start + headerSize)...]))
            h.storeBytes(of: crc.littleEndian, toByteOffset: 16, as: UInt32.self)
        }
    }

    /// Parses a header; nil if the magic or the lengths are impossible.
    public static func header(_ b: UnsafeRawBufferPointer) -> Header? {
        guard b.count >= headerSize, b[0] == magic[0], b[1] == magic[1], b[2] == magic[2], b[3] == magic[3] else {
            return nil
        }
        let c = Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
        let r = Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
        let n = Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
        let crc = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
        guard r <= maxRawLength, c <= Int(LZ4_compressBound(Int32(max(r, 1)))) else { return nil }
        return Header(compressedLength: c, rawLength: r, spanCount: n, checksum: crc)
    }

    /// Verifies the checksum of a whole frame (header and payload) and decompresses it.
    public static func decode(frame b: UnsafeRawBufferPointer) throws(StorageError) -> [UInt8] {
        guard let h = header(b), b.count >= h.frameLength else {
            throw .corrupt("block header is damaged")
        }
        let payload = UnsafeRawBufferPointer(rebasing: b[headerSize..<h.frameLength])
        guard checksum(UnsafeRawBufferPointer(rebasing: b[4..<16]), payload) == h.checksum else {
            throw .corrupt("block checksum mismatch")
        }
        var raw = [UInt8](repeating: 0, count: h.rawLength)
        let n = raw.withUnsafeMutableBytes { dst in
            LZ4_decompress_safe(
                payload.baseAddress?.assumingMemoryBound(to: CChar.self),
                dst.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(payload.count), Int32(h.rawLength))
        }
        guard n == h.rawLength else { throw .corrupt("block does not decompress to its recorded size") }
        return raw
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
