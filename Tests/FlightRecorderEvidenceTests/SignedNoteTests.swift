import FlightRecorderEvidence
import Foundation
import Testing

/// Checkpoints and their signatures, in the C2SP formats other tools read.
@Suite struct SignedNoteTests {
    // The reference implementation's example (golang.org/x/mod/sumdb/note): key, text and note.
    static let signerKey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
    static let verifierKey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    static let text =
        "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
    static let note =
        text
        + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"

    @Test func matchesTheReferenceImplementationByteForByte() throws {
        let signer = try NoteSigner(encoded: Self.signerKey)
        #expect(signer.encoded == Self.signerKey)
        #expect(signer.verifier.encoded == Self.verifierKey)
        #expect(try NoteVerifier(encoded: Self.verifierKey) == signer.verifier)
        let note = SignedNote(text: Self.text, signatures: [try signer.signature(of: Self.text)])
        #expect(note.serialized == Self.note)
        let parsed = try SignedNote(parsing: Self.note)
        #expect(parsed == note)
        #expect(try signer.verifier.verify(parsed).signed)
    }

    @Test func checkpointsCarryASignedTime() throws {
        let signer = try NoteSigner.generate(name: "flightrec.test/log")
        let root = TreeHash.leaf(Array("x".utf8))
        let checkpoint = Checkpoint(origin: signer.name, size: 12_345, root: root)
        #expect(checkpoint.text == "flightrec.test/log\n12345\n\(root.base64)\n")
        let note = try signer.sign(checkpoint, time: 1_780_000_000)
        let read = try SignedNote(parsing: note.serialized)
        #expect(try Checkpoint(text: read.text) == checkpoint)
        let verified = try signer.verifier.verify(read)
        #expect(verified.signed && verified.time == 1_780_000_000)
        #expect(try NoteSigner(encoded: signer.encoded).verifier == signer.verifier)
    }

    @Test func tamperedOrForeignCheckpointsAreRefused() throws {
        let signer = try NoteSigner.generate(name: "flightrec.test/log")
        let other = try NoteSigner.generate(name: "flightrec.test/log")
        let checkpoint = Checkpoint(origin: signer.name, size: 7, root: .empty)
        let good = try signer.sign(checkpoint, time: 100).serialized
        // A changed size, root or time.
        for bad in [
            good.replacingOccurrences(of: "\n7\n", with: "\n8\n"),
            try SignedNote(
                text: Checkpoint(origin: signer.name, size: 7, root: .leaf([1])).text,
                signatures: SignedNote(parsing: good).signatures
            ).serialized,
        ] {
            #expect(throws: EvidenceError.self) { try signer.verifier.verify(SignedNote(parsing: bad)) }
        }
        var restamped = try SignedNote(parsing: good)
        restamped.signatures[1].bytes[7] ^= 1
        #expect(throws: EvidenceError.self) { try signer.verifier.verify(restamped) }
        // Signed by another key of the same name: its signatures are not ours, so unsigned.
        #expect(throws: EvidenceError.self) {
            try signer.verifier.verify(other.sign(checkpoint, time: 100))
        }
        // Malformed notes and keys.
        for text in ["", "a\n", good.replacingOccurrences(of: "— ", with: "- "), good + "x"] {
            #expect(throws: EvidenceError.self) { try SignedNote(parsing: text) }
        }
        #expect(throws: EvidenceError.self) { try Checkpoint(text: "origin\n007\n\(TreeHash.empty.base64)\n") }
        #expect(throws: EvidenceError.self) {
            try NoteVerifier(encoded: "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
        }
        #expect(throws: EvidenceError.self) {
            try NoteSigner(encoded: Self.signerKey.replacingOccurrences(of: "Peter", with: "Pieter"))
        }
    }
}
