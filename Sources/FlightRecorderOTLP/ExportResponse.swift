import Foundation

/// Bodies the OTLP receivers send back: `ExportTraceServiceResponse` on success and
/// `google.rpc.Status` on failure, each in the request's encoding.
public enum ExportResponse {
    public enum Encoding: Sendable {
        case protobuf, json

        public var contentType: String {
            switch self {
            case .protobuf: "application/x-protobuf"
            case .json: "application/json"
            }
        }
    }

    /// A success body; `rejectedSpans` > 0 adds `partial_success`.
    public static func success(rejectedSpans: Int64 = 0, message: String = "", encoding: Encoding) -> [UInt8] {
        switch encoding {
        case .protobuf:
            var w = ProtobufWriter()
            if rejectedSpans > 0 || !message.isEmpty {
                w.messageField(1) { p in
                    if rejectedSpans > 0 { p.int64Field(1, rejectedSpans) }
                    if !message.isEmpty { p.stringField(2, message) }
                }
            }
            return w.bytes
        case .json:
            if rejectedSpans == 0 && message.isEmpty { return Array("{}".utf8) }
            return json(["partialSuccess": ["rejectedSpans": String(rejectedSpans), "errorMessage": message]])
        }
    }

    /// A `google.rpc.Status` body with a gRPC code (3 INVALID_ARGUMENT, 8 RESOURCE_EXHAUSTED, ...).
    public static func status(code: Int32, message: String, encoding: Encoding) -> [UInt8] {
        switch encoding {
        case .protobuf:
            var w = ProtobufWriter()
            w.varintField(1, UInt64(UInt32(bitPattern: code)))
            w.stringField(2, message)
            return w.bytes
        case .json:
            return json(["code": code, "message": message])
        }
    }

    /// A `google.rpc.Status` carrying a `google.rpc.RetryInfo` detail, as gRPC servers send in
    /// the `grpc-status-details-bin` trailer so OTLP exporters know when to retry.
    /// Hand-encoded: three small messages, fixed field numbers from google/rpc/status.proto,
    /// google/rpc/error_details.proto and google/protobuf/duration.proto.
    public static func statusWithRetryInfo(code: Int32, message: String, retryAfterSeconds: Int) -> [UInt8] {
        var w = ProtobufWriter()
        w.varintField(1, UInt64(UInt32(bitPattern: code)))
        w.stringField(2, message)
        w.messageField(3) { any in
            any.stringField(1, "type.googleapis.com/google.rpc.RetryInfo")
            var retryInfo = ProtobufWriter()
            retryInfo.messageField(1) { duration in duration.int64Field(1, Int64(retryAfterSeconds)) }
            any.bytesField(2, retryInfo.bytes)
        }
        return w.bytes
    }

    static func json(_ object: [String: any Sendable]) -> [UInt8] {
        Array(
            (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
                ?? Data("{}".utf8))
    }
}
