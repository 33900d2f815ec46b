import FlightRecorderOTLP
public import GRPCCore
public import Logging

/// `opentelemetry.proto.collector.trace.v1.TraceService/Export` over gRPC (grpc-swift-2 with
/// its NIO HTTP/2 transport; gzip and deflate are negotiated by the transport).
///
/// Messages stay bytes: the project's protobuf-c code decodes them in the shared ingest path,
/// so gRPC and HTTP apply exactly the same validation, redaction and limits. Status codes
/// follow the OTLP specification: INVALID_ARGUMENT for bad data, RESOURCE_EXHAUSTED without
/// RetryInfo (not retryable) for a message over the size limit, RESOURCE_EXHAUSTED with
/// RetryInfo on overload or rate limit, UNAVAILABLE (with RetryInfo) while shutting down,
/// UNAUTHENTICATED and PERMISSION_DENIED for auth failures.
public struct OTLPGRPCService: RegistrableRPCService {
    public static let method = MethodDescriptor(
        fullyQualifiedService: "opentelemetry.proto.collector.trace.v1.TraceService", method: "Export")

    public let ingest: IngestService
    public let logger: Logger

    public init(ingest: IngestService, logger: Logger) {
        self.ingest = ingest
        self.logger = logger
    }

    public func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        router.registerHandler(
            forMethod: Self.method, deserializer: RawBytesDeserializer(), serializer: RawBytesSerializer()
        ) { request, _ in
            let single = try await ServerRequest(stream: request)
            return StreamingServerResponse(single: await self.export(single))
        }
    }

    /// The transport's hard limit for a message: twice the configured limit, at least 1 MiB more.
    static func transportCeiling(_ limit: Int) -> Int { limit + max(limit, 1 << 20) }

    func export(_ request: ServerRequest<[UInt8]>) async -> ServerResponse<[UInt8]> {
        do throws(IngestError) {
            var authorization = request.metadata[stringValues: "authorization"].makeIterator()
            let principal = try ingest.authorize(authorization.next())
            let body = request.message
            guard body.count <= ingest.maxRequestBytes else {
                let m = "message of \(body.count) bytes exceeds the limit of \(ingest.maxRequestBytes) bytes"
                logger.debug("export refused", metadata: ["reason": "\(m)"])
                _ = ingest.count(.tooLarge(m))
                return ServerResponse(error: RPCError(code: .resourceExhausted, message: m))
            }
            try ingest.reserve(body.count)
            defer { ingest.budget.release(body.count) }
            let accepted = try await ingest.ingest(body, principal: principal)
            return ServerResponse(
                message: ExportResponse.success(
                    rejectedSpans: Int64(accepted.rejectedSpans), message: accepted.message, encoding: .protobuf))
        } catch {
            logger.debug("export refused", metadata: ["reason": "\(error.message)"])
            return ServerResponse(error: Self.rpcError(error))
        }
    }

    /// The gRPC error for a refusal (public for tests).
    public static func rpcError(_ refusal: IngestError) -> RPCError {
        func retryable(_ code: RPCError.Code, _ message: String, _ after: Int) -> RPCError {
            var metadata = Metadata()
            metadata.addBinary(
                ExportResponse.statusWithRetryInfo(
                    code: Int32(code.rawValue), message: message, retryAfterSeconds: after),
                forKey: "grpc-status-details-bin")
            return RPCError(code: code, message: message, metadata: metadata)
        }
        if let after = refusal.retryAfterSeconds { return retryable(refusal.grpcCode, refusal.message, after) }
        return RPCError(code: refusal.grpcCode, message: refusal.message)
    }
}

/// Passes message bytes through unchanged; decoding happens in the ingest path. Public so
/// the load generator's gRPC client sends exactly what agents send.
public struct RawBytesDeserializer: MessageDeserializer {
    public init() {}

    public func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> [UInt8] {
        serializedMessageBytes.withUnsafeBytes { Array($0) }
    }
}

public struct RawBytesSerializer: MessageSerializer {
    public init() {}

    public func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes {
        Bytes(message)
    }
}
