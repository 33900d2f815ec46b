import FlightRecorderIngest
import FlightRecorderOTLP
import FlightRecorderTesting
import Foundation
import Testing

@Suite struct OTLPJSONTranscoderTests {
    static let request = """
        {"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"agent"}}]},
         "scopeSpans":[{"scope":{"name":"s","version":"1"},"spans":[
          {"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174","parentSpanId":"",
           "name":"chat","kind":"SPAN_KIND_CLIENT","startTimeUnixNano":"1700000000000000001","endTimeUnixNano":1700000000000000002,
           "attributes":[
             {"key":"s","value":{"stringValue":"hello \\"world\\""}},
             {"key":"i","value":{"intValue":"-9007199254740993"}},
             {"key":"i2","value":{"intValue":42}},
             {"key":"b","value":{"boolValue":true}},
             {"key":"d","value":{"doubleValue":1.5}},
             {"key":"nan","value":{"doubleValue":"NaN"}},
             {"key":"raw","value":{"bytesValue":"AAEC"}},
             {"key":"arr","value":{"arrayValue":{"values":[{"intValue":"1"},{"stringValue":"two"}]}}},
             {"key":"kv","value":{"kvlistValue":{"values":[{"key":"inner","value":{"boolValue":false}}]}}}
           ],
           "events":[{"timeUnixNano":"5","name":"e1","attributes":[{"key":"x","value":{"intValue":"1"}}]}],
           "links":[{"traceId":"5b8efff798038103d269b633813fc60d","spanId":"eee19b7ec3c1b175"}],
           "status":{"code":2,"message":"boom"}, "unknownField": {"ignored": true}}
         ]}]}]}
        """

    @Test func transcodesEveryValueTypeAndRoundTrips() throws {
        let bytes = try OTLPJSONTranscoder.transcodeExportRequest(Data(Self.request.utf8))
        let batch = try ExportRequestDecoder().decode(bytes)
        #expect(batch.spans.count == 1)
        let spans = try bytes.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }
        let s = try #require(spans.first)
        #expect(s.traceID.hex == "5b8efff798038103d269b633813fc60c")
        #expect(s.spanID.hex == "eee19b7ec3c1b174")
        #expect(s.parentSpanID == nil)
        #expect(s.kindName == "CLIENT")
        #expect(s.startNanos == 1_700_000_000_000_000_001 && s.endNanos == 1_700_000_000_000_000_002)
        #expect(s.attributes["s"] == .string("hello \"world\""))
        #expect(s.attributes["i"] == .int(-9_007_199_254_740_993))
        #expect(s.attributes["i2"] == .int(42))
        #expect(s.attributes["b"] == .bool(true))
        #expect(s.attributes["d"] == .double(1.5))
        if case .double(let d) = s.attributes["nan"] { #expect(d.isNaN) } else { Issue.record("nan missing") }
        #expect(s.attributes["raw"] == .bytes([0, 1, 2]))
        #expect(s.attributes["arr"] == .array([.int(1), .string("two")]))
        #expect(s.attributes["kv"] == .kvlist([Attribute("inner", .bool(false))]))
        #expect(s.events.count == 1 && s.events[0].name == "e1" && s.events[0].timeUnixNano == 5)
        #expect(s.links.count == 1 && s.links[0].spanID.hex == "eee19b7ec3c1b175")
        #expect(s.statusCode == .error && s.statusMessage == "boom")
        #expect(s.resource.attributes["service.name"] == .string("agent"))
        #expect(s.resource.scopeName == "s" && s.resource.scopeVersion == "1")
    }

    @Test func acceptsSnakeCaseKeys() throws {
        let json = """
            {"resource_spans":[{"scope_spans":[{"spans":[{"trace_id":"5b8efff798038103d269b633813fc60c",
             "span_id":"eee19b7ec3c1b174","start_time_unix_nano":"7","end_time_unix_nano":"9"}]}]}]}
            """
        let bytes = try OTLPJSONTranscoder.transcodeExportRequest(Data(json.utf8))
        #expect(try ExportRequestDecoder().decode(bytes).spans.first?.startNanos == 7)
    }

    @Test(arguments: [
        ("not json", "body is not valid JSON"),
        (#"{"resourceSpans":{}}"#, "resourceSpans: expected an array"),
        (
            #"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#,
            "resourceSpans[0].scopeSpans[0].spans[0].traceId: is not a hex string"
        ),
        (
            #"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"soon"}]}]}]}"#,
            "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano: expected an unsigned integer"
        ),
        (
            #"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_SIDEWAYS"}]}]}]}"#,
            "resourceSpans[0].scopeSpans[0].spans[0].kind: unknown enum value"
        ),
    ])
    func errorsNameThePath(json: String, expected: String) {
        #expect {
            _ = try OTLPJSONTranscoder.transcodeExportRequest(Data(json.utf8))
        } throws: { error in
            (error as? OTLPJSONError)?.description.hasPrefix(expected) == true
        }
    }

    @Test func errorMessagesNeverEchoAttributeValues() {
        let secret = "123-45-6789"
        let json = """
            {"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"ssn","value":{"intValue":"\(secret)"}}]}]}]}]}
            """
        #expect {
            _ = try OTLPJSONTranscoder.transcodeExportRequest(Data(json.utf8))
        } throws: { error in
            !"\(error)".contains(secret) && "\(error)".contains("intValue")
        }
    }
}
