import COpenSSLCrypto
import Crypto
import FlightRecorderCore
import Foundation

/// A SHA-256 value of the evidence log's Merkle tree (RFC 9162, section 2.1.1): a leaf hash
/// `SHA-256(0x00 ‖ data)` or an interior node's `SHA-256(0x01 ‖ left ‖ right)`.
///
/// Plain data (four words), so a tree's frontier and tiles are copied and compared without
/// allocating.
public struct TreeHash: Hashable, Sendable, CustomStringConvertible {
    var w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    public static let size = 32

    /// The 32 bytes, in order.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == Self.size else { return nil }
        let array = Array(bytes)
        self = array.withUnsafeBytes { TreeHash(loading: $0) }
    }

    /// The first 32 bytes at `raw` (which must hold them). No generics, no copies: the writer
    /// reads every span's leaf this way.
    @inline(__always)
    public init(loading raw: UnsafeRawBufferPointer) {
        precondition(raw.count >= Self.size)
        w0 = raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
        w1 = raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        w2 = raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
        w3 = raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
    }

    private init(w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64) {
        (self.w0, self.w1, self.w2, self.w3) = (w0, w1, w2, w3)
    }

    init(digest: SHA256.Digest) {
        self = digest.withUnsafeBytes { TreeHash(loading: $0) }
    }

    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        var copy = self
        return try Swift.withUnsafeBytes(of: &copy) { try body($0) }
    }

    public init?(base64: some StringProtocol) {
        guard let data = Data(base64Encoded: String(base64)), data.base64EncodedString() == base64 else { return nil }
        self.init(bytes: data)
    }

    public var base64: String { Data(bytes).base64EncodedString() }
    public var hex: String { Hex.encode(bytes) }
    public var description: String { hex }

    /// RFC 9162's hash of an empty tree: SHA-256 of nothing.
    public static let empty = TreeHash(digest: SHA256.hash(data: [UInt8]()))

    /// `SHA-256(0x00 ‖ data)`.
    public static func leaf(_ data: UnsafeRawBufferPointer) -> TreeHash {
        var h = SHA256State(prefix: 0)
        h.update(data)
        return h.finalize()
    }

    public static func leaf(_ data: some Collection<UInt8>) -> TreeHash {
        Array(data).withUnsafeBytes { leaf($0) }
    }

    /// A salted leaf, `SHA-256(0x00 ‖ salt ‖ data)` (`LeafSalt`); `leaf(data)` when the salt
    /// is `.none`.
    public static func leaf(salt: LeafSalt, _ data: UnsafeRawBufferPointer) -> TreeHash {
        if salt.isNone { return leaf(data) }
        var h = SHA256State(prefix: 0)
        var salt = salt
        Swift.withUnsafeBytes(of: &salt) { h.update($0) }
        h.update(data)
        return h.finalize()
    }

    public static func leaf(salt: LeafSalt, _ data: some Collection<UInt8>) -> TreeHash {
        Array(data).withUnsafeBytes { leaf(salt: salt, $0) }
    }

    /// `SHA-256(0x01 ‖ left ‖ right)`.
    public static func node(_ left: TreeHash, _ right: TreeHash) -> TreeHash {
        var h = SHA256State(prefix: 1)
        var pair = (left, right)
        Swift.withUnsafeBytes(of: &pair) { h.update($0) }
        return h.finalize()
    }

    /// SHA-256 with its state on the stack, from OpenSSL's libcrypto (`COpenSSLCrypto`).
    ///
    /// Written here, not with swift-crypto's `SHA256`, because that allocates a context object
    /// for every hash, checks exclusive access to it, and copies and wipes it to finish: at
    /// one leaf and about one node a stored span, that wrapper cost ingest as much as the
    /// hashing itself (`perf`, Bench/README's fortieth session). Both run the CPU's SHA
    /// instructions where it has them; a unit test checks that they agree.
    struct SHA256State {
        private var context = SHA256_CTX()

        init(prefix: UInt8) {
            SHA256_Init(&context)
            var prefix = prefix
            SHA256_Update(&context, &prefix, 1)
        }

        mutating func update(_ bytes: UnsafeRawBufferPointer) {
            guard let base = bytes.baseAddress, bytes.count > 0 else { return }
            SHA256_Update(&context, base, bytes.count)
        }

        mutating func finalize() -> TreeHash {
            var out = TreeHash(w0: 0, w1: 0, w2: 0, w3: 0)
            Swift.withUnsafeMutableBytes(of: &out) {
                _ = SHA256_Final($0.baseAddress!.assumingMemoryBound(to: UInt8.self), &context)
            }
            return out
        }
    }
}
