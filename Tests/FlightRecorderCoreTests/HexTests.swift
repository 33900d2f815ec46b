import FlightRecorderCore
import Foundation
import Testing

@Suite struct HexTests {
    @Test func bytesRoundTrip() {
        let bytes: [UInt8] = [0x00, 0x0f, 0xa5, 0xff]
        #expect(Hex.encode(bytes) == "000fa5ff")
        #expect(Hex.decode("000FA5ff") == bytes)
        #expect(Hex.encode(UInt64(0xab)) == "00000000000000ab")
    }

    @Test(arguments: ["0", "zz", "0g"])
    func malformedHexIsNil(text: String) {
        #expect(Hex.decode(text) == nil)
    }

    @Test func theManualClockMovesOnlyWhenTold() {
        let clock = ManualWallClock(nanos: 10)
        #expect(clock.nowNanos() == 10)
        clock.advance(by: 5)
        #expect(clock.nowNanos() == 15)
        #expect(SystemWallClock().nowNanos() > 1_700_000_000_000_000_000)
    }
}

@Suite struct JSONWriterStringTests {
    /// `string(cString:)`, `hexString` and `decimalString` write what the `String` forms write.
    @Test func cStringsHexAndDecimalsAsTheStringForms() {
        let samples: [[UInt8]] = [
            [], Array("plain".utf8),
            Array("quote \" back \\ slash / tab \t nl \n cr \r bs \u{8} ff \u{C} nul-free \u{1}".utf8),
            Array("caf\u{E9} ✓ 🚀".utf8), [0x61, 0xFF, 0x62], [0xC3], Array(repeating: 0x41, count: 67),
        ]
        for bytes in samples {
            let c = (bytes + [0]).map { CChar(bitPattern: $0) }
            var fast = JSONWriter()
            var slow = JSONWriter()
            c.withUnsafeBufferPointer { p in
                fast.string(cString: p.baseAddress!)
                slow.string(String(cString: p.baseAddress!))
            }
            #expect(fast.bytes == slow.bytes, "\(bytes)")
        }
        for v: UInt64 in [0, 1, 9, 10, 1_767_000_000_123_456_789, UInt64.max] {
            var fast = JSONWriter()
            var slow = JSONWriter()
            fast.decimalString(v)
            slow.string(String(v))
            #expect(fast.bytes == slow.bytes)
        }
        let id: [UInt8] = [0x00, 0x0F, 0xA0, 0xFF, 0x12]
        var fast = JSONWriter()
        var slow = JSONWriter()
        id.withUnsafeBufferPointer { fast.hexString($0) }
        slow.string(Hex.encode(id))
        #expect(fast.bytes == slow.bytes)
    }
}

@Suite struct JSONWriterEscapeTests {
    /// Each byte the writer escapes, and the bytes next to those ranges, at every position of
    /// a string crossing the eight-byte words the fast check reads, against `JSONEncoder`.
    @Test func everyEscapedByteAtEveryPosition() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        let special: [UInt8] = Array(0..<0x21) + [0x22, 0x23, 0x5B, 0x5C, 0x5D, 0x7F, 0x80, 0xDF]
        for length in [1, 7, 8, 9, 17] {
            for at in 0..<length {
                for c in special {
                    var bytes = [UInt8](repeating: UInt8(ascii: "a"), count: length)
                    bytes[at] = c
                    // A lone byte of 0x80 or above decodes as U+FFFD: a non-ASCII character.
                    let text = String(decoding: bytes, as: UTF8.self)
                    var w = JSONWriter()
                    w.string(text)
                    #expect(w.bytes == Array(try encoder.encode(text)), "byte \(c) at \(at) of \(length)")
                }
            }
        }
    }
}

@Suite struct JSONWriterNestingTests {
    /// Commas stay right in containers nested past the 64 kept as bits, on the way in and out.
    @Test func deeplyNestedContainers() {
        for depth in [1, 2, 63, 64, 65, 130] {
            var w = JSONWriter()
            var expected = ""
            func nest(_ level: Int) {
                w.beginArray()
                expected += "["
                w.int(level)
                expected += "\(level)"
                if level < depth {
                    expected += ","
                    nest(level + 1)
                    expected += ","
                    w.beginObject()
                    w.key("a")
                    w.bool(true)
                    w.key("b")
                    w.string("x")
                    w.endObject()
                    expected += "{\"a\":true,\"b\":\"x\"}"
                }
                w.int(-level)
                expected += ",\(-level)"
                w.endArray()
                expected += "]"
            }
            nest(1)
            #expect(String(decoding: w.bytes, as: UTF8.self) == expected, "depth \(depth)")
        }
    }
}

@Suite struct JSONMatcherTests {
    /// The same calls made to a writer and to a matcher over the writer's bytes: the matcher
    /// accepts exactly those bytes, and no byte of them changed, cut or added.
    @Test func acceptsExactlyTheWritersBytes() {
        func write<W: JSONOutput>(_ w: inout W) {
            w.beginArray()
            w.beginObject()
            w.key("a")
            w.string("plain")
            w.key("b")
            w.string("quote \" tab \t caf\u{E9}")
            w.key("c")
            "c-string, long enough to cross a word: \u{1}".withCString { w.string(cString: $0) }
            w.key("d")
            [UInt8](arrayLiteral: 0x00, 0xAB, 0xFF).withUnsafeBufferPointer { w.hexString($0) }
            w.key("e")
            w.decimalString(1_767_000_000_123_456_789)
            w.key("f")
            w.int(-42)
            w.key("g")
            w.bool(true)
            w.key("h")
            w.raw(Array("1.5".utf8))
            w.key("i")
            // Every escape, in a C string (compared in place, piece by piece).
            "{\"args\": \"a\\b\"}\n\r\u{8}\u{C}\t\u{1F} end".withCString { w.string(cString: $0) }
            w.endObject()
            w.beginObject()
            w.endObject()
            w.endArray()
        }
        var writer = JSONWriter()
        write(&writer)
        let bytes = writer.bytes
        func accepts(_ candidate: [UInt8]) -> Bool {
            candidate.withUnsafeBytes { b in
                var m = JSONMatcher(b)
                write(&m)
                return m.matches && m.at == b.count
            }
        }
        #expect(accepts(bytes))
        for i in bytes.indices {
            var changed = bytes
            changed[i] ^= 0x01
            #expect(!accepts(changed), "byte \(i) changed")
            var cut = bytes
            cut.remove(at: i)
            #expect(!accepts(cut), "byte \(i) cut")
        }
        #expect(!accepts(bytes + [0x20]))
    }
}
