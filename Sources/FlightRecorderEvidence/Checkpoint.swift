/// A C2SP tlog-checkpoint's note text: the log's origin, the tree size and the RFC 9162 root.
/// No extension lines (C2SP advises against them); the time a checkpoint was made is signed
/// in its timestamped cosignature instead (`NoteSigner`).
public struct Checkpoint: Sendable, Equatable {
    public var origin: String
    public var size: UInt64
    public var root: TreeHash

    public init(origin: String, size: UInt64, root: TreeHash) {
        self.origin = origin
        self.size = size
        self.root = root
    }

    /// The note text, ending in a newline.
    public var text: String { "\(origin)\n\(size)\n\(root.base64)\n" }

    /// Parses a note text: origin, decimal size without leading zeroes, base64 root; extension
    /// lines are ignored.
    public init(text: String) throws(EvidenceError) {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard text.hasSuffix("\n"), lines.count >= 4, !lines[0].isEmpty else {
            throw .malformed("checkpoint: expected origin, size and root hash lines")
        }
        guard let size = UInt64(lines[1]), String(size) == lines[1] else {
            throw .malformed("checkpoint: tree size \"\(lines[1].prefix(24))\" is not a decimal number")
        }
        guard let root = TreeHash(base64: lines[2]) else {
            throw .malformed("checkpoint: root hash is not 32 bytes of base64")
        }
        self.init(origin: String(lines[0]), size: size, root: root)
    }
}

/// Why evidence failed to parse or verify; `description` says what and where.
public struct EvidenceError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String

    public static func malformed(_ what: String) -> EvidenceError { EvidenceError(description: what) }
}
