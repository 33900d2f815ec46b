public import Crypto
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
        var words = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &words) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        (w0, w1, w2, w3) = words
    }

    init(digest: SHA256.Digest) {
        var words = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &words) { raw in digest.withUnsafeBytes { raw.copyMemory(from: $0) } }
        (w0, w1, w2, w3) = words
    }

    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try Swift.withUnsafeBytes(of: (w0, w1, w2, w3)) { try body($0) }
    }

    public init?(base64: some StringProtocol) {
        guard let data = Data(base64Encoded: String(base64)) else { return nil }
        self.init(bytes: data)
    }

    public var base64: String { Data(bytes).base64EncodedString() }
    public var hex: String { bytes.map { String(format: "%02x", $0) }.joined() }
    public var description: String { hex }

    /// RFC 9162's hash of an empty tree: SHA-256 of nothing.
    public static let empty = TreeHash(digest: SHA256.hash(data: [UInt8]()))

    /// `SHA-256(0x00 ‖ data)`.
    public static func leaf(_ data: UnsafeRawBufferPointer) -> TreeHash {
        var h = SHA256()
        Swift.withUnsafeBytes(of: UInt8(0)) { h.update(bufferPointer: $0) }
        h.update(bufferPointer: data)
        return TreeHash(digest: h.finalize())
    }

    public static func leaf(_ data: some Collection<UInt8>) -> TreeHash {
        Array(data).withUnsafeBytes { leaf($0) }
    }

    /// `SHA-256(0x01 ‖ left ‖ right)`.
    public static func node(_ left: TreeHash, _ right: TreeHash) -> TreeHash {
        var h = SHA256()
        Swift.withUnsafeBytes(of: UInt8(1)) { h.update(bufferPointer: $0) }
        left.withUnsafeBytes { h.update(bufferPointer: $0) }
        right.withUnsafeBytes { h.update(bufferPointer: $0) }
        return TreeHash(digest: h.finalize())
    }
}
