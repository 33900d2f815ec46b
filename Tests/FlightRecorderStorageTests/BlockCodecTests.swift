import FlightRecorderEvidence
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

    /// A salted block carries its spans' salts before its payload: keyed runs and salts held
    /// as they are, read back as written; a flipped byte among them fails the checksum.
    @Test(arguments: BlockCodec.Codec.allCases) func saltedBlocksCarryTheirSalts(codec: BlockCodec.Codec) throws {
        let explicit = SpanSalts.random(count: 5).all()
        let salts = SpanSalts(runs: [.keyed(key: SpanSalts.randomKey(), count: 12), .explicit(explicit)])
        #expect(salts.count == 17 && Set(salts.all()).count == 17 && !salts.all().contains(.none))
        var f: [UInt8] = []
        raw.withUnsafeBytes { BlockCodec.encode($0, spanCount: 17, codec: codec, salts: salts, into: &f) }
        let h = try #require(f.withUnsafeBytes { BlockCodec.header($0) })
        #expect(h.salted && h.frameLength == f.count && h.spanCount == 17)
        let decoded = try BlockCodec.decodeSalted(frame: f)
        #expect(decoded.raw == raw && decoded.salts == salts && decoded.salts?.all() == salts.all())
        #expect(try BlockCodec.decodeSalted(frame: frame(codec)).salts == nil)
        // The same key derives the same salts; another key others.
        guard case .keyed(let key, _) = salts.runs[0] else { return }
        var again: [LeafSalt] = []
        SpanSalts.derive(key: key, count: 12, into: &again)
        #expect(again == Array(salts.all()[0..<12]))
        #expect(Set(SpanSalts.random(count: 12).all()).isDisjoint(with: again))
        for position in [BlockCodec.headerSize + 2, BlockCodec.headerSize + 40, BlockCodec.headerSize + 60] {
            var damaged = f
            damaged[position] ^= 0x10
            #expect(throws: StorageError.self) { try BlockCodec.decodeSalted(frame: damaged) }
        }
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
