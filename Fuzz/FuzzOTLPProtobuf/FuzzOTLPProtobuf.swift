import FlightRecorderIngest
import FlightRecorderOTLP
import FlightRecorderRedaction
import FuzzSupport

/// The whole OTLP protobuf ingest path on outside bytes: the depth guard, protobuf-c decode,
/// validation, tenant stamp, redaction (default detectors, key rules, credential keys) and
/// re-encode; then the stored payload is decoded again as a query would.
let decoder: ExportRequestDecoder = {
    var policy = RedactionPolicy()
    policy.defaultSet.rules = [
        .init(name: "drop-db", keys: [.glob("db.*")], action: .drop),
        .init(name: "cut", keys: [.exact("gen_ai.prompt")], action: .truncate(16)),
    ]
    policy.defaultSet.customDetectors = [.init(name: "ticket", pattern: "TICKET-[0-9]+")]
    let redactor = try! Redactor(policy: policy)
    var limits = IngestLimits()
    limits.maxAttributeValueBytes = 64
    limits.maxAttributesPerSpan = 8
    return ExportRequestDecoder(
        indexedKeys: IndexedKeys(keys: ["operation.id", "gen_ai.tool.name"]), limits: limits,
        redaction: RequestRedactor(redactor: redactor))
}()

func fuzzOne(_ input: UnsafeBufferPointer<UInt8>) {
    guard let batch = try? decoder.decode(Array(input), tenant: "fuzz") else { return }
    let stored = batch.payload.withUnsafeBytes { b in
        Result { () throws(TracesDataError) in try TracesDataDecoder.decode(b) { _, _ in true } }
    }
    if case .failure(let e) = stored { preconditionFailure("a stored payload must decode again: \(e)") }
}

@main enum Main {
    static func main() { FuzzMain.run(fuzzOne) }
}
