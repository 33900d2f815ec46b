import Crypto
import FlightRecorderCore
import Foundation

extension RedactionPolicy {
    /// The SHA-256 (hex) of the policy's canonical text (`canonicalText`): what an audit
    /// bundle names as the redaction policy in force, so two bundles can be shown to have been
    /// redacted alike. Keys are named by their IDs, never their bytes.
    public var digest: String {
        Hex.encode(SHA256.hash(data: Array(canonicalText.utf8)))
    }

    /// One line per setting, rule sets in the order they apply, detectors sorted.
    public var canonicalText: String {
        var lines = ["flightrec-redaction-policy/v1", "enabled \(enabled)"]
        lines.append("identity_keys " + identityKeys.joined(separator: ","))
        lines.append("hmac_key_id \(hmacKey?.id ?? "-")")
        lines.append("pseudonym_key_id \(pseudonymKey?.id ?? "-")")
        for set in scoped + [defaultSet] {
            lines.append("set \(set.name) match \(set.match.map { "\($0.key)=\($0.value)" } ?? "-")")
            lines.append("  credential_keys \(set.credentialKeys)")
            lines.append("  detectors " + set.detectors.map(\.rawValue).sorted().joined(separator: ","))
            for d in set.customDetectors { lines.append("  custom \(d.name) \(d.pattern)") }
            if let allow = set.allowKeys { lines.append("  allow " + allow.map(Self.describe).joined(separator: ",")) }
            for r in set.rules {
                lines.append(
                    "  rule \(r.name) \(Self.describe(r.action)) " + r.keys.map(Self.describe).joined(separator: ","))
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func describe(_ p: KeyPattern) -> String {
        switch p {
        case .exact(let s): "exact:\(s)"
        case .glob(let s): "glob:\(s)"
        case .regex(let s): "regex:\(s)"
        }
    }

    static func describe(_ a: Action) -> String {
        switch a {
        case .drop: "drop"
        case .mask: "mask"
        case .hash: "hash"
        case .pseudonym: "pseudonym"
        case .truncate(let n): "truncate(\(n))"
        case .keep: "keep"
        }
    }
}
