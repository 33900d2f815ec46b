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
