public import FlightRecorderConfig
import FlightRecorderOTLP
public import FlightRecorderRedaction
import Foundation
package import Yams

/// `flightrec guard serve --config FILE`: where the sidecar listens, where its spans go, its
/// state directory, and the policy. Every problem stops start-up naming the key and line.
public struct GuardConfiguration: Sendable {
    public var listen = HostPort(host: "127.0.0.1", port: 4320)
    public var socket: String?
    /// OTLP/HTTP traces endpoint of the collector the decision spans go to.
    public var collector = "http://127.0.0.1:4318/v1/traces"
    /// Environment variable holding the bearer token for the collector (its tenant is the
    /// token's); nil when the collector runs without auth.
    public var collectorTokenEnv: String?
    /// How large the store may grow while decision spans wait for the collector (the outbox);
    /// beyond it decisions are refused (503), from 80 % the sidecar warns.
    public var collectorOutboxLimit: Int64 = 1 << 30
    public var dataDirectory = "guard-data"
    public var socketMode = 0o660
    public var policy = GuardPolicy(tools: [], actors: [], rules: [], approverRoles: [])
    /// Tool results and the arguments on spans pass through this policy: the collector's
    /// engine and config format (`redaction:`), with every default detector on.
    public var redaction = RedactionPolicy.secureDefault
    /// SHA-256 digests of actor tokens (hex) -> actor ID. When any is set, every request
    /// must carry a bearer token and acts as that token's actor.
    public var actorTokens: [String: String] = [:]

    /// Refuses a listener beyond loopback without actor tokens (anyone who can reach it could
    /// claim any actor, approvers included).
    public func validate() throws(ConfigError) {
        if socket == nil && !listen.isLoopback && actorTokens.isEmpty {
            throw ConfigError(
                key: "listen",
                reason: "\(listen) is beyond loopback but no actor has token_sha256: anyone could act as any actor")
        }
    }

    public init() {}

    /// The OTLP/HTTP traces URL for a `collector` setting, after the OpenTelemetry exporter
    /// convention: a base URL with no path (`http://host:4318`) gets `/v1/traces` appended, any
    /// other path is used as given. `off` stays `off`. A URL that cannot be a traces endpoint
    /// (not http or https, no host, a query or fragment, another signal's path) is refused.
    public static func tracesEndpoint(_ text: String, key: String) throws(ConfigError) -> String {
        if text.lowercased() == "off" { return "off" }
        guard var parts = URLComponents(string: text), let scheme = parts.scheme?.lowercased(),
            ["http", "https"].contains(scheme)
        else {
            throw ConfigError(key: key, reason: "expected an http:// or https:// OTLP/HTTP URL, or off")
        }
        guard let host = parts.host, !host.isEmpty else { throw ConfigError(key: key, reason: "the URL has no host") }
        guard parts.query == nil, parts.fragment == nil else {
            throw ConfigError(key: key, reason: "the URL has a query or fragment; an OTLP traces endpoint has neither")
        }
        guard parts.user == nil, parts.password == nil else {
            throw ConfigError(key: key, reason: "credentials do not belong in the URL; use collector_token_env")
        }
        let path = parts.path
        if path.isEmpty || path == "/" {
            parts.path = "/v1/traces"
        } else if path.hasSuffix("/v1/logs") || path.hasSuffix("/v1/metrics") {
            throw ConfigError(key: key, reason: "\(path) is another signal's endpoint; decision spans go to /v1/traces")
        }
        guard let url = parts.string else { throw ConfigError(key: key, reason: "not a valid URL") }
        return url
    }

    public static func load(path: String) throws(ConfigError) -> GuardConfiguration {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8)
        else {
            throw ConfigError(key: "", file: path, reason: "cannot read the config file")
        }
        do {
            return try parse(yaml: text)
        } catch var error {
            error.file = path
            throw error
        }
    }

    public static func parse(yaml text: String) throws(ConfigError) -> GuardConfiguration {
        try parse(root: try ConfigReader.compose(text))
    }

    /// The configuration in a composed YAML document (nil: an empty file, nothing allowed).
    package static func parse(root: Node?) throws(ConfigError) -> GuardConfiguration {
        var config = GuardConfiguration()
        guard let root else { return config }
        var r = ConfigReader()
        var tools: [Tool] = []
        var actors: [Actor] = []
        var rules: [Rule] = []
        var approvers: Set<String> = []
        var budgets = Budgets()
        var ruleToolLines: [(String, Node)] = []
        try r.section(root, path: "") { (r: inout ConfigReader, key: String, value: Node) throws(ConfigError) in
            switch key {
            case "listen": config.listen = try r.hostPort(value, "listen")
            case "socket": config.socket = try r.string(value, "socket")
            case "socket_mode":
                let text = try r.string(value, "socket_mode")
                guard let mode = Int(text, radix: 8), (0...0o777).contains(mode) else {
                    throw r.error(value, "socket_mode", "expected an octal file mode such as 0660")
                }
                config.socketMode = mode
            case "collector":
                let url = try r.string(value, "collector")
                do throws(ConfigError) {
                    config.collector = try Self.tracesEndpoint(url, key: "collector")
                } catch {
                    throw r.error(value, "collector", error.reason)
                }
            case "collector_token_env": config.collectorTokenEnv = try r.string(value, "collector_token_env")
            case "collector_outbox_limit":
                config.collectorOutboxLimit = Int64(try r.bytes(value, "collector_outbox_limit", min: 1 << 20))
            case "redaction": config.redaction = try r.redaction(value)
            case "data_dir": config.dataDirectory = try r.string(value, "data_dir")
            case "tools":
                guard let seq = value.sequence else { throw r.error(value, "tools", "expected a list of tools") }
                for (i, item) in seq.enumerated() { tools.append(try r.tool(item, path: "tools[\(i)]")) }
            case "actors":
                guard let seq = value.sequence else { throw r.error(value, "actors", "expected a list of actors") }
                for (i, item) in seq.enumerated() {
                    let (actor, digest) = try r.actor(item, path: "actors[\(i)]")
                    actors.append(actor)
                    if let digest { config.actorTokens[digest] = actor.id }
                }
            case "rules":
                guard let seq = value.sequence else { throw r.error(value, "rules", "expected a list of rules") }
                for (i, item) in seq.enumerated() {
                    rules.append(try r.rule(item, path: "rules[\(i)]", toolRefs: &ruleToolLines))
                }
            case "approvals":
                try r.section(value, path: key) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
                    guard k == "approver_roles" else { throw r.unknown(v, "approvals.\(k)") }
                    approvers = Set(try r.stringList(v, "approvals.approver_roles"))
                }
            case "budgets":
                try r.section(value, path: key) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
                    let path = "budgets.\(k)"
                    switch k {
                    case "max_steps": budgets.maxSteps = try r.integer(v, path, min: 1)
                    case "max_duplicate_calls": budgets.maxDuplicateCalls = try r.integer(v, path, min: 0)
                    case "max_tokens": budgets.maxTokens = try r.integer(v, path, min: 1)
                    case "max_cost_usd": budgets.maxCostUSD = try r.number(v, path, min: 0)
                    default: throw r.unknown(v, path)
                    }
                }
            default: throw r.unknown(value, key)
            }
        }
        var seen: Set<String> = []
        for a in actors where !seen.insert(a.id).inserted {
            throw ConfigError(key: "actors", reason: "actor \"\(a.id)\" is configured twice")
        }
        seen = []
        for t in tools where !seen.insert(t.name).inserted {
            throw ConfigError(key: "tools", reason: "tool \"\(t.name)\" is configured twice")
        }
        let names = Set(tools.map(\.name))
        for (name, node) in ruleToolLines where !names.contains(name) {
            throw r.error(node, "rules", "unknown tool \"\(name)\"; it is not in tools")
        }
        for t in tools {
            if let c = t.compensatingTool, !names.contains(c) {
                throw ConfigError(key: "tools", reason: "\(t.name): compensating tool \"\(c)\" is not in tools")
            }
        }
        if approvers.isEmpty && rules.contains(where: { $0.effect == .requireApproval }) {
            throw ConfigError(
                key: "approvals.approver_roles", reason: "rules require approval but no approver role is configured")
        }
        config.policy = GuardPolicy(
            tools: tools, actors: actors, rules: rules, approverRoles: approvers, budgets: budgets)
        return config
    }
}

extension ConfigReader {
    mutating func tool(_ node: Node, path: String) throws(ConfigError) -> Tool {
        var name: String?
        var tier: Tier?
        var schema = ArgumentSchema.object(properties: [:], required: [], additional: false)
        var url: String?
        var method = "POST"
        var timeout = 10.0
        var reversible = false
        var compensating: String?
        var operationIDPath = "operation_id"
        var resolves: Tool.EntityLookup?
        var caseState: [String: String] = [:]
        try section(node, path: path) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
            let key = "\(path).\(k)"
            switch k {
            case "name": name = try r.string(v, key)
            case "resolves":
                var argument: String?
                var matches: String?
                try r.section(v, path: key) { (r: inout ConfigReader, rk: String, rv: Node) throws(ConfigError) in
                    switch rk {
                    case "argument": argument = try r.string(rv, "\(key).argument")
                    case "matches": matches = try r.string(rv, "\(key).matches")
                    default: throw r.unknown(rv, "\(key).\(rk)")
                    }
                }
                guard let argument, let matches else { throw r.error(v, key, "needs argument and matches") }
                resolves = Tool.EntityLookup(argument: argument, matches: matches)
            case "case_state":
                try r.section(v, path: key) { (r: inout ConfigReader, ck: String, cv: Node) throws(ConfigError) in
                    caseState[ck] = try r.string(cv, "\(key).\(ck)")
                }
            case "tier":
                let s = try r.string(v, key)
                guard let t = Tier(rawValue: s) else {
                    throw r.error(v, key, "expected read, low_write or privileged_write")
                }
                tier = t
            case "arguments": schema = try r.schema(v, path: key)
            case "backend":
                try r.section(v, path: key) { (r: inout ConfigReader, bk: String, bv: Node) throws(ConfigError) in
                    switch bk {
                    case "url":
                        let u = try r.string(bv, "\(key).url")
                        guard let parsed = URL(string: u), ["http", "https"].contains(parsed.scheme ?? "") else {
                            throw r.error(bv, "\(key).url", "expected an http:// or https:// URL")
                        }
                        url = u
                    case "method":
                        let m = try r.string(bv, "\(key).method").uppercased()
                        guard ["POST", "PUT", "PATCH", "DELETE", "GET"].contains(m) else {
                            throw r.error(bv, "\(key).method", "expected POST, PUT, PATCH, DELETE or GET")
                        }
                        method = m
                    case "operation_id": operationIDPath = try r.string(bv, "\(key).operation_id")
                    default: throw r.unknown(bv, "\(key).\(bk)")
                    }
                }
            case "timeout":
                let s = try r.string(v, key)
                guard let seconds = Self.seconds(s), seconds > 0, seconds <= 600 else {
                    throw r.error(v, key, "expected a duration such as 500ms, 5s or 1m (at most 10m)")
                }
                timeout = seconds
            case "reversible": reversible = try r.bool(v, key)
            case "compensating_tool": compensating = try r.string(v, key)
            default: throw r.unknown(v, key)
            }
        }
        guard let name, !name.isEmpty else { throw error(node, path, "needs name") }
        guard let tier else { throw error(node, path, "needs tier") }
        guard let url else { throw error(node, path, "needs backend.url") }
        var tool = Tool(
            name: name, arguments: schema, tier: tier, backendURL: url, backendMethod: method, timeoutSeconds: timeout,
            reversible: reversible, compensatingTool: compensating)
        tool.operationIDPath = operationIDPath
        tool.resolves = resolves
        tool.recordsCaseState = caseState
        return tool
    }

    static func seconds(_ s: String) -> Double? {
        for (suffix, factor) in [("ms", 0.001), ("s", 1.0), ("m", 60.0)] where s.hasSuffix(suffix) {
            if let n = Double(s.dropLast(suffix.count)) { return n * factor }
        }
        return nil
    }

    /// The JSON Schema subset of `ArgumentSchema`; unknown schema keywords are errors, so a
    /// typo never silently loosens validation.
    mutating func schema(_ node: Node, path: String) throws(ConfigError) -> ArgumentSchema {
        guard let mapping = node.mapping else { throw error(node, path, "expected a schema mapping") }
        let type = mapping["type"].flatMap(\.string)
        var properties: [String: ArgumentSchema] = [:]
        var required: [String] = []
        var additional = false
        var minLength: Int?, maxLength: Int?, minItems: Int?, maxItems: Int?
        var minimum: Double?, maximum: Double?
        var pattern: String?
        var allowed: [String]?
        var items: ArgumentSchema?
        try section(node, path: path) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
            let key = "\(path).\(k)"
            switch k {
            case "type":
                guard ["object", "string", "integer", "number", "boolean", "array"].contains(type ?? "") else {
                    throw r.error(v, key, "expected object, string, integer, number, boolean or array")
                }
            case "description", "title": _ = try r.string(v, key)
            case "properties":
                guard let m = v.mapping else {
                    throw r.error(v, key, "expected a mapping of argument names to schemas")
                }
                for (pk, pv) in m {
                    guard let name = pk.string else { throw r.error(pk, key, "argument names must be strings") }
                    properties[name] = try r.schema(pv, path: "\(key).\(name)")
                }
            case "required": required = try r.stringList(v, key)
            case "additionalProperties": additional = try r.bool(v, key)
            case "minLength": minLength = try r.integer(v, key)
            case "maxLength": maxLength = try r.integer(v, key)
            case "minItems": minItems = try r.integer(v, key)
            case "maxItems": maxItems = try r.integer(v, key)
            case "minimum": minimum = try r.number(v, key, min: -.greatestFiniteMagnitude)
            case "maximum": maximum = try r.number(v, key, min: -.greatestFiniteMagnitude)
            case "pattern":
                let p = try r.string(v, key)
                guard (try? Regex(p)) != nil else { throw r.error(v, key, "not a valid regular expression") }
                pattern = p
            case "enum": allowed = try r.stringList(v, key)
            case "items": items = try r.schema(v, path: key)
            default: throw r.unknown(v, key)
            }
        }
        for name in required where properties[name] == nil && type == "object" {
            throw error(node, "\(path).required", "\"\(name)\" is required but not in properties")
        }
        switch type {
        case "object": return .object(properties: properties, required: required, additional: additional)
        case "string": return .string(minLength: minLength, maxLength: maxLength, pattern: pattern, allowed: allowed)
        case "integer": return .integer(minimum: minimum, maximum: maximum, allowed: allowed?.compactMap { Int64($0) })
        case "number": return .number(minimum: minimum, maximum: maximum)
        case "boolean": return .boolean
        case "array": return .array(items: items, minItems: minItems, maxItems: maxItems)
        default: return .any
        }
    }

    mutating func actor(_ node: Node, path: String) throws(ConfigError) -> (Actor, String?) {
        var id: String?
        var digest: String?
        var tenant = ResourceFacts.defaultTenant
        var roles: Set<String> = []
        try section(node, path: path) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
            switch k {
            case "id": id = try r.string(v, "\(path).id")
            case "tenant": tenant = try r.string(v, "\(path).tenant")
            case "roles": roles = Set(try r.stringList(v, "\(path).roles"))
            case "token_sha256":
                let hex = try r.string(v, "\(path).token_sha256").lowercased()
                guard hex.count == 64, hex.allSatisfy(\.isHexDigit) else {
                    throw r.error(v, "\(path).token_sha256", "expected 64 hex digits (flightrec token hash)")
                }
                digest = hex
            default: throw r.unknown(v, "\(path).\(k)")
            }
        }
        guard let id, !id.isEmpty else { throw error(node, path, "needs id") }
        return (Actor(id: id, tenant: tenant, roles: roles), digest)
    }

    mutating func rule(_ node: Node, path: String, toolRefs: inout [(String, Node)]) throws(ConfigError) -> Rule {
        var rule = Rule(id: "", effect: .deny)
        var effect: Rule.Effect?
        try section(node, path: path) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
            let key = "\(path).\(k)"
            switch k {
            case "id": rule.id = try r.string(v, key)
            case "effect":
                let s = try r.string(v, key)
                guard let e = Rule.Effect(rawValue: s) else {
                    throw r.error(v, key, "expected allow, deny or require_approval")
                }
                effect = e
            case "tenants": rule.tenants = Set(try r.stringList(v, key))
            case "roles": rule.roles = Set(try r.stringList(v, key))
            case "tools":
                let names = try r.stringList(v, key)
                for n in names { toolRefs.append((n, v)) }
                rule.tools = Set(names)
            case "tiers":
                var tiers: Set<Tier> = []
                for s in try r.stringList(v, key) {
                    guard let t = Tier(rawValue: s) else { throw r.error(v, key, "unknown tier \"\(s)\"") }
                    tiers.insert(t)
                }
                rule.tiers = tiers
            case "min_risk_score": rule.minimumRiskScore = try r.number(v, key, min: 0)
            case "when":
                guard let seq = v.sequence else { throw r.error(v, key, "expected a list of conditions") }
                for (i, c) in seq.enumerated() { rule.conditions.append(try r.condition(c, path: "\(key)[\(i)]")) }
            default: throw r.unknown(v, key)
            }
        }
        guard !rule.id.isEmpty else { throw error(node, path, "needs id") }
        guard let effect else { throw error(node, path, "needs effect") }
        rule.effect = effect
        return rule
    }

    /// `{argument: PATH, equals: VALUE}`, `{argument: PATH, not_actor: true}` or
    /// `{case: KEY, equals: VALUE}`.
    mutating func condition(_ node: Node, path: String) throws(ConfigError) -> Condition {
        guard let m = node.mapping else { throw error(node, path, "expected a condition mapping") }
        let argument = m["argument"].flatMap(\.string)
        let caseKey = m["case"].flatMap(\.string)
        for (k, _) in m where !["argument", "case", "equals", "not_actor"].contains(k.string ?? "") {
            throw unknown(k, "\(path).\(k.string ?? "?")")
        }
        if let argument, let equals = m["equals"] {
            return .argumentEquals(path: argument, value: Self.json(equals))
        }
        if let argument, m["not_actor"] != nil { return .argumentIsNotActor(path: argument) }
        if let caseKey, let equals = m["equals"] { return .caseState(key: caseKey, value: equals.string ?? "") }
        throw error(node, path, "expected {argument, equals}, {argument, not_actor: true} or {case, equals}")
    }

    static func json(_ node: Node) -> JSONValue {
        guard let s = node.string else { return .null }
        if node.scalar?.style == .plain {
            if s == "true" { return .bool(true) }
            if s == "false" { return .bool(false) }
            if let i = Int64(s) { return .int(i) }
            if let d = Double(s) { return .double(d) }
        }
        return .string(s)
    }
}
