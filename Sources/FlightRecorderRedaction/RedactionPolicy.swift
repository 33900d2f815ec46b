import Foundation

/// What the redaction policy does with attribute values, span names, event names and status
/// messages. Built from the `redaction:` config section (or directly in tests), validated by
/// `Redactor.init`, which fails with the rule name and the reason.
public struct RedactionPolicy: Sendable {
    public enum Action: Sendable, Equatable {
        case drop
        /// Replace with `[REDACTED:<rule>]`.
        case mask
        /// HMAC-SHA256 with the policy's key: `hmac:<keyid>:<16 hex>`.
        case hash
        /// HMAC-SHA256 with the pseudonym key (`pseudonymKey`), same form: identities stay
        /// answerable ("who approved?") without being stored.
        case pseudonym
        /// Keep the first n characters (detectors still run on them).
        case truncate(Int)
        /// Keep verbatim; no detector runs.
        case keep
    }

    /// Selects attribute keys: `exact`, a glob (`*`, `?`), or a regular expression.
    public enum KeyPattern: Sendable, Equatable {
        case exact(String)
        case glob(String)
        case regex(String)

        /// `/…/` is a regular expression, a pattern with `*` or `?` a glob, anything else exact.
        public init(_ text: String) {
            if text.count >= 2 && text.hasPrefix("/") && text.hasSuffix("/") {
                self = .regex(String(text.dropFirst().dropLast()))
            } else if text.contains("*") || text.contains("?") {
                self = .glob(text)
            } else {
                self = .exact(text)
            }
        }
    }

    public struct KeyRule: Sendable, Equatable {
        public var name: String
        public var keys: [KeyPattern]
        public var action: Action

        public init(name: String, keys: [KeyPattern], action: Action) {
            self.name = name
            self.keys = keys
            self.action = action
        }
    }

    public struct CustomDetector: Sendable, Equatable {
        public var name: String
        public var pattern: String

        public init(name: String, pattern: String) {
            self.name = name
            self.pattern = pattern
        }
    }

    /// Rules, detectors and mode for one set of resources.
    public struct RuleSet: Sendable {
        public var name: String
        /// Applies to resources whose attribute `key` equals `value`; nil for the default set.
        public var match: (key: String, value: String)?
        public var rules: [KeyRule] = []
        public var detectors: Set<Detector> = Detector.defaults
        public var customDetectors: [CustomDetector] = []
        /// Fail-closed mode: when non-nil, only these keys are kept verbatim and every other
        /// string value is masked.
        public var allowKeys: [KeyPattern]?
        /// Mask values whose key names a credential (`CredentialKeys`), in every position,
        /// unless a rule of this set selects the key first. On by default.
        public var credentialKeys = true

        public init(name: String, match: (key: String, value: String)? = nil) {
            self.name = name
            self.match = match
        }
    }

    public struct HMACKey: Sendable, Equatable {
        public var id: String
        public var key: [UInt8]

        public init(id: String, key: [UInt8]) {
            self.id = id
            self.key = key
        }
    }

    public var enabled = true
    /// Scoped sets, tried in order; the first whose `match` fits the resource applies.
    public var scoped: [RuleSet] = []
    public var defaultSet = RuleSet(name: "default")
    public var hmacKey: HMACKey?
    /// Keys whose values identify a person or actor: pseudonymised with `pseudonymKey`
    /// (rule `identity`), never masked, unless a key rule selects them first. Applies in every
    /// rule set, allowlist mode included.
    public var identityKeys = ["approval.approver", "enduser.id"]
    /// The key identities are pseudonymised with; the daemon makes one at first start. nil
    /// leaves identity keys to the other rules (masked by the detectors where they match).
    public var pseudonymKey: HMACKey?

    public init() {}

    /// The name of the built-in identity rule, in `flightrec.redacted.rules` and the stats.
    public static let identityRuleName = "identity"

    /// Every default detector on, no key rules: what runs with no configuration at all.
    public static let secureDefault = RedactionPolicy()
}
