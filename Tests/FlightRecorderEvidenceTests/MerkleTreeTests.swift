import Crypto
import FlightRecorderEvidence
import Foundation
import Testing

/// RFC 9162's tree hash and proofs against a direct computation of the RFC's definitions.
@Suite struct MerkleTreeTests {
    /// MTH(D[n]) exactly as section 2.1.1 defines it, recursively over the leaf hashes.
    static func mth(_ leaves: ArraySlice<TreeHash>) -> TreeHash {
        if leaves.isEmpty { return .empty }
        if leaves.count == 1 { return leaves.first! }
        var k = 1
        while k * 2 < leaves.count { k *= 2 }
        let start = leaves.startIndex
        return .node(mth(leaves[start..<start + k]), mth(leaves[(start + k)...]))
    }

    static let leaves = (0..<70).map { i in TreeHash.leaf(Array("leaf \(i)".utf8)) }

    @Test func knownValues() {
        // SHA-256 of nothing, and of the single byte 0x00 (the hash of an empty leaf).
        #expect(TreeHash.empty.hex == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(TreeHash.leaf([UInt8]()).hex == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    }

    /// The leaves and nodes (hashed with OpenSSL's SHA-256) against swift-crypto's SHA-256
    /// of the same bytes: every length across the 64-byte block and padding boundaries,
    /// salted and not.
    @Test func hashesAgreeWithSwiftCrypto() throws {
        var rng = SystemRandomNumberGenerator()
        func reference(_ parts: [UInt8]...) -> TreeHash {
            TreeHash(bytes: Array(SHA256.hash(data: parts.flatMap { $0 })))!
        }
        for length in 0...300 {
            let data = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            #expect(TreeHash.leaf(data) == reference([0], data))
            let saltBytes = (0..<LeafSalt.size).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let salt = try #require(LeafSalt(bytes: saltBytes))
            #expect(TreeHash.leaf(salt: salt, data) == reference([0], saltBytes, data))
            #expect(TreeHash.leaf(salt: .none, data) == reference([0], data))
        }
        for i in 0..<64 {
            let (l, r) = (Self.leaves[i], Self.leaves[i + 1])
            #expect(TreeHash.node(l, r) == reference([1], l.bytes, r.bytes))
        }
    }

    @Test func rootsMatchTheDefinitionForEverySize() throws {
        var frontier = TreeFrontier()
        for n in 0...Self.leaves.count {
            let expected = Self.mth(Self.leaves[0..<n])
            #expect(try MerkleTree.hash(LeafList(Self.leaves), 0, UInt64(n)) == expected)
            #expect(frontier.root == expected)
            #expect(try TreeFrontier(size: UInt64(n), LeafList(Self.leaves)) == frontier)
            if n < Self.leaves.count { frontier.append(Self.leaves[n]) }
        }
    }

    @Test func inclusionProofsVerifyAndNothingElseDoes() throws {
        let nodes = LeafList(Self.leaves)
        for n in 1...40 {
            let root = Self.mth(Self.leaves[0..<n])
            for m in 0..<n {
                let proof = try MerkleTree.inclusionProof(index: UInt64(m), size: UInt64(n), nodes)
                #expect(
                    MerkleTree.verifyInclusion(
                        leaf: Self.leaves[m], index: UInt64(m), size: UInt64(n), proof: proof, root: root))
                // Another leaf, another index, or a changed proof: all refused. (The size is bound to
                // the root by the signed checkpoint, not by the path alone.)
                #expect(
                    !MerkleTree.verifyInclusion(
                        leaf: Self.leaves[(m + 1) % 70], index: UInt64(m), size: UInt64(n), proof: proof, root: root))
                if n > 1 {
                    #expect(
                        !MerkleTree.verifyInclusion(
                            leaf: Self.leaves[m], index: UInt64((m + 1) % n), size: UInt64(n), proof: proof,
                            root: root))
                }
                if !proof.isEmpty {
                    var bad = proof
                    bad[bad.count / 2] = Self.leaves[69]
                    #expect(
                        !MerkleTree.verifyInclusion(
                            leaf: Self.leaves[m], index: UInt64(m), size: UInt64(n), proof: bad, root: root))
                    #expect(
                        !MerkleTree.verifyInclusion(
                            leaf: Self.leaves[m], index: UInt64(m), size: UInt64(n), proof: proof.dropLast(),
                            root: root))
                }
            }
        }
    }

    @Test func consistencyProofsVerifyAndNothingElseDoes() throws {
        let nodes = LeafList(Self.leaves)
        for n in 1...40 {
            let root = Self.mth(Self.leaves[0..<n])
            for m in 1...n {
                let oldRoot = Self.mth(Self.leaves[0..<m])
                let proof = try MerkleTree.consistencyProof(old: UInt64(m), size: UInt64(n), nodes)
                #expect(
                    MerkleTree.verifyConsistency(
                        old: UInt64(m), oldRoot: oldRoot, size: UInt64(n), root: root, proof: proof))
                // A different old tree (one leaf changed) is not consistent with the new one.
                var other = Array(Self.leaves[0..<m])
                other[m / 2] = Self.leaves[69]
                #expect(
                    !MerkleTree.verifyConsistency(
                        old: UInt64(m), oldRoot: Self.mth(other[...]), size: UInt64(n), root: root, proof: proof))
                if m < n {
                    #expect(
                        !MerkleTree.verifyConsistency(
                            old: UInt64(m), oldRoot: oldRoot, size: UInt64(n), root: Self.leaves[68], proof: proof))
                    #expect(
                        !MerkleTree.verifyConsistency(
                            old: UInt64(m), oldRoot: oldRoot, size: UInt64(n), root: root, proof: proof.dropLast()))
                }
            }
        }
    }
}
