public import Crypto
import Foundation

/// The Ed25519 key that signs the evidence log's checkpoints, under a key name (the log's
/// origin). Each checkpoint gets two signatures from it (C2SP signed-note): the log's
/// signature (type 0x01) and a timestamped cosignature (type 0x04, tlog-cosignature), which
/// signs the time of signing so a gap between checkpoints is itself evident.
///
/// Stored as the Go `note` package writes signer keys, `PRIVATE+KEY+<name>+<id>+<base64>`,
/// so the same file works with that ecosystem's tools.
public struct NoteSigner: Sendable {
    public let name: String
    let key: Curve25519.Signing.PrivateKey

    public init(name: String, key: Curve25519.Signing.PrivateKey) throws(EvidenceError) {
        guard NoteVerifier.isValidName(name) else {
            throw .malformed("key name \"\(name.prefix(64))\" is empty or has a space or a plus")
        }
        self.name = name
        self.key = key
    }

    /// A new key named `name`.
    public static func generate(name: String) throws(EvidenceError) -> NoteSigner {
        try NoteSigner(name: name, key: Curve25519.Signing.PrivateKey())
    }

    public var verifier: NoteVerifier { NoteVerifier(name: name, publicKey: key.publicKey) }

    /// `PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 ‖ seed)>`.
    public var encoded: String {
        "PRIVATE+KEY+\(name)+\(String(format: "%08x", verifier.keyID))+"
            + Data([1] + key.rawRepresentation).base64EncodedString()
    }

    public init(encoded: String) throws(EvidenceError) {
        // The base64 may hold a "+" itself: split off the first four fields only.
        let parts = encoded.trimmingCharacters(in: .whitespacesAndNewlines).split(
            separator: "+", maxSplits: 4, omittingEmptySubsequences: false)
        guard parts.count == 5, parts[0] == "PRIVATE", parts[1] == "KEY",
            let raw = Data(base64Encoded: String(parts[4])), raw.count == 33, raw.first == 1,
            let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw.dropFirst())
        else { throw .malformed("signing key: expected PRIVATE+KEY+<name>+<id>+<base64 Ed25519 key>") }
        try self.init(name: String(parts[2]), key: key)
        guard String(format: "%08x", verifier.keyID) == parts[3] else {
            throw .malformed("signing key: its key ID does not match its name and key")
        }
    }

    /// The Ed25519 note signature (type 0x01) of `text`.
    public func signature(of text: String) throws -> SignedNote.Signature {
        .init(name: name, keyID: verifier.keyID, bytes: Array(try key.signature(for: Array(text.utf8))))
    }

    /// Signs `checkpoint` at `time` (Unix seconds): the log signature, then the timestamped
    /// cosignature.
    public func sign(_ checkpoint: Checkpoint, time: UInt64) throws -> SignedNote {
        let text = checkpoint.text
        let cosigned = try key.signature(for: Array(NoteVerifier.cosignedMessage(text, time: time).utf8))
        let stamp = withUnsafeBytes(of: time.bigEndian) { Array($0) }
        return SignedNote(
            text: text,
            signatures: [
                try signature(of: text),
                .init(name: name, keyID: verifier.cosignatureKeyID, bytes: stamp + Array(cosigned)),
            ])
    }
}

/// The public half of a `NoteSigner`: checks a checkpoint's signatures offline.
///
/// Encoded as a C2SP verifier key (vkey), `<name>+<hex key ID>+<base64(0x01 ‖ public key)>`,
/// which `flightrec audit key` prints.
public struct NoteVerifier: Sendable, Equatable {
    public let name: String
    public let publicKey: Curve25519.Signing.PublicKey

    public init(name: String, publicKey: Curve25519.Signing.PublicKey) {
        self.name = name
        self.publicKey = publicKey
    }

    public static func == (a: NoteVerifier, b: NoteVerifier) -> Bool {
        a.name == b.name && a.publicKey.rawRepresentation == b.publicKey.rawRepresentation
    }

    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && !name.contains(where: { $0 == "+" || $0.isWhitespace })
    }

    /// SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4], big-endian.
    static func keyID(name: String, type: UInt8, publicKey: Curve25519.Signing.PublicKey) -> UInt32 {
        let digest = SHA256.hash(data: Array(name.utf8) + [0x0A, type] + Array(publicKey.rawRepresentation))
        return digest.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }

    public var keyID: UInt32 { Self.keyID(name: name, type: 1, publicKey: publicKey) }
    public var cosignatureKeyID: UInt32 { Self.keyID(name: name, type: 4, publicKey: publicKey) }

    /// The verifier key.
    public var encoded: String {
        "\(name)+\(String(format: "%08x", keyID))+" + Data([1] + publicKey.rawRepresentation).base64EncodedString()
    }

    public init(encoded: String) throws(EvidenceError) {
        let parts = encoded.trimmingCharacters(in: .whitespacesAndNewlines).split(
            separator: "+", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, Self.isValidName(String(parts[0])),
            let raw = Data(base64Encoded: String(parts[2])), raw.count == 33, raw.first == 1,
            let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw.dropFirst())
        else { throw .malformed("verifier key: expected <name>+<id>+<base64 Ed25519 public key>") }
        self.init(name: String(parts[0]), publicKey: key)
        guard String(format: "%08x", keyID) == parts[1] else {
            throw .malformed("verifier key: its key ID does not match its name and key")
        }
    }

    static func cosignedMessage(_ text: String, time: UInt64) -> String { "cosignature/v1\ntime \(time)\n" + text }

    /// What this key signed in `note`.
    public struct Verified: Sendable, Equatable {
        /// The log signature verified.
        public var signed: Bool
        /// The time of the timestamped cosignature, when there is one and it verified.
        public var time: UInt64?
    }

    /// Checks this key's signatures on `note`. Signatures from other keys are ignored (C2SP);
    /// a signature of this key that does not verify is an error.
    public func verify(_ note: SignedNote) throws(EvidenceError) -> Verified {
        var result = Verified(signed: false, time: nil)
        for s in note.signatures where s.name == name {
            if s.keyID == keyID {
                guard publicKey.isValidSignature(s.bytes, for: Array(note.text.utf8)) else {
                    throw .malformed("checkpoint: the signature of \(name) does not verify")
                }
                result.signed = true
            } else if s.keyID == cosignatureKeyID {
                guard s.bytes.count == 72 else {
                    throw .malformed("checkpoint: a timestamped signature is not 72 bytes")
                }
                let time = s.bytes.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                guard time < 1 << 63,
                    publicKey.isValidSignature(
                        s.bytes.dropFirst(8), for: Array(Self.cosignedMessage(note.text, time: time).utf8))
                else { throw .malformed("checkpoint: the timestamped signature of \(name) does not verify") }
                result.time = time
            }
        }
        guard result.signed else { throw .malformed("checkpoint: not signed by \(encoded)") }
        return result
    }
}
