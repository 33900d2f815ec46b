/// The evidence log (`evidence:`): a Merkle tree over every stored span with signed
/// checkpoints, which `flightrec verify` and audit bundles check offline.
public struct EvidenceSettings: Sendable, Equatable {
    /// On by default: a store without it cannot prove that nothing was changed.
    public var enabled = true
    /// The Ed25519 signing key (`PRIVATE+KEY+...`, mode 0600). Default: `DATA/keys/log.key`,
    /// generated at first start.
    public var signingKey: String?
    /// A checkpoint is signed this often even when idle, so a gap in signing shows.
    public var checkpointIntervalSeconds = 60.0

    public init() {}

    public static func defaultKeyPath(dataDirectory: String) -> String { dataDirectory + "/keys/log.key" }
}
