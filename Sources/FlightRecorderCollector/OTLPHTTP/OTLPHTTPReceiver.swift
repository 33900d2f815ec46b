import FlightRecorderHTTP
import FlightRecorderOTLP
import FlightRecorderStorage
import Foundation
import GRPCCore
public import Hummingbird
public import Logging

/// `POST /v1/traces`: OTLP/HTTP with protobuf or JSON bodies, plain or gzip.
///
/// Every failure is answered with a `google.rpc.Status` body in the request's encoding and a
/// message naming the problem: 400 malformed, 401/403 auth, 413 too large (after
/// decompression) or too many spans, 415 unsupported type or encoding, 429 + Retry-After over
/// the tenant's rate limit, 503 + Retry-After on overload or shutdown. A success (200) is
/// sent only after the spans are durable; invalid spans are left out and reported in
/// `partial_success`.
public struct OTLPHTTPReceiver: Sendable {
    public let ingest: IngestService
    public let logger: Logger

    public init(ingest: IngestService, logger: Logger) {
        self.ingest = ingest
        self.logger = logger
    }

    var maxRequestBytes: Int { ingest.maxRequestBytes }

    public func addRoutes(to router: Router<some RequestContext>) {
        router.post("/v1/traces") { request, _ in await self.export(request) }
    }

    /// A refusal before the ingest path (body, media type): HTTP status and gRPC code.
    struct Refusal: Error {
        var status: HTTPResponse.Status
        var code: Int32
        var message: String
        var retryAfter: Int? = nil
        var challenge = false

        static func badRequest(_ m: String) -> Refusal { Refusal(status: .badRequest, code: 3, message: m) }
        static func tooLarge(_ m: String) -> Refusal { Refusal(status: .contentTooLarge, code: 8, message: m) }
        static func unsupported(_ m: String) -> Refusal { Refusal(status: .unsupportedMediaType, code: 3, message: m) }

        init(status: HTTPResponse.Status, code: Int32, message: String, retryAfter: Int? = nil) {
            self.status = status
            self.code = code
            self.message = message
            self.retryAfter = retryAfter
        }

        init(_ r: IngestError) {
            // google.rpc.Status codes in the body: the gRPC code the same refusal gets.
            self.init(
                status: r.httpStatus, code: Int32(r.grpcCode.rawValue), message: r.message,
                retryAfter: r.retryAfterSeconds)
            challenge = r.isUnauthenticated
        }
    }

    func export(_ request: Request) async -> Response {
        var encoding = ExportResponse.Encoding.json
        do {
            encoding = try Self.encoding(of: request)
            let principal: Principal
            do {
                principal = try ingest.authorize(request.headers[.authorization])
            } catch {
                throw Refusal(error)
            }
            let body = try await readBody(request)
            defer { ingest.budget.release(body.reserved) }
            let protobuf: [UInt8]
            switch encoding {
            case .protobuf: protobuf = body.bytes
            case .json:
                do {
                    protobuf = try OTLPJSONTranscoder.transcodeExportRequest(Data(body.bytes))
                } catch {
                    throw Refusal(ingest.count(.invalid("invalid OTLP/JSON: \(error.description)")))
                }
            }
            let accepted: IngestService.Accepted
            do {
                accepted = try await ingest.ingest(protobuf, principal: principal)
            } catch {
                throw Refusal(error)
            }
            return Self.response(
                .ok,
                ExportResponse.success(
                    rejectedSpans: Int64(accepted.rejectedSpans), message: accepted.message, encoding: encoding),
                encoding)
        } catch let refusal as Refusal {
            logger.debug(
                "export refused", metadata: ["status": "\(refusal.status.code)", "reason": "\(refusal.message)"])
            var response = Self.response(
                refusal.status, ExportResponse.status(code: refusal.code, message: refusal.message, encoding: encoding),
                encoding)
            if let after = refusal.retryAfter { response.headers[.retryAfter] = String(after) }
            if refusal.challenge { response.headers[.wwwAuthenticate] = "Bearer realm=\"flightrec\"" }
            return response
        } catch {
            // Reading the body failed: the client went away or sent a broken stream.
            let m = "could not read the request body"
            return Self.response(.badRequest, ExportResponse.status(code: 3, message: m, encoding: encoding), encoding)
        }
    }

    static func response(
        _ status: HTTPResponse.Status, _ bytes: [UInt8], _ encoding: ExportResponse.Encoding
    ) -> Response {
        Response(
            status: status, headers: [.contentType: encoding.contentType],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    static func encoding(of request: Request) throws(Refusal) -> ExportResponse.Encoding {
        let raw = request.headers[.contentType] ?? ""
        let media = raw.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        switch media {
        case "application/x-protobuf", "application/protobuf": return .protobuf
        case "application/json": return .json
        default:
            throw .unsupported(
                "unsupported content type \(media.isEmpty ? "(none)" : "\"\(media.prefix(64))\""); use application/x-protobuf or application/json"
            )
        }
    }

    struct Body {
        var bytes: [UInt8]
        var reserved: Int
    }

    /// Reads the body within the size limit and the shared memory budget, inflating gzip.
    func readBody(_ request: Request) async throws -> Body {
        let contentEncoding = (request.headers[.contentEncoding] ?? "identity").trimmingCharacters(in: .whitespaces)
            .lowercased()
        guard ["gzip", "identity", ""].contains(contentEncoding) else {
            throw Refusal.unsupported(
                "unsupported content encoding \"\(contentEncoding.prefix(32))\"; use gzip or none")
        }
        var reserved = 0
        func reserve(_ n: Int) throws {
            do {
                try ingest.reserve(n)
            } catch {
                throw Refusal(error)
            }
            reserved += n
        }
        do {
            let buffer: ByteBuffer
            do {
                buffer = try await BoundedBody.collect(request, limit: maxRequestBytes, onChunk: reserve)
            } catch let e as APIError {
                throw Refusal.tooLarge(e.message)
            }
            var bytes = Array(buffer.readableBytesView)
            if contentEncoding == "gzip" {
                do {
                    bytes = try Inflater.inflate(bytes, format: .gzip, limit: maxRequestBytes)
                } catch  where error == .tooLarge {
                    throw Refusal.tooLarge("gzip body inflates beyond the limit of \(maxRequestBytes) bytes")
                } catch {
                    throw Refusal.badRequest("gzip body is corrupt or truncated")
                }
                try reserve(bytes.count)
            }
            return Body(bytes: bytes, reserved: reserved)
        } catch {
            ingest.budget.release(reserved)
            throw error
        }
    }
}
