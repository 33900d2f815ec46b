import Crypto
import Foundation

/// A span's leaf salt: the 16 random bytes `s` of its salted leaf `SHA-256(0x00 ‖ s ‖ m)`.
///
/// Salted, a leaf hash says nothing about its span to whoever lacks the salt: not even
/// whether a guessed span is it. The salt is stored with its span (in the span's block) and
/// goes with it when an erasure rewrites the block, so the erased span's leaf hash, which
/// the tree above it still needs, is left meaningless. The zero salt stands for none: spans
/// stored before salts existed keep their unsalted leaves `SHA-256(0x00 ‖ m)`.
public struct LeafSalt: Hashable, Sendable {
    var lo: UInt64, hi: UInt64

    public static let size = 16
    public static let none = LeafSalt(lo: 0, hi: 0)

    public var isNone: Bool { lo == 0 && hi == 0 }

    /// The first 16 bytes at `raw` (which must hold them).
    public init(loading raw: UnsafeRawBufferPointer) {
        precondition(raw.count >= Self.size)
        lo = raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
        hi = raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
    }

    init(lo: UInt64, hi: UInt64) { (self.lo, self.hi) = (lo, hi) }

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == Self.size else { return nil }
        self = Array(bytes).withUnsafeBytes { LeafSalt(loading: $0) }
    }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        var copy = self
        return try Swift.withUnsafeBytes(of: &copy) { try body($0) }
    }

    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }
}

/// The salts of a block's spans, as a block stores them: runs of spans whose salts derive
/// from one random 32-byte key (what ingest writes: one key per request, so a salt costs the
/// disk nothing per span), and runs of salts held as they are (what an erasure's rewrite
/// writes for the spans it keeps of a keyed run: the key would derive the erased spans'
/// salts too, so it goes).
///
/// A keyed run's salts are the ChaCha20 keystream under its key (RFC 8439, a zero nonce,
/// from block 1: the ciphertext ChaCha20-Poly1305 makes of zero bytes), 16 bytes a span in
/// order: a pseudorandom function of a secret key, derived for a whole request in one pass
/// (hashing a counter per span cost ingest 2.5 % of its rate, Bench/README).
public struct SpanSalts: Equatable, Sendable {
    public enum Run: Equatable, Sendable {
        case keyed(key: [UInt8], count: Int)
        case explicit([LeafSalt])

        var count: Int {
            switch self {
            case .keyed(_, let count): count
            case .explicit(let salts): salts.count
            }
        }
    }

    public var runs: [Run]

    public init(runs: [Run] = []) { self.runs = runs }

    public static let keySize = 32

    /// A fresh random key for `count` spans.
    public static func random(count: Int) -> SpanSalts {
        SpanSalts(runs: [.keyed(key: randomKey(), count: count)])
    }

    public static func randomKey() -> [UInt8] {
        SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
    }

    /// Salts held as they are.
    public init(explicit salts: [LeafSalt]) { runs = salts.isEmpty ? [] : [.explicit(salts)] }

    public var count: Int { runs.reduce(0) { $0 + $1.count } }

    /// Every span's salt, in order.
    public func all() -> [LeafSalt] {
        var out: [LeafSalt] = []
        out.reserveCapacity(count)
        for run in runs {
            switch run {
            case .keyed(let key, let count): Self.derive(key: key, count: count, into: &out)
            case .explicit(let salts): out.append(contentsOf: salts)
            }
        }
        return out
    }

    /// The salts of spans `0..<count` under `key`, appended to `out`.
    public static func derive(key: [UInt8], count: Int, into out: inout [LeafSalt]) {
        precondition(key.count == keySize)
        guard count > 0 else { return }
        let zeros = Data(count: count * LeafSalt.size)
        // Cannot fail: a 32-byte key and a 12-byte nonce are what ChaCha20-Poly1305 takes.
        let sealed = try! ChaChaPoly.seal(
            zeros, using: SymmetricKey(data: key), nonce: ChaChaPoly.Nonce(data: [UInt8](repeating: 0, count: 12)))
        out.reserveCapacity(out.count + count)
        sealed.ciphertext.withUnsafeBytes { stream in
            for i in 0..<count {
                var salt = LeafSalt(loading: UnsafeRawBufferPointer(rebasing: stream[(i * LeafSalt.size)...]))
                // The zero salt means none; a derived one is never it (odds of 2^-128 aside).
                if salt.isNone { salt.lo = 1 }
                out.append(salt)
            }
        }
    }

    /// The encoded table (the part of a salted block's frame before its payload):
    /// `u32 runs`, then per run a tag byte, `1` with the 32-byte key and `u32` span count, or
    /// `2` with `u32` count and that many 16-byte salts. Integers little endian.
    public func encode(into out: inout [UInt8]) {
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(truncatingIfNeeded: v).littleEndian) { out += $0 } }
        u32(runs.count)
        for run in runs {
            switch run {
            case .keyed(let key, let count):
                out.append(1)
                out += key
                u32(count)
            case .explicit(let salts):
                out.append(2)
                u32(salts.count)
                for s in salts { s.withUnsafeBytes { out += $0 } }
            }
        }
    }

    /// Reads a table `encode` wrote at the start of `b`: the salts and the bytes read; nil when
    /// it is malformed or longer than `b`.
    public static func decode(_ b: UnsafeRawBufferPointer) -> (salts: SpanSalts, length: Int)? {
        var at = 0
        func u32() -> Int? {
            guard at + 4 <= b.count else { return nil }
            defer { at += 4 }
            return Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
        }
        guard let n = u32(), n <= b.count else { return nil }
        var runs: [Run] = []
        for _ in 0..<n {
            guard at < b.count else { return nil }
            let tag = b[at]
            at += 1
            switch tag {
            case 1:
                guard at + keySize <= b.count else { return nil }
                let key = Array(UnsafeRawBufferPointer(rebasing: b[at..<at + keySize]))
                at += keySize
                guard let count = u32() else { return nil }
                runs.append(.keyed(key: key, count: count))
            case 2:
                guard let count = u32(), count <= (b.count - at) / LeafSalt.size else { return nil }
                var salts: [LeafSalt] = []
                salts.reserveCapacity(count)
                for _ in 0..<count {
                    salts.append(LeafSalt(loading: UnsafeRawBufferPointer(rebasing: b[at...])))
                    at += LeafSalt.size
                }
                runs.append(.explicit(salts))
            default: return nil
            }
        }
        return (SpanSalts(runs: runs), at)
    }
}
