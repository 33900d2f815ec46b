public import FlightRecorderOTLP
public import FlightRecorderRedaction
import Synchronization

/// The decoder every request uses, swapped whole when the redaction policy is reloaded, so a
/// request sees either the old policy or the new one, never a mix and never none.
public final class IngestPolicy: Sendable {
    private let state: Mutex<ExportRequestDecoder>

    public init(
        runIdentity: RunIdentity, indexedKeys: IndexedKeys = IndexedKeys(), limits: IngestLimits = IngestLimits(),
        redaction: RedactionPolicy, metrics: MetricRules? = nil, evidenceLeaves: Bool = true
    ) throws(RedactionError) {
        var decoder = ExportRequestDecoder(
            runIdentity: runIdentity, indexedKeys: indexedKeys, limits: limits,
            redaction: try Self.redactor(redaction), metrics: metrics)
        decoder.evidenceLeaves = evidenceLeaves
        state = Mutex(decoder)
    }

    static func redactor(_ policy: RedactionPolicy) throws(RedactionError) -> RequestRedactor? {
        policy.enabled ? RequestRedactor(redactor: try Redactor(policy: policy)) : nil
    }

    public var decoder: ExportRequestDecoder { state.withLock { $0 } }

    /// Installs a new policy; per-rule counters carry over.
    public func reload(redaction policy: RedactionPolicy) throws(RedactionError) {
        // The pseudonym key is the store's, not the config file's: it carries over.
        var policy = policy
        if policy.pseudonymKey == nil { policy.pseudonymKey = decoder.redaction?.redactor.policy.pseudonymKey }
        let next = try Self.redactor(policy)
        state.withLock { decoder in
            if let next, let old = decoder.redaction { next.redactor.absorb(old.redactor.ruleCounts) }
            decoder.redaction = next
        }
    }

    /// The digest of the redaction policy in force (`RedactionPolicy.digest`); a disabled
    /// policy has a digest of its own.
    public var redactionDigest: String {
        guard let policy = decoder.redaction?.redactor.policy else {
            var disabled = RedactionPolicy()
            disabled.enabled = false
            return disabled.digest
        }
        return policy.digest
    }

    /// Hits per redaction rule since start-up.
    public var ruleCounts: [String: Int] { decoder.redaction?.redactor.ruleCounts ?? [:] }
}
