import Crypto
import FlightRecorderCore
import Foundation
import Synchronization

/// A validated, compiled redaction policy. Thread-safe; share one instance.
public final class Redactor: Sendable {
    public let policy: RedactionPolicy
    package let sets: [CompiledSet]
    let hmac: (id: String, key: SymmetricKey)?
    let pseudonymKey: (id: String, key: SymmetricKey)?
    private let counters = Mutex<[String: Int]>([:])

    /// Compiles `policy`; throws naming the rule when a pattern does not compile, a `hash`
    /// rule has no key, or a truncation length is not positive.
    public init(policy: RedactionPolicy) throws(RedactionError) {
        self.policy = policy
        self.hmac = policy.hmacKey.map { ($0.id, SymmetricKey(data: $0.key)) }
        self.pseudonymKey = policy.pseudonymKey.map { ($0.id, SymmetricKey(data: $0.key)) }
        var sets: [CompiledSet] = []
        for set in policy.scoped + [policy.defaultSet] {
            sets.append(
                try CompiledSet(
                    set, hasKey: policy.hmacKey != nil,
                    identityKeys: policy.pseudonymKey == nil ? [] : policy.identityKeys))
        }
        self.sets = sets
    }

    /// Index of the rule set for a resource with these attributes.
    public func ruleSet(resource: (String) -> String?) -> Int {
        for (i, s) in sets.enumerated() {
            guard let m = s.match else { continue }
            if resource(m.key) == m.value { return i }
        }
        return sets.count - 1
    }

    /// What to do with an attribute value under `key` in rule set `set`.
    package func decision(key: String, set: Int) -> CompiledSet.Decision {
        sets[set].decision(for: key)
    }

    /// Redacts one string attribute value; nil means drop the attribute.
    public func redactValue(_ value: String, key: String, set: Int, hits: inout Hits) -> String? {
        switch decision(key: key, set: set) {
        case .rule(let r):
            return apply(rule: sets[set].rules[r], to: value, set: set, hits: &hits)
        case .allowed:
            return value
        case .notAllowed:
            hits.add("allowlist")
            return "[REDACTED:allowlist]"
        case .detect:
            return redactText(value, set: set, hits: &hits)
        }
    }

    package func apply(rule: RedactionPolicy.KeyRule, to value: String, set: Int, hits: inout Hits) -> String? {
        switch rule.action {
        case .keep: return value
        case .drop:
            hits.add(rule.name)
            return nil
        case .mask:
            hits.add(rule.name)
            return "[REDACTED:\(rule.name)]"
        case .hash:
            hits.add(rule.name)
            return hash(value)
        case .pseudonym:
            hits.add(rule.name)
            return pseudonym(value)
        case .truncate(let n):
            // Detect first: cutting first could split a secret so that no detector sees it.
            let detected = redactText(value, set: set, hits: &hits)
            guard detected.count > n else { return detected }
            hits.add(rule.name)
            return String(detected.prefix(n)) + "…[TRUNCATED:\(rule.name)]"
        }
    }

    /// `hmac:<keyid>:<16 hex>`: equal values give equal output, without revealing the value.
    public func hash(_ value: String) -> String {
        guard let hmac else { return "[REDACTED:hash]" }
        let mac = HMAC<SHA256>.authenticationCode(for: Data(value.utf8), using: hmac.key)
        return "hmac:\(hmac.id):" + Hex.encode(mac.prefix(8))
    }

    /// `hmac:<keyid>:<16 hex>` under the pseudonym key: what `flightrec pseudonym VALUE` prints.
    public func pseudonym(_ value: String) -> String {
        guard let pseudonymKey else { return "[REDACTED:\(RedactionPolicy.identityRuleName)]" }
        let mac = HMAC<SHA256>.authenticationCode(for: Data(value.utf8), using: pseudonymKey.key)
        return "hmac:\(pseudonymKey.id):" + Hex.encode(mac.prefix(8))
    }

    /// Runs the detectors over free text (span names, messages, values with no key rule).
    public func redactText(_ value: String, set: Int, hits: inout Hits) -> String {
        var utf8 = Array(value.utf8)
        let changed = utf8.withUnsafeBufferPointer { redactBytes($0, set: set, hits: &hits) }
        if let changed { utf8 = changed } else { return value }
        return String(decoding: utf8, as: UTF8.self)
    }

    /// Masks every detector match in `bytes`; nil when nothing matched. Detectors see the
    /// text with its disguises undone (`TextNormalizer`); what they match is masked in the
    /// original bytes.
    public func redactBytes(_ bytes: UnsafeBufferPointer<UInt8>, set: Int, hits: inout Hits) -> [UInt8]? {
        var disguised = false
        var matches = detect(bytes, set: set, sawDisguise: &disguised)
        if disguised, let normalized = TextNormalizer.normalize(bytes) {
            var again = false
            matches = normalized.bytes.withUnsafeBufferPointer { detect($0, set: set, sawDisguise: &again) }
            for i in matches.indices {
                let r = matches[i].range
                matches[i].range =
                    normalized.origin[r.lowerBound].lowerBound..<normalized.origin[r.upperBound - 1].upperBound
            }
        }
        guard !matches.isEmpty else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var pos = 0
        for m in matches where m.range.lowerBound >= pos {
            out.append(contentsOf: bytes[pos..<m.range.lowerBound])
            out.append(contentsOf: "[REDACTED:\(m.rule)]".utf8)
            pos = m.range.upperBound
            hits.add(m.rule)
        }
        out.append(contentsOf: bytes[pos...])
        return out
    }

    /// Built-in and custom detector matches, sorted by start.
    func detect(_ bytes: UnsafeBufferPointer<UInt8>, set: Int, sawDisguise: inout Bool) -> [DetectorMatch] {
        let s = sets[set]
        var matches = s.scanner.scan(bytes, sawDisguise: &sawDisguise)
        guard !s.custom.isEmpty else { return matches }
        let text = String(decoding: bytes, as: UTF8.self)
        for (name, regex) in s.custom {
            for m in regex.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                guard let r = Range(m.range, in: text) else { continue }
                let lo = text.utf8.distance(from: text.utf8.startIndex, to: r.lowerBound)
                let hi = text.utf8.distance(from: text.utf8.startIndex, to: r.upperBound)
                // Offsets are exact for valid UTF-8; bytes that are not (a bytes value) were
                // decoded with replacement characters, so keep the range inside the input.
                let end = min(hi, bytes.count)
                if end > lo { matches.append(DetectorMatch(range: lo..<end, rule: name)) }
            }
        }
        matches.sort { $0.range.lowerBound < $1.range.lowerBound }
        return matches
    }

    /// Adds a request's hits to the per-rule counters.
    public func record(_ hits: Hits) {
        guard !hits.perRule.isEmpty else { return }
        counters.withLock { c in for (rule, n) in hits.perRule { c[rule, default: 0] += n } }
    }

    /// Adds counts carried over from a previous policy (on reload).
    public func absorb(_ counts: [String: Int]) {
        counters.withLock { c in for (rule, n) in counts { c[rule, default: 0] += n } }
    }

    /// Hits per rule since start-up (values never included).
    public var ruleCounts: [String: Int] { counters.withLock { $0 } }
}

/// Rule hits while redacting one span or request.
public struct Hits: Sendable {
    public private(set) var count = 0
    public private(set) var perRule: [String: Int] = [:]

    public init() {}

    public mutating func add(_ rule: String) {
        count += 1
        perRule[rule, default: 0] += 1
    }

    public mutating func merge(_ o: Hits) {
        count += o.count
        for (k, v) in o.perRule { perRule[k, default: 0] += v }
    }

    public var rules: [String] { perRule.keys.sorted() }
}

/// One rule set, with its patterns compiled.
package final class CompiledSet: Sendable {
    package enum Decision: Sendable {
        case rule(Int), allowed, notAllowed, detect
    }

    let match: (key: String, value: String)?
    package let rules: [RedactionPolicy.KeyRule]
    let ruleMatchers: [[KeyMatcher]]
    let allow: [KeyMatcher]?
    let scanner: ValueScanner
    let custom: [(String, NSRegularExpression)]
    /// The built-in `credential_key` rule's index in `rules`; nil when the set turns it off.
    let credentialRule: Int?
    /// The built-in `identity` rule's index in `rules`, and its keys as bytes; nil without a
    /// pseudonym key.
    let identityRule: Int?
    let identityKeys: [[UInt8]]
    /// False when no key rule or allowlist exists: values go to the detectors, and only the
    /// credential check looks at the key, so callers need not even build the key path.
    package var selectsKeys: Bool { !ruleMatchers.isEmpty || allow != nil }
    private let cache = Mutex<[String: Decision]>([:])

    // NSRegularExpression is immutable after creation and documented thread-safe.
    init(_ set: RedactionPolicy.RuleSet, hasKey: Bool, identityKeys: [String] = []) throws(RedactionError) {
        match = set.match
        var matchers: [[KeyMatcher]] = []
        for rule in set.rules {
            if rule.action == .hash && !hasKey {
                throw RedactionError(rule: rule.name, reason: "action hash needs an HMAC key (redaction.hmac)")
            }
            if case .truncate(let n) = rule.action, n <= 0 {
                throw RedactionError(rule: rule.name, reason: "truncate needs a positive length")
            }
            guard !rule.keys.isEmpty else { throw RedactionError(rule: rule.name, reason: "selects no keys") }
            var ms: [KeyMatcher] = []
            for k in rule.keys { ms.append(try KeyMatcher(k, rule: rule.name)) }
            matchers.append(ms)
        }
        ruleMatchers = matchers
        var rules = set.rules
        if identityKeys.isEmpty {
            identityRule = nil
        } else {
            identityRule = rules.count
            rules.append(
                RedactionPolicy.KeyRule(
                    name: RedactionPolicy.identityRuleName, keys: identityKeys.map { .exact($0) }, action: .pseudonym))
        }
        self.identityKeys = identityKeys.map { Array($0.utf8) }
        if set.credentialKeys {
            credentialRule = rules.count
            rules.append(RedactionPolicy.KeyRule(name: CredentialKeys.ruleName, keys: [], action: .mask))
        } else {
            credentialRule = nil
        }
        self.rules = rules
        var allow: [KeyMatcher]?
        if let keys = set.allowKeys {
            var ms: [KeyMatcher] = []
            for k in keys { ms.append(try KeyMatcher(k, rule: "\(set.name).allow_keys")) }
            allow = ms
        }
        self.allow = allow
        scanner = ValueScanner(enabled: set.detectors)
        var custom: [(String, NSRegularExpression)] = []
        for d in set.customDetectors {
            do {
                custom.append((d.name, try NSRegularExpression(pattern: d.pattern)))
            } catch {
                throw RedactionError(rule: d.name, reason: "regular expression does not compile: \(d.pattern)")
            }
        }
        self.custom = custom
    }

    /// The decision for a key given as bytes, without building a string when no rule or
    /// allowlist needs one (the default policy on the ingest path).
    package func decision(forKeyBytes key: UnsafeBufferPointer<UInt8>, path: () -> String) -> Decision {
        if selectsKeys { return decision(for: path()) }
        if let identityRule, identityKeys.contains(where: { $0.elementsEqual(key) }) { return .rule(identityRule) }
        if let credentialRule, CredentialKeys.matches(key) { return .rule(credentialRule) }
        return .detect
    }

    package func decision(for key: String) -> Decision {
        let isIdentity = identityRule != nil && identityKeys.contains { $0.elementsEqual(key.utf8) }
        guard selectsKeys else {
            if isIdentity, let identityRule { return .rule(identityRule) }
            if let credentialRule, CredentialKeys.matches(key) { return .rule(credentialRule) }
            return .detect
        }
        if let d = cache.withLock({ $0[key] }) { return d }
        var d = Decision.detect
        if let r = ruleMatchers.firstIndex(where: { $0.contains { $0.matches(key) } }) {
            d = .rule(r)
        } else if isIdentity, let identityRule {
            d = .rule(identityRule)
        } else if let credentialRule, CredentialKeys.matches(key) {
            d = .rule(credentialRule)
        } else if let allow {
            d = allow.contains { $0.matches(key) } ? .allowed : .notAllowed
        }
        cache.withLock { c in
            if c.count > 10_000 { c.removeAll() }
            c[key] = d
        }
        return d
    }
}

/// Matches one key pattern.
struct KeyMatcher: Sendable {
    let pattern: RedactionPolicy.KeyPattern
    let regex: NSRegularExpression?

    init(_ pattern: RedactionPolicy.KeyPattern, rule: String) throws(RedactionError) {
        self.pattern = pattern
        switch pattern {
        case .regex(let r):
            do {
                regex = try NSRegularExpression(pattern: "^(?:" + r + ")$")
            } catch {
                throw RedactionError(rule: rule, reason: "key regular expression does not compile: \(r)")
            }
        default:
            regex = nil
        }
    }

    func matches(_ key: String) -> Bool {
        switch pattern {
        case .exact(let e): return e == key
        case .glob(let g): return Self.glob(Array(g.utf8)[...], Array(key.utf8)[...])
        case .regex: return regex!.firstMatch(in: key, range: NSRange(key.startIndex..., in: key)) != nil
        }
    }

    /// `*` matches any run (including dots), `?` one byte.
    static func glob(_ p: ArraySlice<UInt8>, _ s: ArraySlice<UInt8>) -> Bool {
        var pi = p.startIndex, si = s.startIndex
        var star = -1, mark = 0
        while si < s.endIndex {
            if pi < p.endIndex && (p[pi] == 63 || p[pi] == s[si]) {
                pi += 1
                si += 1
            } else if pi < p.endIndex && p[pi] == 42 {
                star = pi
                mark = si
                pi += 1
            } else if star >= 0 {
                pi = star + 1
                mark += 1
                si = mark
            } else {
                return false
            }
        }
        while pi < p.endIndex && p[pi] == 42 { pi += 1 }
        return pi == p.endIndex
    }
}
