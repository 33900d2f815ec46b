package import FlightRecorderRedaction
import Foundation
package import Yams

extension ConfigReader {
    /// Parses the `redaction:` section into a policy, then compiles it so a bad pattern or a
    /// missing key stops start-up with the rule's name and line.
    package mutating func redaction(_ node: Node) throws(ConfigError) -> RedactionPolicy {
        var policy = RedactionPolicy()
        var ruleLines: [String: Int] = [:]
        var hmacLine: Int?
        try section(node, path: "redaction") { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
            let path = "redaction.\(k)"
            switch k {
            case "enabled": policy.enabled = try r.bool(v, path)
            case "hmac":
                hmacLine = v.mark?.line
                policy.hmacKey = try r.hmac(v)
            case "identity_keys": policy.identityKeys = try r.stringList(v, path)
            case "scopes":
                guard let seq = v.sequence else { throw r.error(v, path, "expected a list of scoped rule sets") }
                for (i, item) in seq.enumerated() {
                    var set = RedactionPolicy.RuleSet(name: "scopes[\(i)]")
                    try r.ruleSet(item, path: "\(path)[\(i)]", into: &set, scoped: true, lines: &ruleLines)
                    policy.scoped.append(set)
                }
            default:
                try r.ruleSetKey(k, v, path: "redaction", into: &policy.defaultSet, lines: &ruleLines)
            }
        }
        do {
            _ = try Redactor(policy: policy)
        } catch {
            let line = ruleLines[error.rule] ?? (error.reason.contains("HMAC") ? hmacLine : nil) ?? node.mark?.line
            throw ConfigError(key: "redaction", line: line, reason: error.description)
        }
        return policy
    }

    mutating func ruleSet(
        _ node: Node, path: String, into set: inout RedactionPolicy.RuleSet, scoped: Bool, lines: inout [String: Int]
    ) throws(ConfigError) {
        try section(node, path: path) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
            if k == "match" {
                guard let m = v.mapping, m.count == 1, let key = m.first?.key.string, let value = m.first?.value.string
                else {
                    throw r.error(v, "\(path).match", "expected one resource attribute, such as {tenant.id: acme}")
                }
                set.match = (key, value)
                set.name = "\(key)=\(value)"
            } else {
                try r.ruleSetKey(k, v, path: path, into: &set, lines: &lines)
            }
        }
        if scoped && set.match == nil { throw error(node, "\(path).match", "a scoped rule set needs match") }
    }

    /// Keys shared by the default and the scoped rule sets.
    mutating func ruleSetKey(
        _ k: String, _ v: Node, path: String, into set: inout RedactionPolicy.RuleSet, lines: inout [String: Int]
    ) throws(ConfigError) {
        let key = "\(path).\(k)"
        switch k {
        case "mode":
            let mode = try string(v, key)
            switch mode {
            case "detect": set.allowKeys = nil
            case "allowlist": set.allowKeys = set.allowKeys ?? []
            default: throw error(v, key, "expected detect or allowlist (got \"\(mode)\")")
            }
        case "allow_keys":
            set.allowKeys = try stringList(v, key).map(RedactionPolicy.KeyPattern.init)
        case "credential_keys":
            set.credentialKeys = try bool(v, key)
        case "rules":
            guard let seq = v.sequence else { throw error(v, key, "expected a list of rules") }
            for (i, item) in seq.enumerated() {
                let rule = try self.rule(item, path: "\(key)[\(i)]")
                if lines[rule.name] != nil || set.rules.contains(where: { $0.name == rule.name }) {
                    throw error(item, "\(key)[\(i)].name", "duplicate rule name \"\(rule.name)\"")
                }
                lines[rule.name] = item.mark?.line
                set.rules.append(rule)
            }
        case "detectors":
            try section(v, path: key) { (r: inout ConfigReader, dk: String, dv: Node) throws(ConfigError) in
                let dpath = "\(key).\(dk)"
                switch dk {
                case "enable", "disable":
                    for name in try r.stringList(dv, dpath) {
                        guard let d = Detector(rawValue: name) else {
                            let known = Detector.allCases.map(\.rawValue).joined(separator: ", ")
                            throw r.error(dv, dpath, "unknown detector \"\(name)\" (known: \(known))")
                        }
                        if dk == "enable" { set.detectors.insert(d) } else { set.detectors.remove(d) }
                    }
                case "custom":
                    guard let seq = dv.sequence else { throw r.error(dv, dpath, "expected a list of {name, pattern}") }
                    for (i, item) in seq.enumerated() {
                        var name: String?
                        var pattern: String?
                        try r.section(item, path: "\(dpath)[\(i)]") {
                            (r: inout ConfigReader, ck: String, cv: Node) throws(ConfigError) in
                            switch ck {
                            case "name": name = try r.string(cv, "\(dpath)[\(i)].name")
                            case "pattern": pattern = try r.string(cv, "\(dpath)[\(i)].pattern")
                            default: throw r.unknown(cv, "\(dpath)[\(i)].\(ck)")
                            }
                        }
                        guard let name, let pattern else {
                            throw r.error(item, "\(dpath)[\(i)]", "needs name and pattern")
                        }
                        lines[name] = item.mark?.line
                        set.customDetectors.append(.init(name: name, pattern: pattern))
                    }
                default: throw r.unknown(dv, dpath)
                }
            }
        default:
            throw unknown(v, key)
        }
    }

    mutating func rule(_ node: Node, path: String) throws(ConfigError) -> RedactionPolicy.KeyRule {
        var name: String?
        var keys: [RedactionPolicy.KeyPattern] = []
        var action: RedactionPolicy.Action?
        try section(node, path: path) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
            switch k {
            case "name": name = try r.string(v, "\(path).name")
            case "keys": keys = try r.stringList(v, "\(path).keys").map(RedactionPolicy.KeyPattern.init)
            case "key": keys = [RedactionPolicy.KeyPattern(try r.string(v, "\(path).key"))]
            case "action": action = try r.action(v, "\(path).action")
            default: throw r.unknown(v, "\(path).\(k)")
            }
        }
        guard let name, !name.isEmpty else { throw error(node, "\(path).name", "every rule needs a name") }
        guard !keys.isEmpty else { throw error(node, "\(path).keys", "rule \"\(name)\" selects no keys") }
        guard let action else { throw error(node, "\(path).action", "rule \"\(name)\" needs an action") }
        return .init(name: name, keys: keys, action: action)
    }

    func action(_ node: Node, _ key: String) throws(ConfigError) -> RedactionPolicy.Action {
        let s = try string(node, key).trimmingCharacters(in: .whitespaces)
        switch s {
        case "drop": return .drop
        case "mask": return .mask
        case "hash": return .hash
        case "keep": return .keep
        default:
            if s.hasPrefix("truncate(") && s.hasSuffix(")"), let n = Int(s.dropFirst(9).dropLast()), n > 0 {
                return .truncate(n)
            }
            throw error(node, key, "expected drop, mask, hash, keep or truncate(N) (got \"\(s)\")")
        }
    }

    package func bool(_ node: Node, _ key: String) throws(ConfigError) -> Bool {
        guard let b = node.bool else { throw error(node, key, "expected true or false") }
        return b
    }

    mutating func hmac(_ node: Node) throws(ConfigError) -> RedactionPolicy.HMACKey {
        var id: String?
        var file: (String, Node)?
        var env: (String, Node)?
        try section(node, path: "redaction.hmac") { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
            switch k {
            case "key_id": id = try r.string(v, "redaction.hmac.key_id")
            case "key_file": file = (try r.string(v, "redaction.hmac.key_file"), v)
            case "key_env": env = (try r.string(v, "redaction.hmac.key_env"), v)
            default: throw r.unknown(v, "redaction.hmac.\(k)")
            }
        }
        guard let id, !id.isEmpty, !id.contains(":") else {
            throw error(node, "redaction.hmac.key_id", "needs a key ID without ':' (it appears in every hash)")
        }
        var secret: String?
        if let (path, n) = file {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw error(n, "redaction.hmac.key_file", "cannot read the HMAC key file \(path)")
            }
            secret = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        } else if let (name, n) = env {
            guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else {
                throw error(n, "redaction.hmac.key_env", "environment variable \(name) is not set")
            }
            secret = value
        }
        guard let secret else { throw error(node, "redaction.hmac", "needs key_file or key_env") }
        guard secret.utf8.count >= 16 else {
            throw error(node, "redaction.hmac", "the HMAC key must be at least 16 bytes")
        }
        return .init(id: id, key: Array(secret.utf8))
    }
}
