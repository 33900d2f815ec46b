#if canImport(Glibc)
import Glibc
#endif

/// A value that writes itself as JSON, byte for byte what `JSONEncoder` with `.sortedKeys`
/// and `.withoutEscapingSlashes` makes of its `Encodable` form: keys in sorted order, absent
/// optionals omitted, strings escaped the same way. The API answers its largest bodies
/// (a run's graph, a causal path) this way; a test compares both encodings.
public protocol JSONWritable {
    func writeJSON(to w: inout JSONWriter)
}

/// Appends JSON to a byte buffer.
///
/// Hand-written: Foundation's `JSONEncoder` boxes every value through the `Encodable`
/// machinery, which was 40% of the server time of a 200-span graph query, and none of the
/// packages this project may use has a faster encoder. The callers write keys in sorted order.
public struct JSONWriter: JSONOutput, Sendable {
    public private(set) var bytes: [UInt8] = []
    private var nesting = JSONNesting()

    public init(capacity: Int = 4096) { bytes.reserveCapacity(capacity) }

    /// Ends a line of JSON Lines: a newline after a complete top-level value.
    public mutating func endLine() {
        precondition(nesting.depth == 0, "a line ends after a complete value")
        bytes.append(0x0A)
    }

    /// Empties the writer for the next value, keeping its buffer.
    public mutating func reset() {
        bytes.removeAll(keepingCapacity: true)
        nesting.reset()
    }

    public mutating func begin(_ bracket: UInt8) {
        separate()
        bytes.append(bracket)
        nesting.push()
    }

    public mutating func end(_ bracket: UInt8) {
        nesting.pop()
        bytes.append(bracket)
    }

    /// A member's key; its value follows.
    public mutating func key(_ k: StaticString) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        k.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
        // The value is the member's own: no comma before it.
        nesting.setComma(false)
    }

    /// A member's key that is not a literal (a map's key); its value follows.
    public mutating func key(dynamic k: String) {
        string(k)
        bytes.append(UInt8(ascii: ":"))
        nesting.setComma(false)
    }

    public mutating func string(_ s: String) {
        separate()
        var s = s
        s.withUTF8 { escape($0) }
    }

    public mutating func int(_ v: Int64) {
        separate()
        bytes.append(contentsOf: String(v).utf8)
    }

    public mutating func int(_ v: Int) { int(Int64(v)) }

    /// A value already in JSON form (a number's shortest decimal, say), written as is.
    public mutating func raw(_ json: [UInt8]) {
        separate()
        bytes.append(contentsOf: json)
    }

    public mutating func bool(_ v: Bool) {
        separate()
        bytes.append(contentsOf: (v ? "true" : "false").utf8)
    }

    public mutating func value(_ v: some JSONWritable) { v.writeJSON(to: &self) }

    // Members: key and value; the optional forms omit absent values, as `encodeIfPresent` does.

    public mutating func member(_ k: StaticString, _ v: String) {
        key(k)
        string(v)
    }

    public mutating func member(_ k: StaticString, _ v: String?) {
        guard let v else { return }
        member(k, v)
    }

    public mutating func member(_ k: StaticString, _ v: Int64) {
        key(k)
        int(v)
    }

    public mutating func member(_ k: StaticString, _ v: Int64?) {
        guard let v else { return }
        member(k, v)
    }

    public mutating func member(_ k: StaticString, _ v: Int) { member(k, Int64(v)) }

    public mutating func member(_ k: StaticString, _ v: some JSONWritable) {
        key(k)
        v.writeJSON(to: &self)
    }

    public mutating func member<T: JSONWritable>(_ k: StaticString, _ v: T?) {
        guard let v else { return }
        member(k, v)
    }

    public mutating func member(_ k: StaticString, _ v: Bool?) {
        guard let v else { return }
        key(k)
        bool(v)
    }

    public mutating func member(_ k: StaticString, _ vs: [String]) {
        key(k)
        beginArray()
        for v in vs { string(v) }
        endArray()
    }

    public mutating func member<T: JSONWritable>(_ k: StaticString, _ vs: [T]) {
        key(k)
        beginArray()
        for v in vs { v.writeJSON(to: &self) }
        endArray()
    }

    public mutating func member<T: JSONWritable>(_ k: StaticString, _ vss: [[T]]) {
        key(k)
        beginArray()
        for vs in vss {
            beginArray()
            for v in vs { v.writeJSON(to: &self) }
            endArray()
        }
        endArray()
    }

    private mutating func separate() {
        if nesting.separate() { bytes.append(UInt8(ascii: ",")) }
    }

    /// As Foundation's JSON writer escapes: quote, backslash, and control characters (the
    /// common ones by letter, the rest as `\u00XX`); `/` and non-ASCII stay as they are.
    private mutating func escape(_ s: UnsafeBufferPointer<UInt8>) {
        bytes.append(UInt8(ascii: "\""))
        // Most strings need no escape at all: checked eight bytes at a time, and copied whole.
        guard Self.needsEscape(s) else {
            bytes.append(contentsOf: s)
            bytes.append(UInt8(ascii: "\""))
            return
        }
        Self.escaped(s) { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "\""))
    }

    /// `s` as a JSON string's content (without its quotes), given to `emit` in pieces: runs
    /// that need no escape, and each escape. The one statement of the escaping rules, shared
    /// with `JSONMatcher`, which compares the pieces in place.
    @inline(__always)
    static func escaped(_ s: UnsafeBufferPointer<UInt8>, _ emit: (UnsafeRawBufferPointer) -> Void) {
        let raw = UnsafeRawBufferPointer(s)
        var start = 0
        var sequence: UInt64 = 0
        for i in 0..<s.count {
            let c = s[i]
            guard c < 0x20 || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") else { continue }
            if i > start { emit(UnsafeRawBufferPointer(rebasing: raw[start..<i])) }
            start = i + 1
            withUnsafeMutableBytes(of: &sequence) { b in
                b[0] = UInt8(ascii: "\\")
                var n = 2
                switch c {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): b[1] = c
                case 0x08: b[1] = UInt8(ascii: "b")
                case 0x0C: b[1] = UInt8(ascii: "f")
                case 0x0A: b[1] = UInt8(ascii: "n")
                case 0x0D: b[1] = UInt8(ascii: "r")
                case 0x09: b[1] = UInt8(ascii: "t")
                default:
                    b[1] = UInt8(ascii: "u")
                    b[2] = 0x30
                    b[3] = 0x30
                    b[4] = Hex.digit(c >> 4)
                    b[5] = Hex.digit(c & 0xF)
                    n = 6
                }
                emit(UnsafeRawBufferPointer(rebasing: b[..<n]))
            }
        }
        if start < s.count { emit(UnsafeRawBufferPointer(rebasing: raw[start..<s.count])) }
    }

    /// A NUL-terminated C string, written as `string(String(cString:))` writes it: ASCII
    /// straight from its bytes (the common case, no `String` made), anything else through
    /// `String`, which repairs invalid UTF-8 the same way it always has.
    public mutating func string(cString p: UnsafePointer<CChar>) {
        let s = UnsafeBufferPointer(
            start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: strlen(p))
        guard Self.isASCII(s) else { return string(String(cString: p)) }
        separate()
        escape(s)
    }

    /// `bytes` as a string of two lowercase hex digits per byte (an OTLP/JSON trace or span ID).
    public mutating func hexString(_ b: UnsafeBufferPointer<UInt8>) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        Hex.append(b, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }

    /// 64-bit values as one JSON string of 16 lowercase hex digits each, big-endian (a span ID
    /// is one value, a trace ID two): `string(Hex.encode(...))` without making the string.
    public mutating func hexString(_ values: UInt64...) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        for v in values {
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 16) { out in
                Hex.write(v, into: out, at: 0)
                bytes.append(contentsOf: out)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// An RFC 3339 UTC time with nanoseconds as a JSON string: `string(Timestamp.rfc3339(nanos))`
    /// without making the string.
    public mutating func timestamp(_ nanos: UInt64) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        Timestamp.rfc3339(nanos, into: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }

    /// An unsigned integer as a JSON string (OTLP/JSON's 64-bit integers).
    public mutating func decimalString(_ v: UInt64) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        if v == 0 {
            bytes.append(0x30)
        } else {
            var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // up to 20 digits, most significant first
            var n = 0
            var x = v
            withUnsafeMutableBytes(of: &digits) { d in
                while x > 0 {
                    d[23 - n] = UInt8(truncatingIfNeeded: x % 10) + 0x30
                    x /= 10
                    n += 1
                }
                bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: d[(24 - n)...]))
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// Whether a byte of `s` is a quote, a backslash or a control character (what `escape`
    /// rewrites). Eight bytes at a time: for a word `x`, `(x - 0x01…01 * n) & ~x & 0x80…80` is
    /// non-zero exactly when a byte of `x` is below `n` (for `n` at most 128), and a byte
    /// equal to `c` is a zero byte of `x ^ (0x01…01 * c)`.
    static func needsEscape(_ s: UnsafeBufferPointer<UInt8>) -> Bool {
        let (ones, highs): (UInt64, UInt64) = (0x0101_0101_0101_0101, 0x8080_8080_8080_8080)
        @inline(__always) func below(_ x: UInt64, _ n: UInt64) -> Bool { (x &- ones &* n) & ~x & highs != 0 }
        var i = 0
        let raw = UnsafeRawBufferPointer(s)
        while i + 8 <= s.count {
            let x = raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            if below(x, 0x20) || below(x ^ (ones &* 0x22), 1) || below(x ^ (ones &* 0x5C), 1) { return true }
            i += 8
        }
        while i < s.count {
            let c = s[i]
            if c < 0x20 || c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") { return true }
            i += 1
        }
        return false
    }

    static func isASCII(_ s: UnsafeBufferPointer<UInt8>) -> Bool {
        var i = 0
        let raw = UnsafeRawBufferPointer(s)
        while i + 8 <= s.count {
            if raw.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 != 0 { return false }
            i += 8
        }
        while i < s.count {
            if s[i] >= 0x80 { return false }
            i += 1
        }
        return true
    }
}

/// Where a JSON value stands among its containers: whether the next member or element needs a
/// comma before it, per open container. The innermost 64 as bits of `commas` (bit 0 the
/// innermost), the outer ones beyond those in `deeper` (a bit stack: no array work per value
/// at ordinary depths). Kept alike by the writer and the matcher.
struct JSONNesting: Sendable {
    private var commas: UInt64 = 0
    private(set) var depth = 0
    private var deeper: [Bool] = []

    mutating func reset() {
        (commas, depth) = (0, 0)
        deeper.removeAll(keepingCapacity: true)
    }

    mutating func push() {
        if depth >= 64 { deeper.append(commas >> 63 != 0) }
        commas <<= 1  // the new container's bit starts clear
        depth += 1
    }

    mutating func pop() {
        depth -= 1
        commas >>= 1
        if depth >= 64 { commas |= (deeper.removeLast() ? 1 : 0) << 63 }
    }

    mutating func setComma(_ on: Bool) {
        if on { commas |= 1 } else { commas &= ~1 }
    }

    /// Before a value: whether a comma goes first (the innermost container's bit, then set).
    mutating func separate() -> Bool {
        guard depth > 0 else { return false }
        defer { commas |= 1 }
        return commas & 1 != 0
    }
}

/// What a JSON encoder writes through: `JSONWriter` appends the bytes, `JSONMatcher` compares
/// them with bytes already written (an audit bundle's lines, which a verifier only checks).
public protocol JSONOutput {
    /// Opens an object or array (`{` or `[`), after a comma where one is due.
    mutating func begin(_ bracket: UInt8)
    /// Closes the innermost one (`}` or `]`).
    mutating func end(_ bracket: UInt8)
    mutating func key(_ k: StaticString)
    mutating func string(_ s: String)
    mutating func string(cString p: UnsafePointer<CChar>)
    mutating func hexString(_ b: UnsafeBufferPointer<UInt8>)
    mutating func decimalString(_ v: UInt64)
    mutating func int(_ v: Int64)
    mutating func bool(_ v: Bool)
    mutating func raw(_ json: [UInt8])
}

extension JSONOutput {
    @inlinable public mutating func beginObject() { begin(UInt8(ascii: "{")) }
    @inlinable public mutating func endObject() { end(UInt8(ascii: "}")) }
    @inlinable public mutating func beginArray() { begin(UInt8(ascii: "[")) }
    @inlinable public mutating func endArray() { end(UInt8(ascii: "]")) }
}
