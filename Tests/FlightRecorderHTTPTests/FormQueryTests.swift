import FlightRecorderHTTP
import NIOCore
import Testing

@Suite struct FormQueryTests {
    @Test(arguments: [
        ("where=policy.outcome+%3D+%22blocked%22", "where", "policy.outcome = \"blocked\""),
        ("where=a%20b", "where", "a b"),
        ("value=1%2B1", "value", "1+1"),
        ("x=1&x=2", "x", "1"),
        ("flag", "flag", ""),
        ("bad=%ZZ+x", "bad", "%ZZ x"),
    ])
    func decodesAsHTMLFormsAndPythonsUrlencodeSendIt(query: String, name: String, value: String) {
        #expect(FormQuery(query)[name] == value)
    }

    @Test func absentNamesAreNil() {
        #expect(FormQuery("a=1")["b"] == nil)
        #expect(FormQuery("")["a"] == nil)
    }
}

@Suite struct ListenErrorTests {
    @Test func aBindFailureNamesTheKeyTheAddressAndTheReason() {
        let error = ListenError.from(
            IOError(errnoCode: 98, reason: "bind"), key: "listeners.otlp_grpc", address: "127.0.0.1:4317")
        #expect(error?.description == "listeners.otlp_grpc: cannot listen on 127.0.0.1:4317: address already in use")
        #expect(ListenError.from(CancellationError(), key: "k", address: "a") == nil)
    }
}
