import FlightRecorderOTLP
import FuzzSupport

/// gRPC message framing and the gzip/zlib inflater: the first byte picks the request's
/// `grpc-encoding`, the rest is the request body. Also inflates the body directly as an
/// OTLP/HTTP gzip body. Every input must end in a message or a status, never a hang.
let encodings: [String?] = [nil, "identity", "gzip", "deflate", "snappy", " GZIP "]

func fuzzOne(_ input: UnsafeBufferPointer<UInt8>) {
    guard let first = input.first else { return }
    let body = input.dropFirst()
    let encoding = encodings[Int(first) % encodings.count]
    do {
        let message = try GRPCUnaryRequest.message(body: body, encoding: encoding, limit: 1 << 20)
        precondition(message.count <= 1 << 20)
    } catch {
        precondition(!error.message.isEmpty && [8, 12, 13].contains(error.statusCode))
    }
    if let out = try? Inflater.inflate(body, format: first & 1 == 0 ? .gzip : .zlib, limit: 1 << 20) {
        precondition(out.count <= 1 << 20)
    }
}

@main enum Main {
    static func main() { FuzzMain.run(fuzzOne) }
}
