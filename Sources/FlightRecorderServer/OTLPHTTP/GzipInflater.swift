import CZlib

/// Inflates a gzip body with a hard output limit.
///
/// Hand-written over zlib rather than compress-nio because a request must be refused when its
/// gzip stream is truncated or corrupt: compress-nio's `decompress(with:maxSize:)` returns
/// whatever it inflated from a truncated stream without an error, which would turn a damaged
/// body into a silently accepted, empty export.
enum GzipInflater {
    enum Failure: Error, Equatable {
        case tooLarge
        case corrupt
    }

    /// Inflates every gzip member in `input`; throws `.tooLarge` past `limit` output bytes.
    static func inflate(_ input: [UInt8], limit: Int) throws(Failure) -> [UInt8] {
        var stream = z_stream()
        // 15 window bits + 16: expect a gzip header and trailer.
        guard inflateInit2_(&stream, 15 + 16, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw .corrupt
        }
        defer { inflateEnd(&stream) }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        var consumed = 0
        let result: Failure? = input.withUnsafeBufferPointer { inBuf -> Failure? in
            while consumed < inBuf.count {
                stream.next_in = UnsafeMutablePointer(mutating: inBuf.baseAddress! + consumed)
                stream.avail_in = UInt32(inBuf.count - consumed)
                var status: Int32 = Z_OK
                while status != Z_STREAM_END {
                    status = chunk.withUnsafeMutableBufferPointer { out in
                        stream.next_out = out.baseAddress
                        stream.avail_out = UInt32(out.count)
                        return CZlib.inflate(&stream, Z_NO_FLUSH)
                    }
                    let produced = chunk.count - Int(stream.avail_out)
                    if output.count + produced > limit { return .tooLarge }
                    output.append(contentsOf: chunk[0..<produced])
                    switch status {
                    case Z_OK, Z_STREAM_END: continue
                    case Z_BUF_ERROR where stream.avail_in == 0: return .corrupt  // truncated stream
                    case Z_BUF_ERROR: continue
                    default: return .corrupt
                    }
                }
                consumed = inBuf.count - Int(stream.avail_in)
                // Another gzip member may follow (RFC 1952 allows concatenation).
                if consumed < inBuf.count && inflateReset(&stream) != Z_OK { return .corrupt }
            }
            return nil
        }
        if let result { throw result }
        return output
    }
}
