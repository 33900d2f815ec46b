import FlightRecorderOTLP
import FlightRecorderIngest
import FlightRecorderRedaction
import Foundation
import FuzzSupport

/// OTLP/JSON bodies: the transcoder to protobuf, then the same decode and redaction as
/// every other request.
let decoder = ExportRequestDecoder(redaction: RequestRedactor(redactor: try! Redactor(policy: .secureDefault)))

func fuzzOne(_ input: UnsafeBufferPointer<UInt8>) {
    guard let protobuf = try? OTLPJSONTranscoder.transcodeExportRequest(Data(input)) else { return }
    _ = try? decoder.decode(protobuf, tenant: "fuzz")
}

@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    fuzzOne(UnsafeBufferPointer(start: data, count: size))
    return 0
}

#if !FUZZING
@main enum Replay { static func main() { FuzzReplay.main(fuzzOne) } }
#endif
