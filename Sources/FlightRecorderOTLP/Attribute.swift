import Foundation

/// An OTLP attribute value, decoded for the query path.
public indirect enum AttributeValue: Sendable, Equatable {
    case string(String)
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case bytes([UInt8])
    case array([AttributeValue])
    case kvlist([Attribute])
    case empty

    /// Strings and integers as run IDs use them.
    public var scalarString: String? {
        switch self {
        case .string(let s): s.isEmpty ? nil : s
        case .int(let i): String(i)
        default: nil
        }
    }

    /// A short human form for the CLI tree.
    public var displayString: String {
        switch self {
        case .string(let s): s
        case .bool(let b): String(b)
        case .int(let i): String(i)
        case .double(let d): String(d)
        case .bytes(let b): Data(b).base64EncodedString()
        case .array(let a): "[" + a.map(\.displayString).joined(separator: ", ") + "]"
        case .kvlist(let kv): "{" + kv.map { "\($0.key): \($0.value.displayString)" }.joined(separator: ", ") + "}"
        case .empty: ""
        }
    }
}

public struct Attribute: Sendable, Equatable {
    public var key: String
    public var value: AttributeValue

    public init(_ key: String, _ value: AttributeValue) {
        self.key = key
        self.value = value
    }
}

/// Keys asked together of many attribute lists (`values(of:into:)`), their lengths worked out
/// once.
public struct AttributeKeys: Sendable {
    let keys: [String]
    let lengths: [Int]

    public init(_ keys: [String]) {
        self.keys = keys
        lengths = keys.map(\.utf8.count)
    }
}

extension [Attribute] {
    /// The value of the first attribute named `key`. A key of another length is passed over on
    /// its byte count alone (stored, for native strings), with no comparison of its bytes:
    /// exports, findings and run resolution ask this of every span, several times. Keys are
    /// matched by their UTF-8 bytes, as the index matches them (two spellings of one Unicode
    /// string, composed and decomposed, are different keys).
    public subscript(key: String) -> AttributeValue? {
        let n = key.utf8.count
        // By index, each element read in place (a `for a in self` copy retains its parts).
        for i in indices where self[i].key.utf8.count == n && self[i].key == key { return self[i].value }
        return nil
    }

    /// The value of each of `keys` (the first attribute of that name, as `self[key]` reads),
    /// in their order, into `found` (made to fit): one pass over the attributes for all the
    /// keys instead of a scan per key, for code that asks several of many spans. `found` is
    /// the caller's, reused from one list to the next.
    public func values(of keys: AttributeKeys, into found: inout [AttributeValue?]) {
        if found.count != keys.keys.count {
            found = [AttributeValue?](repeating: nil, count: keys.keys.count)
        } else {
            for k in found.indices { found[k] = nil }
        }
        withUnsafeBufferPointer { a in
            for j in a.indices {
                let n = a[j].key.utf8.count
                for k in keys.keys.indices where found[k] == nil && keys.lengths[k] == n && a[j].key == keys.keys[k] {
                    found[k] = a[j].value
                    break
                }
            }
        }
    }

    /// The scalar value (`scalarString`) of the first of `keys`, in their order, that these
    /// attributes hold: how the agent version and task type are read.
    public func firstScalar(of keys: [String]) -> String? {
        for k in keys { if let v = self[k]?.scalarString { return v } }
        return nil
    }
}

// The query API shows attributes as a JSON object, values in their natural JSON type. Its
// clients (the CLI) read them back: bytes arrive as their base64 string, so they decode as a
// string, and an integer-valued double as an integer; nothing else changes.
extension AttributeValue: Codable {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .empty
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int64.self) {
            self = .int(i)
        } else if let d = try? c.decode(Double.self) {
            self = .double(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([AttributeValue].self) {
            self = .array(a)
        } else {
            self = .kvlist(try c.decode(AttributeMap.self).attributes)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .string(let s): try c.encode(s)
        case .bool(let b): try c.encode(b)
        case .int(let i): try c.encode(i)
        case .double(let d): if d.isFinite { try c.encode(d) } else { try c.encode(String(d)) }
        case .bytes(let b): try c.encode(Data(b).base64EncodedString())
        case .array(let a): try c.encode(a)
        case .kvlist(let kv): try c.encode(AttributeMap(kv))
        case .empty: try c.encodeNil()
        }
    }
}

/// Encodes attributes as one JSON object, keeping their order (decoded: sorted by key).
public struct AttributeMap: Codable, Sendable {
    public var attributes: [Attribute]

    public init(_ attributes: [Attribute]) { self.attributes = attributes }

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        for a in attributes { try c.encode(a.value, forKey: Key(stringValue: a.key)) }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        attributes = try c.allKeys.sorted { $0.stringValue < $1.stringValue }.map {
            Attribute($0.stringValue, try c.decode(AttributeValue.self, forKey: $0))
        }
    }
}
