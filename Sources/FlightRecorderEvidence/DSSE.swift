import Crypto
import Foundation

/// A DSSE envelope (Dead Simple Signing Envelope, secure-systems-lab/dsse v1.0): a payload, its
/// type, and Ed25519 signatures over the pre-authentication encoding
/// `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`.
///
/// Written here because no package this project may use implements DSSE; the envelope is four
/// JSON fields and the encoding one line, both from the specification.
public struct DSSEEnvelope: Codable, Sendable, Equatable {
    public struct Signature: Codable, Sendable, Equatable {
        /// The signer's verifier key (`NoteVerifier.encoded`): a hint, never trusted by itself.
        public var keyid: String
        /// Base64 of the Ed25519 signature of `PAE(payloadType, payload)`.
        public var sig: String
    }

    /// in-toto Statements use this type.
    public static let inTotoType = "application/vnd.in-toto+json"

    public var payloadType: String
    /// Base64 of the payload bytes.
    public var payload: String
    public var signatures: [Signature]

    public static func pae(type: String, body: [UInt8]) -> [UInt8] {
        Array("DSSEv1 \(type.utf8.count) \(type) \(body.count) ".utf8) + body
    }

    /// `body` signed by `signer` under `type`.
    public init(signing body: [UInt8], type: String = inTotoType, by signer: NoteSigner) throws {
        payloadType = type
        payload = Data(body).base64EncodedString()
        let sig = try signer.key.signature(for: Self.pae(type: type, body: body))
        signatures = [Signature(keyid: signer.verifier.encoded, sig: Data(sig).base64EncodedString())]
    }

    /// The payload, when `key` signed it; else what is wrong.
    public func verifiedPayload(key: NoteVerifier) throws(EvidenceError) -> [UInt8] {
        // Canonical base64 only: a decoder ignores the spare bits of the last character, so
        // two strings would otherwise carry one signature.
        guard let body = Data(base64Encoded: payload), body.base64EncodedString() == payload else {
            throw .malformed("envelope: the payload is not canonical base64")
        }
        let message = Self.pae(type: payloadType, body: Array(body))
        let ours = signatures.filter { (try? NoteVerifier(encoded: $0.keyid)) == key }
        guard !ours.isEmpty else {
            throw .malformed("envelope: no signature by \(key.encoded) (signed by \(signatures.map(\.keyid)))")
        }
        for s in ours {
            guard let sig = Data(base64Encoded: s.sig), sig.base64EncodedString() == s.sig,
                key.publicKey.isValidSignature(sig, for: message)
            else {
                throw .malformed("envelope: the signature of \(key.encoded) does not verify")
            }
        }
        return Array(body)
    }
}
