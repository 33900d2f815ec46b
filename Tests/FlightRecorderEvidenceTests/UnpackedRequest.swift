import FlightRecorderOTLP
import Testing

/// `payload` unpacked as a request for `body`, which may throw: `UnpackArena.withRequest` for
/// tests. Fails the test when the payload does not unpack.
func withUnpackedRequest<R>(
    _ payload: [UInt8], _ body: (UnsafeMutablePointer<CExportRequest>) throws -> R
) throws -> R {
    var result: Result<R, any Error>?
    _ = payload.withUnsafeBytes { raw in
        UnpackArena.withRequest(raw) { request in result = Result { try body(request) } }
    }
    return try #require(result, "the payload does not unpack").get()
}
