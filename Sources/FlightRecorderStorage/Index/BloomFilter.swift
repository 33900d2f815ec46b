/// A blocked Bloom filter over 64-bit key hashes: each key sets `probes` bits within one
/// 64-byte line, so a probe touches one cache line (or one 64-byte read of a filter kept on
/// disk, `AttributeFilterFile`). The high 32 bits of the hash pick the line; the bit
/// positions are 9-bit fields of a second mix of the hash, independent of each other. At 20
/// bits per key and 7 probes (the trace and run filters) about 1 probe in 3,000 for an absent
/// key answers "maybe" (measured: 0.035%). The indexer asks every sealed segment's filter
/// about each new trace and run, so the false-positive rate, times the number of segments, is
/// how often it reads a sealed index for nothing.
///
/// Hand-written: none of the packages this project may use has one, and it is small.
struct BloomFilter: Sendable {
    private(set) var words: [UInt64]
    let probes: Int

    static let lineBytes = 64

    init(expectedKeys: Int, bitsPerKey: Int = 20, probes: Int = 7) {
        let lines = max(1, (expectedKeys * bitsPerKey + 511) / 512)
        words = [UInt64](repeating: 0, count: lines * 8)
        self.probes = probes
    }

    init?(serialized: [UInt8], probes: Int = 7) {
        guard !serialized.isEmpty, serialized.count % Self.lineBytes == 0 else { return nil }
        words = serialized.withUnsafeBytes { b in
            (0..<(serialized.count / 8)).map {
                UInt64(littleEndian: b.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self))
            }
        }
        self.probes = probes
    }

    var lines: Int { words.count / 8 }

    var serialized: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(words.count * 8)
        for w in words { withUnsafeBytes(of: w.littleEndian) { out.append(contentsOf: $0) } }
        return out
    }

    /// The line `hash` lives in, of `lines`.
    static func line(_ hash: UInt64, lines: Int) -> Int { Probe(hash).line(of: lines) }

    /// The 512-bit positions `hash` sets within its line, one per probe.
    static func positions(_ hash: UInt64, probes: Int, _ body: (Int) -> Bool) -> Bool {
        var bits = Probe(hash).bits
        for _ in 0..<probes {
            guard body(Int(bits & 511)) else { return false }
            bits >>= 9
        }
        return true
    }

    /// Whether the 64-byte `line` (as stored: little-endian words) has every bit of `hash`.
    static func line(_ line: UnsafeRawBufferPointer, holds hash: UInt64, probes: Int) -> Bool {
        positions(hash, probes: probes) { bit in
            UInt64(littleEndian: line.loadUnaligned(fromByteOffset: (bit >> 6) * 8, as: UInt64.self))
                & (1 << UInt64(bit & 63)) != 0
        }
    }

    mutating func insert(_ hash: UInt64) {
        let line = Self.line(hash, lines: lines) * 8
        _ = Self.positions(hash, probes: probes) { bit in
            words[line + (bit >> 6)] |= 1 << UInt64(bit & 63)
            return true
        }
    }

    func mayContain(_ hash: UInt64) -> Bool { mayContain(Probe(hash)) }

    /// What a key's probes need, computed once when many filters are asked about one key
    /// (the indexer asks every sealed segment's filter about each new trace and run): the
    /// high 32 bits of the hash pick the line, a second mix gives the 9-bit positions.
    struct Probe {
        let high: UInt64
        let bits: UInt64

        init(_ hash: UInt64) {
            high = hash >> 32
            bits = IndexKey.mix(hash ^ 0x9E37_79B9_7F4A_7C15)
        }

        func line(of lines: Int) -> Int { Int(high % UInt64(lines)) }
    }

    func mayContain(_ probe: Probe) -> Bool {
        let line = probe.line(of: lines) * 8
        return words.withUnsafeBufferPointer { w in
            var bits = probe.bits
            for _ in 0..<probes {
                let bit = Int(bits & 511)
                if w[line + (bit >> 6)] & (1 << UInt64(bit & 63)) == 0 { return false }
                bits >>= 9
            }
            return true
        }
    }
}

/// The keys a segment's in-memory filter holds: trace IDs and run IDs. Hashes are FNV-1a over
/// a kind byte and the key's bytes, then mixed: stable across processes, since filters are
/// stored with the segment. Attribute values have a filter of their own, on disk
/// (`AttributeFilterFile`): in memory they would be most of the filters' memory.
enum IndexKey {
    /// An indexed attribute value, from the short hash its pages hold (`IndexSchema.shortHash`).
    static func attribute(_ shortHash: UInt32) -> UInt64 { mix(UInt64(shortHash) | 0x0300_0000_0000_0000) }

    static func trace(_ bytes: [UInt8]) -> UInt64 { hash(1, bytes, nil) }
    /// Runs by ID alone: a lookup by ID may span tenants.
    static func run(_ run: String) -> UInt64 { hash(2, Array(run.utf8), nil) }

    static func hash(_ kind: UInt8, _ bytes: [UInt8], _ tenant: String?) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        h = (h ^ UInt64(kind)) &* 0x100_0000_01B3
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        if let tenant {
            h = (h ^ 0xFF) &* 0x100_0000_01B3
            for b in tenant.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        }
        return mix(h)
    }

    static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
