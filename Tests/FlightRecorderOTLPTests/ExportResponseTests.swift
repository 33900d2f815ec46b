import FlightRecorderOTLP
import Foundation
import Testing

@Suite struct ExportResponseTests {
    @Test func successIsEmptyMessage() {
        #expect(ExportResponse.success(encoding: .protobuf) == [])
        #expect(String(decoding: ExportResponse.success(encoding: .json), as: UTF8.self) == "{}")
    }

    @Test func partialSuccessEncodesBothFields() throws {
        let p = ExportResponse.success(rejectedSpans: 3, message: "bad", encoding: .protobuf)
        // field 1 (len) { field 1 varint 3, field 2 "bad" }
        #expect(p == [0x0A, 0x07, 0x08, 0x03, 0x12, 0x03, 0x62, 0x61, 0x64])
        let j = try JSONSerialization.jsonObject(
            with: Data(ExportResponse.success(rejectedSpans: 3, message: "bad", encoding: .json)))
        let partial = (j as? [String: Any])?["partialSuccess"] as? [String: Any]
        #expect(partial?["rejectedSpans"] as? String == "3")
    }

    @Test func statusBodyCarriesCodeAndMessage() throws {
        let p = ExportResponse.status(code: 3, message: "no", encoding: .protobuf)
        #expect(p == [0x08, 0x03, 0x12, 0x02, 0x6E, 0x6F])
        let j = try JSONSerialization.jsonObject(
            with: Data(ExportResponse.status(code: 8, message: "big", encoding: .json)))
        #expect((j as? [String: Any])?["message"] as? String == "big")
    }
}
