import Foundation

/// A C2SP signed note: text ending in a newline, a blank line, then one signature line per
/// signature, `— <key name> base64(key ID ‖ signature)`.
public struct SignedNote: Sendable, Equatable {
    public struct Signature: Sendable, Equatable {
        public var name: String
        public var keyID: UInt32
        /// What follows the key ID: the signature bytes (for a timestamped cosignature, the
        /// big-endian timestamp then the signature).
        public var bytes: [UInt8]

        public init(name: String, keyID: UInt32, bytes: [UInt8]) {
            self.name = name
            self.keyID = keyID
            self.bytes = bytes
        }
    }

    public var text: String
    public var signatures: [Signature]

    public init(text: String, signatures: [Signature]) {
        self.text = text
        self.signatures = signatures
    }

    /// The note as it is written and read.
    public var serialized: String {
        var out = text + "\n"
        for s in signatures {
            var raw: [UInt8] = withUnsafeBytes(of: s.keyID.bigEndian) { Array($0) }
            raw += s.bytes
            out += "— \(s.name) \(Data(raw).base64EncodedString())\n"
        }
        return out
    }

    /// Parses a note. At most 100 signatures and 1 MiB; no control characters but newlines.
    public init(parsing note: String) throws(EvidenceError) {
        guard note.utf8.count <= 1 << 20 else { throw .malformed("note: larger than 1 MiB") }
        guard !note.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\n" }) else {
            throw .malformed("note: contains a control character")
        }
        guard let split = note.range(of: "\n\n", options: .backwards) else {
            throw .malformed("note: no blank line before the signatures")
        }
        // The text ends at the last blank line before the signature lines.
        text = String(note[..<split.lowerBound]) + "\n"
        let lines = note[split.upperBound...].split(separator: "\n", omittingEmptySubsequences: false)
        guard note.hasSuffix("\n"), lines.last == "" else { throw .malformed("note: does not end in a newline") }
        signatures = []
        for line in lines.dropLast() {
            guard line.hasPrefix("— ") else { throw .malformed("note: a signature line does not start with \"— \"") }
            let parts = line.dropFirst(2).split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, let raw = Data(base64Encoded: String(parts[1])),
                raw.count > 4
            else { throw .malformed("note: a signature line is not \"— <name> <base64>\"") }
            let id = raw.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            signatures.append(Signature(name: String(parts[0]), keyID: id, bytes: Array(raw.dropFirst(4))))
        }
        guard !signatures.isEmpty, signatures.count <= 100 else {
            throw .malformed("note: expected 1 to 100 signature lines")
        }
    }
}
