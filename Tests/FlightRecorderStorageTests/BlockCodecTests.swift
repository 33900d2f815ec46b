import FlightRecorderStorage
import Testing

@Suite struct BlockCodecTests {
    let raw: [UInt8] = Array((0..<50_000).map { UInt8(truncatingIfNeeded: $0 % 251 ^ ($0 / 7)) })

    func frame(_ codec: BlockCodec.Codec) -> [UInt8] {
        var out: [UInt8] = []
        raw.withUnsafeBytes { BlockCodec.encode($0, spanCount: 17, codec: codec, into: &out) }
        return out
    }

    @Test(arguments: BlockCodec.Codec.allCases) func roundTripsAndCompresses(codec: BlockCodec.Codec) throws {
        let f = frame(codec)
        #expect(f.count < raw.count)
        let h = try #require(f.withUnsafeBytes { BlockCodec.header($0) })
        #expect(h.codec == codec && h.spanCount == 17 && h.rawLength == raw.count && h.frameLength == f.count)
        #expect(try f.withUnsafeBytes { try BlockCodec.decode(frame: $0) } == raw)
    }

    /// Blocks say their codec, so frames of both decode side by side (a segment written
    /// before and after a change of `storage.compression`).
    @Test func framesOfBothCodecsDecodeInOneStream() throws {
        let stream = frame(.lz4) + frame(.zstd)
        try stream.withUnsafeBytes { b in
            let first = try #require(BlockCodec.header(b))
            #expect(first.codec == .lz4)
            #expect(try BlockCodec.decode(frame: UnsafeRawBufferPointer(rebasing: b[0..<first.frameLength])) == raw)
            let rest = UnsafeRawBufferPointer(rebasing: b[first.frameLength...])
            #expect(try #require(BlockCodec.header(rest)).codec == .zstd)
            #expect(try BlockCodec.decode(frame: rest) == raw)
        }
    }

    @Test(arguments: BlockCodec.Codec.allCases) func everySingleFlippedByteIsDetected(codec: BlockCodec.Codec) {
        let f = frame(codec)
        // Flip one byte at a spread of positions, header and payload alike.
        for position in stride(from: 0, to: f.count, by: max(1, f.count / 97)) {
            var damaged = f
            damaged[position] ^= 0x40
            #expect(throws: StorageError.self) { try damaged.withUnsafeBytes { try BlockCodec.decode(frame: $0) } }
            #expect(damaged.withUnsafeBytes { BlockCodec.verify(frame: $0) } == nil)
        }
    }

    @Test(arguments: BlockCodec.Codec.allCases) func truncatedFrameIsRejected(codec: BlockCodec.Codec) {
        let f = frame(codec)
        let cut = Array(f.dropLast(5))
        #expect(throws: StorageError.self) { try cut.withUnsafeBytes { try BlockCodec.decode(frame: $0) } }
    }
}
