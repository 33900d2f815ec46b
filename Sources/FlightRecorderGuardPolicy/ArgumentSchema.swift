public import FlightRecorderOTLP

/// The JSON Schema subset tool arguments are validated against, server-side, before any
/// policy is evaluated: `type` (object, string, integer, number, boolean, array), `properties`,
/// `required`, `additionalProperties` (false unless set: unknown fields are refused),
/// `enum`, `const`, `minLength`, `maxLength`, `pattern`, `minimum`, `maximum`, `items`,
/// `minItems` and `maxItems`.
///
/// Hand-written: no JSON Schema package is on this machine's list, and a tool catalog needs
/// only this subset, with errors that name the argument path and never echo its value.
public indirect enum ArgumentSchema: Sendable, Equatable {
    case object(properties: [String: ArgumentSchema], required: [String], additional: Bool)
    case string(minLength: Int?, maxLength: Int?, pattern: String?, allowed: [String]?)
    case integer(minimum: Double?, maximum: Double?, allowed: [Int64]?)
    case number(minimum: Double?, maximum: Double?)
    case boolean
    case array(items: ArgumentSchema?, minItems: Int?, maxItems: Int?)
    /// Any JSON value (a property declared without a type).
    case any

    public struct Violation: Sendable, Equatable, CustomStringConvertible {
        /// A JSON path such as `arguments.device.id` or `arguments.tags[2]`.
        public var path: String
        public var reason: String
        public var description: String { "\(path): \(reason)" }
    }

    /// Every violation in `value`, in document order; empty when it is valid.
    public func violations(_ value: JSONValue, path: String = "arguments") -> [Violation] {
        var out: [Violation] = []
        check(value, path: path, into: &out)
        return out
    }

    private func check(_ value: JSONValue, path: String, into out: inout [Violation]) {
        func fail(_ reason: String) { out.append(Violation(path: path, reason: reason)) }
        switch (self, value) {
        case (.any, _):
            return
        case (.object(let properties, let required, let additional), .object(let fields)):
            for name in required where fields[name] == nil || fields[name] == .null {
                out.append(Violation(path: path + "." + name, reason: "is required"))
            }
            for name in fields.keys.sorted() {
                if let schema = properties[name] {
                    if fields[name] != .null || required.contains(name) {
                        schema.check(fields[name]!, path: path + "." + name, into: &out)
                    }
                } else if !additional {
                    out.append(Violation(path: path + "." + name, reason: "is not a known argument"))
                }
            }
        case (.object, _): fail("expected an object")
        case (.string(let minLength, let maxLength, let pattern, let allowed), .string(let s)):
            let n = s.count
            if let minLength, n < minLength { fail("shorter than \(minLength) characters") }
            if let maxLength, n > maxLength { fail("longer than \(maxLength) characters") }
            if let allowed, !allowed.contains(s) { fail("not one of the allowed values") }
            if let pattern, !Self.matches(s, pattern) { fail("does not match the required pattern") }
        case (.string, _): fail("expected a string")
        case (.integer(let minimum, let maximum, let allowed), _):
            guard let n = Self.integer(value) else { return fail("expected an integer") }
            if let minimum, Double(n) < minimum { fail("below the minimum \(minimum)") }
            if let maximum, Double(n) > maximum { fail("above the maximum \(maximum)") }
            if let allowed, !allowed.contains(n) { fail("not one of the allowed values") }
        case (.number(let minimum, let maximum), _):
            guard let d = Self.number(value) else { return fail("expected a number") }
            if let minimum, d < minimum { fail("below the minimum \(minimum)") }
            if let maximum, d > maximum { fail("above the maximum \(maximum)") }
        case (.boolean, .bool): return
        case (.boolean, _): fail("expected true or false")
        case (.array(let items, let minItems, let maxItems), .array(let elements)):
            if let minItems, elements.count < minItems { fail("fewer than \(minItems) items") }
            if let maxItems, elements.count > maxItems { fail("more than \(maxItems) items") }
            if let items {
                for (i, e) in elements.enumerated() { items.check(e, path: "\(path)[\(i)]", into: &out) }
            }
        case (.array, _): fail("expected an array")
        }
    }

    static func integer(_ v: JSONValue) -> Int64? {
        switch v {
        case .int(let i): i
        case .uint(let u): Int64(exactly: u)
        case .double(let d): d == d.rounded() ? Int64(exactly: d) : nil
        default: nil
        }
    }

    static func number(_ v: JSONValue) -> Double? {
        switch v {
        case .int(let i): Double(i)
        case .uint(let u): Double(u)
        case .double(let d): d
        default: nil
        }
    }

    /// Patterns are Swift regular expressions, anchored as JSON Schema's are not: a pattern
    /// matches anywhere unless it uses ^ and $.
    static func matches(_ s: String, _ pattern: String) -> Bool {
        guard let regex = try? Regex(pattern) else { return false }
        return s.contains(regex)
    }
}
