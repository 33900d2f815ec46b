import FlightRecorderIngest
import FlightRecorderOTLP
import Foundation
package import Yams

extension DaemonConfiguration {
    /// Loads `path` over the defaults. Unknown keys and bad values are errors naming the key
    /// and line, so a typo never silently falls back to a default.
    public static func load(path: String) throws(ConfigError) -> DaemonConfiguration {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8)
        else {
            throw ConfigError(key: "", file: path, reason: "cannot read the config file")
        }
        do {
            return try parse(yaml: text, file: path)
        } catch var error {
            error.file = path
            throw error
        }
    }

    public static func parse(yaml text: String, file: String? = nil) throws(ConfigError) -> DaemonConfiguration {
        try parse(root: try ConfigReader.compose(text))
    }

    /// The configuration in a composed YAML document (nil: an empty file, every default).
    package static func parse(root: Node?) throws(ConfigError) -> DaemonConfiguration {
        var config = DaemonConfiguration()
        guard let root else { return config }
        var r = ConfigReader()
        try r.section(root, path: "") { (r: inout ConfigReader, key: String, value: Node) throws(ConfigError) in
            switch key {
            case "data_dir": config.dataDirectory = try r.string(value, key)
            case "listeners":
                try r.section(value, path: key) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
                    switch k {
                    case "otlp_grpc": config.otlpGRPC = try r.optionalHostPort(v, "listeners.otlp_grpc")
                    case "otlp_http": config.otlpHTTP = try r.optionalHostPort(v, "listeners.otlp_http")
                    case "api": config.api = try r.hostPort(v, "listeners.api")
                    case "otlp_grpc_socket": config.otlpGRPCSocket = try r.string(v, "listeners.otlp_grpc_socket")
                    case "otlp_http_socket": config.otlpHTTPSocket = try r.string(v, "listeners.otlp_http_socket")
                    case "tls": config.tls = try r.tls(v)
                    case "socket_mode":
                        let text = try r.string(v, "listeners.socket_mode")
                        guard let mode = Int(text, radix: 8), (0...0o777).contains(mode) else {
                            throw r.error(
                                v, "listeners.socket_mode", "expected an octal file mode such as 0660 (got \"\(text)\")"
                            )
                        }
                        config.socketMode = mode
                    case "shutdown_grace":
                        config.shutdownGraceSeconds = try r.number(v, "listeners.shutdown_grace", min: 0)
                    default: throw r.unknown(v, "listeners.\(k)")
                    }
                }
            case "storage":
                try r.section(value, path: key) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
                    let path = "storage.\(k)"
                    switch k {
                    case "durability":
                        let s = try r.string(v, path)
                        guard let d = DaemonConfiguration.Durability(rawValue: s) else {
                            throw r.error(v, path, "expected one of fsync, none (got \"\(s)\")")
                        }
                        config.durability = d
                    case "compression":
                        let s = try r.string(v, path)
                        guard let c = DaemonConfiguration.Compression(rawValue: s) else {
                            throw r.error(v, path, "expected one of zstd, lz4 (got \"\(s)\")")
                        }
                        config.compression = c
                    case "segment_size": config.segmentBytes = try r.bytes(v, path, min: 64 << 10, max: 4 << 30)
                    case "block_size": config.blockBytes = try r.bytes(v, path, min: 4 << 10, max: 64 << 20)
                    case "queue_limit": config.queueBytes = try r.bytes(v, path, min: 1 << 20)
                    default: throw r.unknown(v, path)
                    }
                }
            case "limits":
                try r.section(value, path: key) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
                    switch k {
                    case "max_request_body":
                        config.maxRequestBytes = try r.bytes(v, "limits.max_request_body", min: 1024)
                    case "max_spans_per_request":
                        config.limits.maxSpansPerRequest = try r.integer(v, "limits.max_spans_per_request", min: 1)
                    case "max_attributes_per_span":
                        config.limits.maxAttributesPerSpan = try r.integer(v, "limits.max_attributes_per_span", min: 1)
                    case "max_attribute_value_length":
                        config.limits.maxAttributeValueBytes = try r.bytes(
                            v, "limits.max_attribute_value_length", min: 16)
                    case "rate_limit": config.rateLimit = try r.rateLimit(v)
                    default: throw r.unknown(v, "limits.\(k)")
                    }
                }
            case "runs":
                try r.section(value, path: key) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
                    switch k {
                    case "id_keys":
                        let keys = try r.stringList(v, "runs.id_keys")
                        guard !keys.isEmpty else { throw r.error(v, "runs.id_keys", "needs at least one key") }
                        config.runIDKeys = keys
                    default: throw r.unknown(v, "runs.\(k)")
                    }
                }
            case "redaction": config.redaction = try r.redaction(value)
            case "index":
                try r.section(value, path: key) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
                    switch k {
                    case "external_id_keys": config.externalIDKeys = try r.stringList(v, "index.external_id_keys")
                    case "attribute_keys": config.searchKeys = try r.stringList(v, "index.attribute_keys")
                    default: throw r.unknown(v, "index.\(k)")
                    }
                }
            case "metrics": config.metrics = try r.metrics(value)
            case "findings": config.findings = try r.findings(value)
            case "evidence":
                try r.section(value, path: key) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
                    let path = "evidence.\(k)"
                    switch k {
                    case "enabled": config.evidence.enabled = try r.bool(v, path)
                    case "signing_key": config.evidence.signingKey = try r.string(v, path)
                    case "checkpoint_interval":
                        config.evidence.checkpointIntervalSeconds = try r.seconds(v, path, min: 1)
                    default: throw r.unknown(v, path)
                    }
                }
            case "retention": config.retention = try r.retention(value)
            case "auth":
                try r.section(value, path: key) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
                    switch k {
                    case "tokens": config.tokens = try r.tokens(v)
                    default: throw r.unknown(v, "auth.\(k)")
                    }
                }
            case "log":
                try r.section(value, path: key) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
                    switch k {
                    case "level":
                        let s = try r.string(v, "log.level")
                        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(s) else {
                            throw r.error(
                                v, "log.level", "expected trace, debug, info, notice, warning, error or critical")
                        }
                        config.logLevel = s
                    default: throw r.unknown(v, "log.\(k)")
                    }
                }
            default: throw r.unknown(value, key)
            }
        }
        return config
    }

}

/// Typed reads from YAML nodes, with errors that carry the node's line.
package struct ConfigReader {
    package init() {}

    /// The YAML document in `text`; a syntax error names its line and the problem (never
    /// the text around it, which may hold a secret).
    package static func compose(_ text: String) throws(ConfigError) -> Node? {
        do {
            return try Yams.compose(yaml: text)
        } catch let error as YamlError {
            switch error {
            case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _),
                .composer(_, let problem, let mark, _):
                throw ConfigError(key: "", line: mark.line, reason: "not valid YAML: \(problem)")
            default:
                throw ConfigError(key: "", reason: "not valid YAML")
            }
        } catch {
            throw ConfigError(key: "", reason: "not valid YAML")
        }
    }

    package func error(_ node: Node, _ key: String, _ reason: String) -> ConfigError {
        ConfigError(key: key, line: node.mark?.line, reason: reason)
    }

    package func unknown(_ node: Node, _ key: String) -> ConfigError {
        error(node, key, "unknown key")
    }

    package mutating func section(
        _ node: Node, path: String, _ body: (inout ConfigReader, String, Node) throws(ConfigError) -> Void
    ) throws(ConfigError) {
        guard let mapping = node.mapping else {
            throw error(node, path.isEmpty ? "(top level)" : path, "expected a mapping of keys to values")
        }
        var seen: Set<String> = []
        for (k, v) in mapping {
            guard let key = k.string else { throw error(k, path, "keys must be strings") }
            guard seen.insert(key).inserted else {
                throw error(k, path.isEmpty ? key : "\(path).\(key)", "duplicate key")
            }
            // Report unknown keys at the key's own line.
            do throws(ConfigError) {
                try body(&self, key, v)
            } catch var e {
                let fullKey = path.isEmpty ? key : "\(path).\(key)"
                if e.reason == "unknown key" && e.key == fullKey { e.line = k.mark?.line ?? e.line }
                throw e
            }
        }
    }

    package func string(_ node: Node, _ key: String) throws(ConfigError) -> String {
        guard case .scalar(let s) = node else { throw error(node, key, "expected a string") }
        return s.string
    }

    package func stringList(_ node: Node, _ key: String) throws(ConfigError) -> [String] {
        guard let seq = node.sequence else { throw error(node, key, "expected a list of strings") }
        var out: [String] = []
        for item in seq {
            guard case .scalar(let s) = item, !s.string.isEmpty else {
                throw error(item, key, "expected a non-empty string")
            }
            out.append(s.string)
        }
        return out
    }

    package func integer(_ node: Node, _ key: String, min: Int = 0, max: Int = Int.max) throws(ConfigError) -> Int {
        let s = try string(node, key)
        guard let n = Int(s) else { throw error(node, key, "expected an integer (got \"\(s)\")") }
        guard n >= min, n <= max else {
            throw error(node, key, "\(n) is out of range (\(min)...\(max == Int.max ? "" : String(max)))")
        }
        return n
    }

    package func number(_ node: Node, _ key: String, min: Double) throws(ConfigError) -> Double {
        let s = try string(node, key)
        guard let n = Double(s), n.isFinite else { throw error(node, key, "expected a number (got \"\(s)\")") }
        guard n >= min else { throw error(node, key, "must be at least \(min)") }
        return n
    }

    /// `HOST:PORT`, or `off` to disable the listener.
    package func optionalHostPort(_ node: Node, _ key: String) throws(ConfigError) -> HostPort? {
        if case .scalar(let s) = node, ["off", "false", "none"].contains(s.string.lowercased()) { return nil }
        return try hostPort(node, key)
    }

    package mutating func tls(_ node: Node) throws(ConfigError) -> TLSFiles {
        var cert: String?
        var key: String?
        try section(node, path: "listeners.tls") { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
            let path = "listeners.tls.\(k)"
            switch k {
            case "cert_file", "key_file":
                let file = try r.string(v, path)
                guard FileManager.default.isReadableFile(atPath: file) else {
                    throw r.error(v, path, "cannot read \(file)")
                }
                if k == "cert_file" { cert = file } else { key = file }
            default: throw r.unknown(v, path)
            }
        }
        guard let cert, let key else {
            throw error(node, "listeners.tls", "needs both cert_file and key_file (PEM)")
        }
        return TLSFiles(certificateChain: cert, privateKey: key)
    }

    mutating func findings(_ node: Node) throws(ConfigError) -> FindingRules {
        var f = FindingRules()
        try section(node, path: "findings") { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
            let path = "findings.\(k)"
            switch k {
            case "loop_repeats": f.loopRepeats = try r.integer(v, path, min: 2, max: 1_000_000)
            case "step_budget": f.stepBudget = try r.integer(v, path, min: 0, max: 100_000_000)
            default: throw r.unknown(v, path)
            }
        }
        return f
    }

    package mutating func metrics(_ node: Node) throws(ConfigError) -> MetricsSettings {
        var m = MetricsSettings()
        try section(node, path: "metrics") { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
            let path = "metrics.\(k)"
            switch k {
            case "enabled": m.enabled = try r.bool(v, path)
            case "agent_version_keys": m.versionKeys = try r.stringList(v, path)
            case "task_type_keys": m.taskTypeKeys = try r.stringList(v, path)
            case "max_series_per_family": m.maxSeriesPerFamily = try r.integer(v, path, min: 1, max: 1_000_000)
            case "series_ttl": m.seriesTTLSeconds = try r.seconds(v, path, min: 1)
            case "run_settle": m.runSettleSeconds = try r.seconds(v, path, min: 0)
            case "prices":
                try r.section(v, path: path) { (r: inout ConfigReader, model: String, p: Node) throws(ConfigError) in
                    var input: Double?
                    var output: Double?
                    let pricePath = "\(path).\(model)"
                    try r.section(p, path: pricePath) {
                        (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
                        switch k {
                        case "input": input = try r.number(v, "\(pricePath).input", min: 0)
                        case "output": output = try r.number(v, "\(pricePath).output", min: 0)
                        default: throw r.unknown(v, "\(pricePath).\(k)")
                        }
                    }
                    guard let input, let output else {
                        throw r.error(p, pricePath, "needs input and output (US dollars per million tokens)")
                    }
                    m.prices[model] = MetricRules.Price(input: input, output: output)
                }
            default: throw r.unknown(v, path)
            }
        }
        return m
    }

    /// Seconds: a number, or a number with a unit (`500ms`, `30s`, `5m`, `2h`, `7d`).
    package func seconds(_ node: Node, _ key: String, min: Double) throws(ConfigError) -> Double {
        let s = try string(node, key)
        guard let n = Self.parseSeconds(s) else {
            throw error(node, key, "expected a duration such as 30s, 5m or 2h (got \"\(s)\")")
        }
        guard n >= min else { throw error(node, key, "must be at least \(min) seconds") }
        return n
    }

    package static func parseSeconds(_ s: String) -> Double? {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
        for (suffix, scale) in units where s.hasSuffix(suffix) {
            // "ms" before "s", "m": the first unit that parses wins.
            if let n = Double(s.dropLast(suffix.count)), n.isFinite { return n * scale }
        }
        if let n = Double(s), n.isFinite { return n }
        return nil
    }

    package mutating func rateLimit(_ node: Node) throws(ConfigError) -> RateLimit {
        var rate: Double?
        var burst: Double?
        try section(node, path: "limits.rate_limit") {
            (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
            let path = "limits.rate_limit.\(k)"
            switch k {
            case "spans_per_second": rate = try r.number(v, path, min: 1)
            case "burst": burst = try r.number(v, path, min: 1)
            default: throw r.unknown(v, path)
            }
        }
        guard let rate else { throw error(node, "limits.rate_limit", "needs spans_per_second") }
        return RateLimit(spansPerSecond: rate, burst: burst ?? rate)
    }

    /// `auth.tokens`: a list of `{name, sha256, tenant | tenants, roles}`.
    package mutating func tokens(_ node: Node) throws(ConfigError) -> [AccessToken] {
        guard let seq = node.sequence else { throw error(node, "auth.tokens", "expected a list of tokens") }
        var out: [AccessToken] = []
        var digests: Set<String> = []
        for (i, item) in seq.enumerated() {
            let base = "auth.tokens[\(i)]"
            var name = "token \(i)"
            var digest: String?
            var tenants: [String] = []
            var roles: Set<Role> = []
            try section(item, path: base) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
                let path = "\(base).\(k)"
                switch k {
                case "name": name = try r.string(v, path)
                case "sha256":
                    let d = try r.string(v, path).lowercased()
                    guard d.utf8.count == 64, d.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) })
                    else {
                        throw r.error(
                            v, path,
                            "expected the 64-hex-digit SHA-256 of the token (flightrec token hash), never the token")
                    }
                    guard digests.insert(d).inserted else { throw r.error(v, path, "duplicate token digest") }
                    digest = d
                case "tenant": tenants = [try r.string(v, path)]
                case "tenants": tenants = try r.stringList(v, path)
                case "roles":
                    for roleName in try r.stringList(v, path) {
                        guard let role = Role(rawValue: roleName) else {
                            throw r.error(
                                v, path, "unknown role \"\(roleName)\"; expected one of \(Role.names)")
                        }
                        roles.insert(role)
                    }
                default: throw r.unknown(v, path)
                }
            }
            guard let digest else { throw error(item, base, "needs sha256") }
            guard !tenants.isEmpty else { throw error(item, base, "needs tenant or tenants") }
            for t in tenants where t != "*" {
                guard t.utf8.count <= 128, !t.contains(where: { $0.isNewline || $0 == "\u{0}" }) else {
                    throw error(item, base, "tenant names are 1 to 128 characters, one line")
                }
            }
            guard !roles.isEmpty else { throw error(item, base, "needs roles (\(Role.names))") }
            if roles.contains(.ingest) && (tenants.count != 1 || tenants[0] == "*") {
                throw error(
                    item, base, "an ingest token needs exactly one tenant: it is stamped on every span it sends")
            }
            out.append(AccessToken(name: name, sha256: digest, tenants: tenants, roles: roles))
        }
        return out
    }

    package func hostPort(_ node: Node, _ key: String) throws(ConfigError) -> HostPort {
        let s = try string(node, key)
        guard let hp = HostPort(s) else { throw error(node, key, "expected HOST:PORT (got \"\(s)\")") }
        return hp
    }

    /// A size in bytes: an integer, or a number with B, KiB, MiB or GiB.
    package func bytes(_ node: Node, _ key: String, min: Int = 0, max: Int = Int.max) throws(ConfigError) -> Int {
        let s = try string(node, key).trimmingCharacters(in: .whitespaces)
        guard let n = Self.parseBytes(s) else {
            throw error(node, key, "expected a size such as 1048576, 512KiB, 16MiB or 1GiB (got \"\(s)\")")
        }
        guard n >= min, n <= max else {
            throw error(node, key, "\(s) is out of range (\(min)...\(max == Int.max ? "" : String(max)) bytes)")
        }
        return n
    }

    /// `retention:`: `max_age`, `max_bytes`, `floor`, `tenants: {NAME: {max_age}}`, `seal_after` and
    /// `check_interval`; no age below the floor, each error at its own key and line.
    package mutating func retention(_ node: Node) throws(ConfigError) -> RetentionSettings {
        var out = RetentionSettings()
        var ages: [(key: String, node: Node, seconds: Double)] = []
        var floorNode: Node?
        try section(node, path: "retention") { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
            let path = "retention.\(k)"
            switch k {
            case "max_age":
                let s = try r.age(v, path, min: 1)
                out.maxAgeSeconds = s
                ages.append((path, v, s))
            case "floor":
                out.floorSeconds = try r.age(v, path, min: 0)
                floorNode = v
            case "max_bytes": out.maxBytes = Int64(try r.bytes(v, path, min: 1 << 20))
            case "seal_after": out.sealAfterSeconds = try r.seconds(v, path, min: 1)
            case "check_interval": out.checkIntervalSeconds = try r.seconds(v, path, min: 1)
            case "tenants":
                try r.section(v, path: path) { (r: inout ConfigReader, tenant: String, t: Node) throws(ConfigError) in
                    let tenantPath = "\(path).\(tenant)"
                    var age: Double?
                    try r.section(t, path: tenantPath) {
                        (r: inout ConfigReader, tk: String, tv: Node) throws(ConfigError) in
                        switch tk {
                        case "max_age":
                            let s = try r.age(tv, "\(tenantPath).max_age", min: 1)
                            age = s
                            ages.append(("\(tenantPath).max_age", tv, s))
                        default: throw r.unknown(tv, "\(tenantPath).\(tk)")
                        }
                    }
                    guard let age else { throw r.error(t, tenantPath, "needs max_age") }
                    out.tenantMaxAgeSeconds[tenant] = age
                }
            default: throw r.unknown(v, path)
            }
        }
        for a in ages where a.seconds < out.floorSeconds {
            throw error(
                a.node, a.key,
                "\(Self.describe(seconds: a.seconds)) is below retention.floor "
                    + "(\(Self.describe(seconds: out.floorSeconds))): nothing may expire before the floor")
        }
        if let floorNode, !out.expires {
            throw error(
                floorNode, "retention.floor",
                "a floor needs retention.max_age, a tenant's max_age or retention.max_bytes")
        }
        return out
    }

    /// A retention age: a duration with its unit. A bare number would be seconds, and
    /// `max_age: 180` meant as days would delete everything within minutes, so it is refused.
    mutating func age(_ node: Node, _ key: String, min: Double) throws(ConfigError) -> Double {
        let s = try string(node, key)
        if s != "0", let last = s.unicodeScalars.last, !CharacterSet.letters.contains(last) {
            throw error(node, key, "give the age with its unit, such as 180d, 12h or 30m (got \"\(s)\")")
        }
        return try seconds(node, key, min: min)
    }

    static func describe(seconds s: Double) -> String {
        for (unit, scale) in [("d", 86400.0), ("h", 3600), ("m", 60)]
        where s >= scale && s.truncatingRemainder(dividingBy: scale) == 0 {
            return "\(Int(s / scale))\(unit)"
        }
        return s == s.rounded() ? "\(Int(s))s" : "\(s)s"
    }

    package static func parseBytes(_ s: String) -> Int? {
        let units: [(String, Int)] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)]
        for (suffix, factor) in units where s.hasSuffix(suffix) {
            guard let n = Int(s.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), n >= 0 else { return nil }
            return n.multipliedReportingOverflow(by: factor).overflow ? nil : n * factor
        }
        return Int(s).flatMap { $0 >= 0 ? $0 : nil }
    }
}
