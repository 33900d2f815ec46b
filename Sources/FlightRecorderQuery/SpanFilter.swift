public import FlightRecorderOTLP

/// The `where` language of `GET /api/v1/runs?where=` and `flightrec find`. A run matches when
/// one of its spans satisfies the whole expression; the spans that do are returned with it.
///
///     expr       := term { "or" term }
///     term       := factor { "and" factor }
///     factor     := "not" factor | "(" expr ")" | comparison
///     comparison := field op value | field "exists"
///     op         := "=" | "!=" | "<" | "<=" | ">" | ">=" | "~"      (~ is "contains")
///     value      := "string" | number | duration (250ms, 2s, 5m, 1h) | true | false
///
/// Fields are span attribute keys (`gen_ai.tool.name`), `resource.<key>` for resource
/// attributes, and `name`, `status` (OK, ERROR, UNSET), `duration`, `start` (Unix
/// nanoseconds or an RFC 3339 string), `tenant` and `agent.version`. A bare attribute key
/// also falls back to the resource. Keywords are case-insensitive.
///
/// `agent.version` follows the agent metrics' rule (`MetricRules.versionKeys`, configured as
/// `metrics.agent_version_keys`): the first version key on the span, then on its run's root
/// span, then on its resource, then the resource's `service.version`.
///
/// Hand-written recursive descent: the grammar is a dozen lines, and errors must point at a
/// byte position, which no package on this machine's list offers for a custom language.
public indirect enum SpanFilter: Sendable, Equatable {
    case and(SpanFilter, SpanFilter)
    case or(SpanFilter, SpanFilter)
    case not(SpanFilter)
    case compare(field: String, op: Op, value: Literal)
    case exists(field: String)

    public enum Op: String, Sendable, Equatable {
        case eq = "=", ne = "!=", lt = "<", le = "<=", gt = ">", ge = ">=", contains = "~"
    }

    public enum Literal: Sendable, Equatable {
        case string(String)
        case number(Double)
        case bool(Bool)
        /// Nanoseconds, from a duration literal.
        case duration(Int64)
    }

    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        /// 0-based character offset into the expression.
        public var position: Int
        public var message: String
        public var description: String { "at position \(position): \(message)" }
    }

    // MARK: Parsing

    public static func parse(_ text: String) throws(ParseError) -> SpanFilter {
        var p = Parser(chars: Array(text))
        let e = try p.expr()
        p.skipSpace()
        if p.i < p.chars.count {
            throw ParseError(position: p.i, message: "unexpected \"\(p.chars[p.i])\"; expected and, or or the end")
        }
        return e
    }

    struct Parser {
        let chars: [Character]
        var i = 0

        mutating func skipSpace() { while i < chars.count, chars[i].isWhitespace { i += 1 } }

        mutating func keyword(_ word: String) -> Bool {
            skipSpace()
            let w = Array(word)
            guard i + w.count <= chars.count, String(chars[i..<i + w.count]).lowercased() == word else { return false }
            if i + w.count < chars.count, Self.isFieldChar(chars[i + w.count]) { return false }
            i += w.count
            return true
        }

        static func isFieldChar(_ c: Character) -> Bool {
            c.isLetter || c.isNumber || c == "_" || c == "." || c == "-" || c == "/"
        }

        mutating func expr() throws(ParseError) -> SpanFilter {
            var left = try term()
            while keyword("or") { left = .or(left, try term()) }
            return left
        }

        mutating func term() throws(ParseError) -> SpanFilter {
            var left = try factor()
            while keyword("and") { left = .and(left, try factor()) }
            return left
        }

        mutating func factor() throws(ParseError) -> SpanFilter {
            if keyword("not") { return .not(try factor()) }
            skipSpace()
            if i < chars.count, chars[i] == "(" {
                i += 1
                let e = try expr()
                skipSpace()
                guard i < chars.count, chars[i] == ")" else { throw ParseError(position: i, message: "expected \")\"") }
                i += 1
                return e
            }
            return try comparison()
        }

        mutating func comparison() throws(ParseError) -> SpanFilter {
            skipSpace()
            let fieldStart = i
            while i < chars.count, Self.isFieldChar(chars[i]) { i += 1 }
            guard i > fieldStart else {
                throw ParseError(
                    position: fieldStart,
                    message: i < chars.count ? "expected a field name" : "expected a field name, found the end")
            }
            let field = String(chars[fieldStart..<i])
            if keyword("exists") { return .exists(field: field) }
            skipSpace()
            let opStart = i
            var op: Op?
            for candidate in [Op.le, .ge, .ne, .eq, .lt, .gt, .contains] {
                let s = Array(candidate.rawValue)
                if i + s.count <= chars.count, Array(chars[i..<i + s.count]) == s {
                    op = candidate
                    i += s.count
                    break
                }
            }
            guard let op else {
                throw ParseError(
                    position: opStart, message: "expected an operator (=, !=, <, <=, >, >=, ~) or exists after \(field)"
                )
            }
            return .compare(field: field, op: op, value: try literal())
        }

        mutating func literal() throws(ParseError) -> Literal {
            skipSpace()
            let start = i
            guard i < chars.count else { throw ParseError(position: i, message: "expected a value, found the end") }
            if chars[i] == "\"" || chars[i] == "'" {
                let quote = chars[i]
                i += 1
                var out = ""
                while i < chars.count, chars[i] != quote {
                    if chars[i] == "\\", i + 1 < chars.count {
                        i += 1
                    }
                    out.append(chars[i])
                    i += 1
                }
                guard i < chars.count else { throw ParseError(position: start, message: "unterminated string") }
                i += 1
                return .string(out)
            }
            while i < chars.count, Self.isFieldChar(chars[i]) { i += 1 }
            let word = String(chars[start..<i])
            guard !word.isEmpty else { throw ParseError(position: start, message: "expected a value") }
            switch word.lowercased() {
            case "true": return .bool(true)
            case "false": return .bool(false)
            default: break
            }
            if let n = Double(word) { return .number(n) }
            if let d = Self.duration(word) { return .duration(d) }
            throw ParseError(
                position: start, message: "\"\(word)\" is not a value; quote strings, e.g. \"\(word)\"")
        }

        static func duration(_ word: String) -> Int64? {
            let units: [(String, Double)] = [
                ("ns", 1), ("us", 1e3), ("µs", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9),
            ]
            for (suffix, factor) in units where word.hasSuffix(suffix) {
                guard let n = Double(word.dropLast(suffix.count)), n >= 0 else { continue }
                return TimeBound.nanos(n * factor)
            }
            return nil
        }
    }

    // MARK: Evaluation

    /// What `agent.version` reads for a span: the keys, in order, and the version of the
    /// span's run's root span (nil when the root is unknown or names none).
    public struct VersionContext: Sendable {
        public var keys: [String]
        public var runVersion: String?

        public init(keys: [String] = MetricRules.defaultVersionKeys, runVersion: String? = nil) {
            self.keys = keys
            self.runVersion = runVersion
        }
    }

    public func matches(_ span: SpanRecord, version: VersionContext = VersionContext()) -> Bool {
        switch self {
        case .and(let a, let b): return a.matches(span, version: version) && b.matches(span, version: version)
        case .or(let a, let b): return a.matches(span, version: version) || b.matches(span, version: version)
        case .not(let a): return !a.matches(span, version: version)
        case .exists(let field): return Self.value(of: field, in: span, version: version) != nil
        case .compare(let field, let op, let literal):
            guard let v = Self.value(of: field, in: span, version: version) else { return op == .ne }
            return Self.compare(v, op, literal, field: field)
        }
    }

    /// Whether the expression reads `agent.version` (which needs the run's root).
    public var readsAgentVersion: Bool {
        switch self {
        case .and(let a, let b), .or(let a, let b): a.readsAgentVersion || b.readsAgentVersion
        case .not(let a): a.readsAgentVersion
        case .exists(let field), .compare(let field, _, _): field == "agent.version"
        }
    }

    /// The first of `keys` a span's own attributes hold (a root span's is its run's version).
    public static func ownVersion(of span: SpanRecord, keys: [String]) -> String? {
        span.attributes.firstScalar(of: keys)
    }

    enum FieldValue {
        case text(String)
        case number(Double)
        case bool(Bool)
    }

    static func value(of field: String, in span: SpanRecord, version: VersionContext) -> FieldValue? {
        func attr(_ list: [Attribute], _ key: String) -> FieldValue? {
            guard let value = list[key] else { return nil }
            switch value {
            case .int(let n): return .number(Double(n))
            case .double(let d): return .number(d)
            case .bool(let b): return .bool(b)
            default: return .text(value.displayString)
            }
        }
        switch field {
        case "name": return .text(span.name)
        case "status": return .text(span.statusCode.name)
        case "duration": return .number(Double(span.durationNanos))
        case "start": return .number(Double(span.startNanos))
        case "tenant": return .text(span.tenant)
        case "span_id": return .text(span.spanID.hex)
        case "agent":
            let v =
                span.attributes.firstScalar(of: ["gen_ai.agent.name"])
                ?? span.resource.attributes.firstScalar(of: ["gen_ai.agent.name", "service.name"])
            return v.map { .text($0) }
        case "trace_id": return .text(span.traceID.hex)
        case "agent.version":
            let v =
                ownVersion(of: span, keys: version.keys) ?? version.runVersion
                ?? span.resource.attributes.firstScalar(of: version.keys + ["service.version"])
            return v.map { .text($0) }
        default:
            if field.hasPrefix("resource.") { return attr(span.resource.attributes, String(field.dropFirst(9))) }
            return attr(span.attributes, field) ?? attr(span.resource.attributes, field)
        }
    }

    static func compare(_ v: FieldValue, _ op: Op, _ literal: Literal, field: String) -> Bool {
        func order<T: Comparable>(_ a: T, _ b: T) -> Bool {
            switch op {
            case .eq: a == b
            case .ne: a != b
            case .lt: a < b
            case .le: a <= b
            case .gt: a > b
            case .ge: a >= b
            case .contains: false
            }
        }
        switch (v, literal) {
        case (.text(let s), .string(let l)):
            if op == .contains { return s.contains(l) }
            if field == "status" { return order(s.uppercased(), l.uppercased()) }
            if field == "start", let t = TimeLiteral.parse(l), let n = Double(s) { return order(n, Double(t)) }
            return order(s, l)
        case (.number(let n), .string(let l)) where field == "start":
            guard let t = TimeLiteral.parse(l) else { return false }
            return order(n, Double(t))
        case (.number(let n), .number(let l)): return order(n, l)
        case (.number(let n), .duration(let d)): return order(n, Double(d))
        case (.text(let s), .number(let l)): return Double(s).map { order($0, l) } ?? (op == .ne)
        case (.number(let n), .string(let l)): return Double(l).map { order(n, $0) } ?? (op == .ne)
        case (.bool(let b), .bool(let l)): return op == .eq ? b == l : op == .ne ? b != l : false
        case (.bool(let b), .string(let l)): return op == .eq ? String(b) == l : op == .ne ? String(b) != l : false
        default: return op == .ne
        }
    }

    /// Conjunctive `key = "value"` comparisons on `keys`: every matching span carries each of
    /// them, so the index can narrow the candidates to traces that have them all.
    public func requiredEqualities(among keys: Set<String>) -> [(key: String, value: String)] {
        switch self {
        case .and(let a, let b): return a.requiredEqualities(among: keys) + b.requiredEqualities(among: keys)
        case .compare(let field, .eq, .string(let value)) where keys.contains(field): return [(field, value)]
        case .compare(let field, .eq, .number(let n)) where keys.contains(field) && n == n.rounded():
            // Values outside Int64 cannot be stored as integers, so they narrow nothing.
            return TimeBound.nanos(n).map { [(field, String($0))] } ?? []
        default: return []
        }
    }
}

/// RFC 3339 times, Unix nanoseconds or a duration ago (`2h`) in `start` comparisons.
enum TimeLiteral {
    static func parse(_ s: String) -> Int64? { TimeBound.parse(s) }
}
