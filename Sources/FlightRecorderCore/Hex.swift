/// Lowercase hexadecimal, the one encoder every module uses: trace and span IDs, token
/// digests, HMAC outputs, policy tickets.
public enum Hex {
    /// The lowercase digit of `n` (0-15): computed, since a table in a global costs a lazy
    /// initialisation check on every use (`perf`: 0.7 % of an audit verifier's time).
    @inline(__always)
    static func digit(_ n: UInt8) -> UInt8 { n < 10 ? 0x30 + n : 0x57 + n }

    /// Two lowercase digits per byte.
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.underestimatedCount * 2)
        append(bytes, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Two lowercase digits per byte, appended to `out`.
    public static func append(_ bytes: some Sequence<UInt8>, to out: inout [UInt8]) {
        for b in bytes {
            out.append(digit(b >> 4))
            out.append(digit(b & 0xF))
        }
    }

    /// Sixteen digits, big-endian, zero-padded.
    public static func encode(_ value: UInt64) -> String {
        String(unsafeUninitializedCapacity: 16) { out in
            write(value, into: out, at: 0)
            return 16
        }
    }

    /// Thirty-two digits: `high` then `low` (a trace ID).
    public static func encode(_ high: UInt64, _ low: UInt64) -> String {
        String(unsafeUninitializedCapacity: 32) { out in
            write(high, into: out, at: 0)
            write(low, into: out, at: 16)
            return 32
        }
    }

    @inline(__always)
    static func write(_ value: UInt64, into out: UnsafeMutableBufferPointer<UInt8>, at start: Int) {
        var v = value
        for i in stride(from: start + 15, through: start, by: -1) {
            out[i] = digit(UInt8(truncatingIfNeeded: v & 0xF))
            v >>= 4
        }
    }

    /// The bytes of an even-length hex string; nil on any other character.
    public static func decode(_ s: some StringProtocol) -> [UInt8]? {
        let u = Array(s.utf8)
        guard u.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: c - 48
            case 97...102: c - 87
            case 65...70: c - 55
            default: nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity(u.count / 2)
        var i = 0
        while i < u.count {
            guard let h = nibble(u[i]), let l = nibble(u[i + 1]) else { return nil }
            out.append(h << 4 | l)
            i += 2
        }
        return out
    }
}
