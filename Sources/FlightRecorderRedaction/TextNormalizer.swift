/// Undoes the disguises that let a detected form slip past the byte scan, keeping where each
/// normalized byte came from so a match masks the original bytes:
/// - one level of percent-encoding (`jane%40example.com`)
/// - JSON escapes `\uXXXX` (`jane\u0040example.com`, surrogate pairs included) and `\/`
/// - zero-width characters (U+200B–U+200D, U+2060, U+FEFF) and the soft hyphen, removed
/// - no-break spaces (U+00A0, U+2007, U+202F), read as a space
///
/// Not undone (documented in the README): base64 or other encodings, homoglyphs such as a
/// Cyrillic `а`, a value split across attributes, nested percent-encoding.
enum TextNormalizer {
    struct Normalized {
        var bytes: [UInt8] = []
        /// For each normalized byte, the original bytes it stands for.
        var origin: [Range<Int>] = []

        mutating func append(_ b: UInt8, from range: Range<Int>) {
            bytes.append(b)
            origin.append(range)
        }

        mutating func append(scalar value: UInt32, from range: Range<Int>) {
            guard let scalar = Unicode.Scalar(value) else { return }
            for b in String(Character(scalar)).utf8 { append(b, from: range) }
        }
    }

    /// Bytes that can start a disguise (`%`, `\`, and the UTF-8 lead bytes of the characters
    /// below); text without any is scanned as it is.
    static let disguiseStarts: [UInt8] = [0x25, 0x5C, 0xC2, 0xE2, 0xEF]

    /// The normalized text, or nil when there is nothing to undo. Callers ask only for text
    /// in which `ValueScanner` saw one of `disguiseStarts`, so there is no pre-check here.
    static func normalize(_ s: UnsafeBufferPointer<UInt8>) -> Normalized? {
        var out = Normalized()
        out.bytes.reserveCapacity(s.count)
        out.origin.reserveCapacity(s.count)
        var changed = false
        var i = 0
        let n = s.count
        while i < n {
            let c = s[i]
            if c == 0x25, i + 2 < n, let hi = hex(s[i + 1]), let lo = hex(s[i + 2]) {
                out.append(hi << 4 | lo, from: i..<(i + 3))
                i += 3
                changed = true
            } else if c == 0x5C, i + 1 < n, s[i + 1] == 0x2F {  // \/
                out.append(0x2F, from: i..<(i + 2))
                i += 2
                changed = true
            } else if c == 0x5C, let (unit, next) = utf16Escape(s, i) {
                var value = UInt32(unit)
                var end = next
                if (0xD800..<0xDC00).contains(unit), let (low, after) = utf16Escape(s, next),
                    (0xDC00..<0xE000).contains(low)
                {
                    value = 0x10000 + (UInt32(unit) - 0xD800) << 10 + (UInt32(low) - 0xDC00)
                    end = after
                }
                out.append(scalar: value, from: i..<end)
                i = end
                changed = true
            } else if c == 0xC2, i + 1 < n, s[i + 1] == 0xA0 || s[i + 1] == 0xAD {
                if s[i + 1] == 0xA0 { out.append(0x20, from: i..<(i + 2)) }  // NBSP; soft hyphen dropped
                i += 2
                changed = true
            } else if c == 0xE2, i + 2 < n, let space = invisible(s[i + 1], s[i + 2]) {
                if space { out.append(0x20, from: i..<(i + 3)) }
                i += 3
                changed = true
            } else if c == 0xEF, i + 2 < n, s[i + 1] == 0xBB, s[i + 2] == 0xBF {  // U+FEFF
                i += 3
                changed = true
            } else {
                out.append(c, from: i..<(i + 1))
                i += 1
            }
        }
        return changed ? out : nil
    }

    /// For E2 xx yy: true for a no-break space, false for a zero-width character, nil otherwise.
    static func invisible(_ b1: UInt8, _ b2: UInt8) -> Bool? {
        switch (b1, b2) {
        case (0x80, 0x8B), (0x80, 0x8C), (0x80, 0x8D), (0x81, 0xA0): return false  // U+200B-D, U+2060
        case (0x80, 0x87), (0x80, 0xAF): return true  // U+2007, U+202F
        default: return nil
        }
    }

    /// `\uXXXX` at `i`: the code unit and the index after it.
    static func utf16Escape(_ s: UnsafeBufferPointer<UInt8>, _ i: Int) -> (UInt16, Int)? {
        guard i + 5 < s.count, s[i] == 0x5C, s[i + 1] == 0x75 || s[i + 1] == 0x55 else { return nil }
        var v: UInt16 = 0
        for k in 2..<6 {
            guard let d = hex(s[i + k]) else { return nil }
            v = v << 4 | UInt16(d)
        }
        return (v, i + 6)
    }

    @inline(__always) static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: c - 48
        case 65...70: c - 55
        case 97...102: c - 87
        default: nil
        }
    }
}
