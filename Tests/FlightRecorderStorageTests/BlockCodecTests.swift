import FlightRecorderStorage
import Testing

@Suite struct BlockCodecTests {
    let raw: [UInt8] = Array((0..<50_000).map { UInt8(truncatingIfNeeded: $0 % 251 ^ ($0 / 7)) })

    func frame() -> [UInt8] {
        var out: [UInt8] = []
        raw.withUnsafeBytes { BlockCodec.encode($0, spanCount: 17, into: &out) }
        return out
    }

    @Test func roundTripsAndCompresses() throws {
        let f = frame()
        #expect(f.count < raw.count)
        let h = try #require(f.withUnsafeBytes { BlockCodec.header($0) })
        #expect(h.spanCount == 17 && h.rawLength == raw.count && h.frameLength == f.count)
        #expect(try f.withUnsafeBytes { try BlockCodec.decode(frame: $0) } == raw)
    }

    @Test func everySingleFlippedByteIsDetected() {
        let f = frame()
        // Flip one byte at a spread of positions, header and payload alike.
        for position in stride(from: 0, to: f.count, by: max(1, f.count / 97)) {
            var damaged = f
            damaged[position] ^= 0x40
            #expect(throws: StorageError.self) { try damaged.withUnsafeBytes { try BlockCodec.decode(frame: $0) } }
            #expect(damaged.withUnsafeBytes { BlockCodec.verify(frame: $0) } == nil)
        }
    }

    @Test func truncatedFrameIsRejected() {
        let f = frame()
        let cut = Array(f.dropLast(5))
        #expect(throws: StorageError.self) { try cut.withUnsafeBytes { try BlockCodec.decode(frame: $0) } }
    }
}
