import CZlib

/// Inflates a gzip (RFC 1952) or zlib (RFC 1950, gRPC's `deflate`) body with a hard output
/// limit.
///
/// Hand-written over zlib rather than compress-nio or the gRPC transport's inflater: a request
/// must be refused when its stream is truncated or corrupt. compress-nio's
/// `decompress(with:maxSize:)` returns whatever it inflated from a truncated stream without an
/// error, and grpc-swift-nio-transport 2.9's inflater spins forever on one (the wedge of
/// issue 11), so neither may see outside bytes.
public enum Inflater {
    public enum Format: Sendable {
        /// RFC 1952; several members may follow each other.
        case gzip
        /// RFC 1950 (zlib wrapper), what gRPC calls `deflate`.
        case zlib

        var windowBits: Int32 { self == .gzip ? 15 + 16 : 15 }
    }

    /// Inflates every member in `input`; throws `.tooLarge` past `limit` output bytes and
    /// `.corrupt` for an empty, damaged or truncated stream.
    public static func inflate(
        _ input: some Collection<UInt8>, format: Format = .gzip, limit: Int
    ) throws(InflateError) -> [UInt8] {
        let result: Result<[UInt8], InflateError>? = input.withContiguousStorageIfAvailable {
            inflateBuffer($0, format: format, limit: limit)
        }
        return try (result ?? Array(input).withUnsafeBufferPointer { inflateBuffer($0, format: format, limit: limit) })
            .get()
    }

    private static func inflateBuffer(
        _ inBuf: UnsafeBufferPointer<UInt8>, format: Format, limit: Int
    ) -> Result<[UInt8], InflateError> {
        guard let base = inBuf.baseAddress, inBuf.count > 0 else { return .failure(.corrupt) }
        var stream = z_stream()
        guard inflateInit2_(&stream, format.windowBits, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            return .failure(.corrupt)
        }
        defer { inflateEnd(&stream) }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        var consumed = 0
        while consumed < inBuf.count {
            stream.next_in = UnsafeMutablePointer(mutating: base + consumed)
            stream.avail_in = UInt32(inBuf.count - consumed)
            var status: Int32 = Z_OK
            while status != Z_STREAM_END {
                let before = stream.avail_in
                status = chunk.withUnsafeMutableBufferPointer { out in
                    stream.next_out = out.baseAddress
                    stream.avail_out = UInt32(out.count)
                    return CZlib.inflate(&stream, Z_NO_FLUSH)
                }
                let produced = chunk.count - Int(stream.avail_out)
                if output.count + produced > limit { return .failure(.tooLarge) }
                output.append(contentsOf: chunk[0..<produced])
                switch status {
                case Z_OK, Z_STREAM_END:
                    // zlib always makes progress on Z_OK; a call that moved nothing would loop.
                    if status == Z_OK && produced == 0 && stream.avail_in == before { return .failure(.corrupt) }
                case Z_BUF_ERROR where stream.avail_in == 0: return .failure(.corrupt)  // truncated stream
                case Z_BUF_ERROR where produced > 0: continue
                default: return .failure(.corrupt)
                }
            }
            consumed = inBuf.count - Int(stream.avail_in)
            // Another gzip member may follow (RFC 1952 allows concatenation); zlib has one.
            guard consumed < inBuf.count else { break }
            if format == .zlib || inflateReset(&stream) != Z_OK { return .failure(.corrupt) }
        }
        return .success(output)
    }
}

/// Why a body did not inflate.
public struct InflateError: Error, Equatable, Sendable, CustomStringConvertible {
    private enum Code: Sendable { case tooLarge, corrupt }
    private let code: Code

    /// The output would pass the limit (a gzip bomb stops here).
    public static let tooLarge = InflateError(code: .tooLarge)
    /// The stream is empty, damaged or truncated.
    public static let corrupt = InflateError(code: .corrupt)

    public var description: String {
        code == .tooLarge ? "inflates beyond the limit" : "the stream is corrupt or truncated"
    }
}
