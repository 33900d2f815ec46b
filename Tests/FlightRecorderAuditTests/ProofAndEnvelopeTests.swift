import Crypto
import FlightRecorderCore
import FlightRecorderEvidence
import Foundation
import Testing

@testable import FlightRecorderAudit

/// The pieces a bundle rests on, each against an independent computation.
@Suite struct ProofAndEnvelopeTests {
    static func leaves(_ n: Int) -> [TreeHash] { (0..<n).map { TreeHash.leaf(Array("leaf \($0)".utf8)) } }

    /// For every tree up to 40 leaves and many subsets, the multiproof gives the root, and
    /// changing any leaf, dropping any hash or proving another index does not.
    /// `proof.json` as written (`BundleProof.writeJSON`) is the `JSONEncoder` form without its
    /// indentation, and decodes back to the same proof.
    @Test func proofJSONIsTheEncodersForm() throws {
        for consistency in [nil, ["a+b/c==", "d"]] as [[String]?] {
            let proof = BundleProof(
                treeSize: 1 << 40, root: "r/o+ot==", leafIndices: [0, 7, 1 << 33],
                hashes: Self.leaves(3).map(\.base64), consistency: consistency, olderSizes: [3, 9],
                olderNodes: ["0-4": "x/y", "4-8": "z", "10-11": "q"])
            let e = JSONEncoder()
            e.keyEncodingStrategy = .convertToSnakeCase
            e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            var w = JSONWriter()
            proof.writeJSON(to: &w)
            #expect(w.bytes == Array(try e.encode(proof)))
            #expect(try BundleJSON.decoder().decode(BundleProof.self, from: Data(w.bytes)) == proof)
        }
    }

    /// The compact reader takes what `writeJSON` writes, as `JSONDecoder` reads it, and hands
    /// every other form (indented, escaped, reordered, signed or out-of-range numbers, extra
    /// bytes) back to `JSONDecoder`, which decides.
    @Test func proofJSONReadsWithoutTheDecoderAsWithIt() throws {
        var rng = SystemRandomNumberGenerator()
        for round in 0..<50 {
            let n = round == 0 ? 0 : Int.random(in: 1...300, using: &rng)
            var index: UInt64 = round == 1 ? 0 : UInt64.random(in: 0...1_000, using: &rng)
            let indices = (0..<n).map { _ in
                defer { index += UInt64.random(in: 1...(1 << 20), using: &rng) }
                return index
            }
            let proof = BundleProof(
                treeSize: round == 2 ? UInt64(Int64.max) : index + 1, root: Self.leaves(1)[0].base64,
                leafIndices: indices,
                hashes: Self.leaves(round % 7).map(\.base64), consistency: round % 3 == 0 ? nil : ["a+b/c==", "d"],
                olderSizes: round % 4 == 0 ? [] : [3, 9],
                olderNodes: round % 5 == 0 ? [:] : ["0-4": "x/y", "4-8": "z", "10-\(round)": "q"])
            var w = JSONWriter()
            proof.writeJSON(to: &w)
            let decoded = try BundleJSON.decoder().decode(BundleProof.self, from: Data(w.bytes))
            #expect(decoded == proof)
            #expect(w.bytes.withUnsafeBytes { BundleProof.readCompact($0) } == decoded)
            #expect(BundleProof.read(Data(w.bytes)) == decoded)
            // The indented form: not the compact reader's, read all the same.
            let indented = try BundleJSON.encoder().encode(proof)
            #expect(indented.withUnsafeBytes { BundleProof.readCompact($0) } == nil)
            #expect(BundleProof.read(indented) == proof)
        }
        var w = JSONWriter()
        BundleProof(
            treeSize: 10, root: "r", leafIndices: [1, 20], hashes: ["h"], consistency: nil, olderSizes: [4],
            olderNodes: ["0-4": "n"]
        ).writeJSON(to: &w)
        let text = String(decoding: w.bytes, as: UTF8.self)
        for changed in [
            text.replacingOccurrences(of: "[1,20]", with: "[1,020]"),  // a leading zero
            text.replacingOccurrences(of: "[1,20]", with: "[1,-20]"),
            text.replacingOccurrences(of: "[1,20]", with: "[1,2e1]"),
            text.replacingOccurrences(of: "[1,20]", with: "[1,18446744073709551616]"),  // 2^64
            text.replacingOccurrences(of: "[1,20]", with: "[1,20,]"),
            text.replacingOccurrences(of: "\"h\"", with: "\"\\u0068\""),  // an escape
            text.replacingOccurrences(of: "\"0-4\"", with: "\"0_4\""),
            text.replacingOccurrences(of: "\"root\":\"r\",", with: ""),
            text + " ",
            "{\"hashes\":" + text.dropFirst(),
        ] {
            #expect(Array(changed.utf8).withUnsafeBytes { BundleProof.readCompact($0) } == nil, "\(changed)")
            let decoder = try? BundleJSON.decoder().decode(BundleProof.self, from: Data(changed.utf8))
            #expect(BundleProof.read(Data(changed.utf8)) == decoder, "\(changed)")
        }
    }

    @Test func multiproofsGiveTheRootForEverySubset() throws {
        var rng = SystemRandomNumberGenerator()
        for size in 1...40 {
            let leaves = Self.leaves(size)
            let tree = LeafList(leaves)
            let root = try MerkleTree.hash(tree, 0, UInt64(size))
            for _ in 0..<12 {
                let picked = (0..<UInt64(size)).filter { _ in Bool.random(using: &rng) }
                let proof = try Multiproof.prove(indices: picked, size: UInt64(size), tree)
                let hashes = picked.map { leaves[Int($0)] }
                #expect(Multiproof.root(indices: picked, leaves: hashes, size: UInt64(size), proof: proof) == root)
                if let first = picked.first {
                    var changed = hashes
                    changed[0] = TreeHash.leaf([0xFF])
                    #expect(Multiproof.root(indices: picked, leaves: changed, size: UInt64(size), proof: proof) != root)
                    let fewer = Array(picked.dropFirst())
                    #expect(
                        Multiproof.root(
                            indices: fewer, leaves: Array(hashes.dropFirst()), size: UInt64(size), proof: proof)
                            != root)
                    if first + 1 < size, !picked.contains(first + 1) {
                        var moved = picked
                        moved[0] = first + 1
                        #expect(
                            Multiproof.root(indices: moved, leaves: hashes, size: UInt64(size), proof: proof) != root)
                    }
                }
                if !proof.isEmpty {
                    #expect(
                        Multiproof.root(indices: picked, leaves: hashes, size: UInt64(size), proof: proof.dropLast())
                            == nil)
                }
            }
        }
    }

    /// One leaf's multiproof holds exactly the hashes of its RFC 9162 audit path.
    @Test func oneLeafsMultiproofIsItsAuditPath() throws {
        let leaves = Self.leaves(37)
        let tree = LeafList(leaves)
        for i in 0..<37 {
            let multi = try Multiproof.prove(indices: [UInt64(i)], size: 37, tree)
            let path = try MerkleTree.inclusionProof(index: UInt64(i), size: 37, tree)
            #expect(Set(multi) == Set(path) && multi.count == path.count)
        }
    }

    /// Every leaf's audit path taken from a multiproof is the RFC 9162 inclusion proof.
    @Test func auditPathsFromAMultiproofAreTheRFCProofs() throws {
        for size in [1, 2, 3, 7, 8, 13, 37] {
            let leaves = Self.leaves(size)
            let tree = LeafList(leaves)
            let picked = (0..<UInt64(size)).filter { $0 % 3 != 1 }
            let proof = try Multiproof.prove(indices: picked, size: UInt64(size), tree)
            let hashes = picked.map { leaves[Int($0)] }
            let root = try MerkleTree.hash(tree, 0, UInt64(size))
            for (k, index) in picked.enumerated() {
                let path = try #require(
                    Multiproof.auditPath(of: k, indices: picked, leaves: hashes, size: UInt64(size), proof: proof))
                #expect(path == (try MerkleTree.inclusionProof(index: index, size: UInt64(size), tree)))
                #expect(
                    MerkleTree.verifyInclusion(
                        leaf: hashes[k], index: index, size: UInt64(size), proof: path, root: root))
            }
        }
    }

    /// Consistency proofs rebuilt from hashes keyed by range are the RFC's proofs.
    @Test func consistencyRangesGiveTheRFCProof() throws {
        let tree = LeafList(Self.leaves(50))
        for old in 1...50 {
            let ranges = MerkleTree.consistencyRanges(old: UInt64(old), size: 50)
            let rebuilt = try ranges.map { try MerkleTree.hash(tree, $0.start, $0.end) }
            #expect(rebuilt == (try MerkleTree.consistencyProof(old: UInt64(old), size: 50, tree)))
            let oldRoot = try MerkleTree.hash(tree, 0, UInt64(old))
            let root = try MerkleTree.hash(tree, 0, 50)
            #expect(
                MerkleTree.verifyConsistency(old: UInt64(old), oldRoot: oldRoot, size: 50, root: root, proof: rebuilt))
        }
    }

    /// DSSE's pre-authentication encoding, as the specification's example spells it, and an
    /// envelope that verifies only under its own key and payload.
    @Test func dsseEnvelopes() throws {
        #expect(
            String(
                decoding: DSSEEnvelope.pae(type: "http://example.com/HelloWorld", body: Array("hello world".utf8)),
                as: UTF8.self)
                == "DSSEv1 29 http://example.com/HelloWorld 11 hello world")
        let signer = try NoteSigner.generate(name: "flightrec.test/dsse")
        let other = try NoteSigner.generate(name: "flightrec.test/dsse")
        let envelope = try DSSEEnvelope(signing: Array("{\"a\":1}".utf8), by: signer)
        #expect(try envelope.verifiedPayload(key: signer.verifier) == Array("{\"a\":1}".utf8))
        #expect(throws: EvidenceError.self) { try envelope.verifiedPayload(key: other.verifier) }
        var changed = envelope
        changed.payload = Data("{\"a\":2}".utf8).base64EncodedString()
        #expect(throws: EvidenceError.self) { try changed.verifiedPayload(key: signer.verifier) }
        var retyped = envelope
        retyped.payloadType = "text/plain"
        #expect(throws: EvidenceError.self) { try retyped.verifiedPayload(key: signer.verifier) }
    }

    /// ustar headers `tar` reads, and the reader's refusals.
    @Test func tarArchives() throws {
        var archive = Tar.header(name: "a.txt", size: 3, mtime: 1_700_000_000) + Array("abc".utf8)
        archive += [UInt8](repeating: 0, count: Tar.padding(3))
        archive += [UInt8](repeating: 0, count: 2 * Tar.block)
        let members = try archive.withUnsafeBytes { try Tar.members($0) }
        #expect(members.map(\.name) == ["a.txt"] && members[0].range == 512..<515)
        var badSum = archive
        badSum[0] ^= 1
        #expect(throws: Tar.FormatError.self) { try badSum.withUnsafeBytes { try Tar.members($0) } }
        var badPad = archive
        badPad[520] = 1
        #expect(throws: Tar.FormatError.self) { try badPad.withUnsafeBytes { try Tar.members($0) } }
        #expect(throws: Tar.FormatError.self) { try archive.dropLast(512).withUnsafeBytes { try Tar.members($0) } }
    }

    @Test func csvFields() {
        #expect(CSV.field("plain") == "plain")
        #expect(CSV.field("a,b") == "\"a,b\"")
        #expect(CSV.field("say \"hi\"\r\n") == "\"say \"\"hi\"\"\r\n\"")
        #expect(CSV.parse("a,\"b,\"\"c\"\"\r\nd\"\r\nx,y\r\n") == [["a", "b,\"c\"\r\nd"], ["x", "y"]])
        #expect(CSV.parse("a,\"b") == nil)
    }
}
