import FlightRecorderStorage
import Foundation
import Yams

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
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw ConfigError(key: "", line: Self.line(of: error), reason: "not valid YAML: \(Self.problem(of: error))")
        } catch {
            throw ConfigError(key: "", reason: "not valid YAML")
        }
        var config = DaemonConfiguration()
        guard let root else { return config }
        var r = ConfigReader()
        try r.section(root, path: "") { (r: inout ConfigReader, key: String, value: Node) throws(ConfigError) in
            switch key {
            case "data_dir": config.dataDirectory = try r.string(value, key)
            case "listeners":
                try r.section(value, path: key) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
                    switch k {
                    case "otlp_http": config.otlpHTTP = try r.hostPort(v, "listeners.otlp_http")
                    case "api": config.api = try r.hostPort(v, "listeners.api")
                    case "otlp_http_socket": config.otlpHTTPSocket = try r.string(v, "listeners.otlp_http_socket")
                    case "socket_mode":
                        let text = try r.string(v, "listeners.socket_mode")
                        guard let mode = Int(text, radix: 8), (0...0o777).contains(mode) else {
                            throw r.error(v, "listeners.socket_mode", "expected an octal file mode such as 0660 (got \"\(text)\")")
                        }
                        config.socketMode = mode
                    default: throw r.unknown(v, "listeners.\(k)")
                    }
                }
            case "storage":
                try r.section(value, path: key) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
                    let path = "storage.\(k)"
                    switch k {
                    case "durability":
                        let s = try r.string(v, path)
                        guard let d = StoreConfigurationDurability(rawValue: s) else {
                            throw r.error(v, path, "expected one of fsync, none (got \"\(s)\")")
                        }
                        config.durability = d
                    case "segment_size": config.segmentBytes = try r.bytes(v, path, min: 64 << 10)
                    case "block_size": config.blockBytes = try r.bytes(v, path, min: 4 << 10, max: 64 << 20)
                    case "queue_limit": config.queueBytes = try r.bytes(v, path, min: 1 << 20)
                    default: throw r.unknown(v, path)
                    }
                }
            case "limits":
                try r.section(value, path: key) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
                    switch k {
                    case "max_request_body": config.maxRequestBytes = try r.bytes(v, "limits.max_request_body", min: 1024)
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
            case "log":
                try r.section(value, path: key) { (r: inout ConfigReader, k: String, v: Node) throws(ConfigError) in
                    switch k {
                    case "level":
                        let s = try r.string(v, "log.level")
                        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(s) else {
                            throw r.error(v, "log.level", "expected trace, debug, info, notice, warning, error or critical")
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

    static func line(of error: YamlError) -> Int? {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return mark.line
        default: return nil
        }
    }

    static func problem(of error: YamlError) -> String {
        switch error {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _):
            return problem
        default: return "\(error)"
        }
    }
}

typealias StoreConfigurationDurability = StoreConfiguration.Durability

/// Typed reads from YAML nodes, with errors that carry the node's line.
struct ConfigReader {
    func error(_ node: Node, _ key: String, _ reason: String) -> ConfigError {
        ConfigError(key: key, line: node.mark?.line, reason: reason)
    }

    func unknown(_ node: Node, _ key: String) -> ConfigError {
        error(node, key, "unknown key")
    }

    mutating func section(
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

    func string(_ node: Node, _ key: String) throws(ConfigError) -> String {
        guard case .scalar(let s) = node else { throw error(node, key, "expected a string") }
        return s.string
    }

    func stringList(_ node: Node, _ key: String) throws(ConfigError) -> [String] {
        guard let seq = node.sequence else { throw error(node, key, "expected a list of strings") }
        var out: [String] = []
        for item in seq {
            guard case .scalar(let s) = item, !s.string.isEmpty else { throw error(item, key, "expected a non-empty string") }
            out.append(s.string)
        }
        return out
    }

    func hostPort(_ node: Node, _ key: String) throws(ConfigError) -> HostPort {
        let s = try string(node, key)
        guard let hp = HostPort(s) else { throw error(node, key, "expected HOST:PORT (got \"\(s)\")") }
        return hp
    }

    /// A size in bytes: an integer, or a number with B, KiB, MiB or GiB.
    func bytes(_ node: Node, _ key: String, min: Int = 0, max: Int = Int.max) throws(ConfigError) -> Int {
        let s = try string(node, key).trimmingCharacters(in: .whitespaces)
        guard let n = Self.parseBytes(s) else {
            throw error(node, key, "expected a size such as 1048576, 512KiB, 16MiB or 1GiB (got \"\(s)\")")
        }
        guard n >= min, n <= max else {
            throw error(node, key, "\(s) is out of range (\(min)...\(max == Int.max ? "" : String(max)) bytes)")
        }
        return n
    }

    static func parseBytes(_ s: String) -> Int? {
        let units: [(String, Int)] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)]
        for (suffix, factor) in units where s.hasSuffix(suffix) {
            guard let n = Int(s.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), n >= 0 else { return nil }
            return n.multipliedReportingOverflow(by: factor).overflow ? nil : n * factor
        }
        return Int(s).flatMap { $0 >= 0 ? $0 : nil }
    }
}
