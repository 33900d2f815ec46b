#if canImport(Glibc)
import Glibc
#endif

/// Compares what a JSON encoder would write with bytes already written, writing nothing: an
/// audit bundle's verifier checks that each line is exactly the encoding of the message it
/// proves (a sixth of its CPU time, part of it spent writing each line again to compare it).
///
/// Byte for byte `JSONWriter`'s output (the same nesting rule decides the commas). Keys,
/// strings that need no escape, IDs and decimal strings are compared in place; anything rarer
/// (escaped or non-ASCII strings, other numbers) is written by a small `JSONWriter` of its own
/// and compared from there.
public struct JSONMatcher: JSONOutput {
    private let expected: UnsafeRawBufferPointer
    /// How far the bytes matched.
    public private(set) var at: Int
    /// False from the first byte that differs (then nothing more is compared).
    public private(set) var matches = true
    private var nesting = JSONNesting()
    private var scratch = JSONWriter(capacity: 256)

    /// Compares from `expected[at]` on.
    public init(_ expected: UnsafeRawBufferPointer, at: Int = 0) {
        self.expected = expected
        self.at = at
    }

    private mutating func expect(_ bytes: UnsafeRawBufferPointer) {
        guard matches else { return }
        guard bytes.count <= expected.count - at,
            bytes.isEmpty || memcmp(expected.baseAddress! + at, bytes.baseAddress!, bytes.count) == 0
        else {
            matches = false
            return
        }
        at += bytes.count
    }

    private mutating func expect(_ byte: UInt8) {
        guard matches else { return }
        guard at < expected.count, expected[at] == byte else {
            matches = false
            return
        }
        at += 1
    }

    /// What `scratch` was made to write, compared.
    private mutating func expectScratch(_ write: (inout JSONWriter) -> Void) {
        guard matches else { return }
        scratch.reset()
        write(&scratch)
        scratch.bytes.withUnsafeBytes { expect($0) }
    }

    private mutating func separate() {
        if nesting.separate() { expect(UInt8(ascii: ",")) }
    }

    public mutating func begin(_ bracket: UInt8) {
        separate()
        expect(bracket)
        nesting.push()
    }

    public mutating func end(_ bracket: UInt8) {
        nesting.pop()
        expect(bracket)
    }

    public mutating func key(_ k: StaticString) {
        separate()
        expect(UInt8(ascii: "\""))
        k.withUTF8Buffer { expect(UnsafeRawBufferPointer($0)) }
        expect(UInt8(ascii: "\""))
        expect(UInt8(ascii: ":"))
        nesting.setComma(false)
    }

    public mutating func string(_ s: String) {
        separate()
        expectScratch { $0.string(s) }
    }

    public mutating func string(cString p: UnsafePointer<CChar>) {
        separate()
        let s = UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: strlen(p))
        guard JSONWriter.isASCII(s) else { return expectScratch { $0.string(cString: p) } }
        expect(UInt8(ascii: "\""))
        if JSONWriter.needsEscape(s) {
            // Escaped piece by piece as the writer escapes, compared in place (arguments and
            // messages quote JSON often: written out and compared, 1 % of a verification).
            JSONWriter.escaped(s) { expect($0) }
        } else {
            expect(UnsafeRawBufferPointer(s))
        }
        expect(UInt8(ascii: "\""))
    }

    public mutating func hexString(_ b: UnsafeBufferPointer<UInt8>) {
        separate()
        expect(UInt8(ascii: "\""))
        // Each byte's two lowercase digits against the next two expected.
        for byte in b {
            guard matches, at + 2 <= expected.count, expected[at] == Hex.digit(byte >> 4),
                expected[at + 1] == Hex.digit(byte & 0xF)
            else {
                matches = false
                return
            }
            at += 2
        }
        expect(UInt8(ascii: "\""))
    }

    public mutating func decimalString(_ v: UInt64) {
        separate()
        expect(UInt8(ascii: "\""))
        // The digits made as `JSONWriter.decimalString` makes them, on the stack.
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &digits) { d in
            var n = 0
            var x = v
            repeat {
                d[23 - n] = UInt8(truncatingIfNeeded: x % 10) + 0x30
                x /= 10
                n += 1
            } while x > 0
            expect(UnsafeRawBufferPointer(rebasing: d[(24 - n)...]))
        }
        expect(UInt8(ascii: "\""))
    }

    public mutating func int(_ v: Int64) {
        separate()
        expectScratch { $0.int(v) }
    }

    public mutating func bool(_ v: Bool) {
        separate()
        expectScratch { $0.bool(v) }
    }

    public mutating func raw(_ json: [UInt8]) {
        separate()
        json.withUnsafeBytes { expect($0) }
    }
}
