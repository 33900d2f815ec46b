import FlightRecorderIngest
import FlightRecorderOTLP
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

@main enum Main {
    static func main() { FuzzMain.run(fuzzOne) }
}
