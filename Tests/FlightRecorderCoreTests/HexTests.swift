import FlightRecorderCore
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
