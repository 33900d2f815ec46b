import Foundation

/// The one message of a unary gRPC request, read from the whole request body (every DATA
/// frame up to END_STREAM) and the request's `grpc-encoding`.
///
/// Pure, so it is unit-tested and fuzzed on its own; `GRPCRequestGuard` applies it to each
/// stream before grpc-swift sees any byte. Each failure carries the status the gRPC
/// specification (doc/statuscodes.md, PROTOCOL-HTTP2.md) gives it:
/// - a body that ends inside a 5-byte prefix or inside a message: INTERNAL (framing violation)
/// - a compressed flag other than 0 or 1, or 1 without a `grpc-encoding`: INTERNAL
/// - a message that does not decompress with its declared algorithm: INTERNAL
/// - a compressed message in an encoding this server does not support: UNIMPLEMENTED,
///   answered with `grpc-accept-encoding`
/// - zero messages or more than one: UNIMPLEMENTED (request cardinality violation)
/// - a message larger than the limit, before or after decompression: RESOURCE_EXHAUSTED
public enum GRPCUnaryRequest {
    /// The encodings a client may compress with (besides identity).
    public static let acceptedEncodings = "gzip,deflate,identity"

    /// The decompressed message of a body holding exactly one length-prefixed message.
    /// `encoding` is the request's `grpc-encoding` header (nil or "identity" when absent).
    public static func message(
        body: some RandomAccessCollection<UInt8>, encoding: String?, limit: Int
    ) throws(GRPCRequestError) -> [UInt8] {
        var messages: [(compressed: Bool, bytes: Range<Int>)] = []
        let bytes = Array(body)
        var pos = 0
        while pos < bytes.count {
            guard bytes.count - pos >= 5 else {
                throw .internalError(
                    "request ended inside a message prefix (\(bytes.count - pos) of 5 bytes)")
            }
            let flag = bytes[pos]
            let length =
                Int(bytes[pos + 1]) << 24 | Int(bytes[pos + 2]) << 16 | Int(bytes[pos + 3]) << 8 | Int(bytes[pos + 4])
            guard flag <= 1 else { throw .internalError("invalid compressed flag \(flag) in a message prefix") }
            guard length <= limit else {
                throw .resourceExhausted("message of \(length) bytes exceeds the limit of \(limit) bytes")
            }
            let start = pos + 5
            guard bytes.count - start >= length else {
                throw .internalError(
                    "request ended inside a message: its prefix declares \(length) bytes, \(bytes.count - start) arrived"
                )
            }
            messages.append((flag == 1, start..<(start + length)))
            pos = start + length
        }
        guard messages.count == 1, let only = messages.first else {
            throw .unimplemented(
                "TraceService/Export is unary: the request must carry exactly one message, it carried \(messages.count)"
            )
        }
        let payload = bytes[only.bytes]
        guard only.compressed else { return Array(payload) }
        let name = encoding?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
        let format: Inflater.Format
        switch name {
        case "", "identity":
            throw .internalError("message is marked compressed but the request has no grpc-encoding")
        case "gzip": format = .gzip
        case "deflate": format = .zlib
        default:
            throw .unimplemented(
                "grpc-encoding \"\(name.prefix(32))\" is not supported; use one of \(acceptedEncodings)")
        }
        do {
            return try Inflater.inflate(payload, format: format, limit: limit)
        } catch  where error == .tooLarge {
            throw .resourceExhausted("\(name) message inflates beyond the limit of \(limit) bytes")
        } catch {
            throw .internalError("could not decompress the \(name) message: the stream is corrupt or truncated")
        }
    }

    /// `grpc-timeout` (PROTOCOL-HTTP2.md: 1 to 8 digits and a unit H, M, S, m, u or n) in
    /// nanoseconds; nil when absent or malformed.
    public static func timeoutNanos(_ header: String?) -> Int64? {
        guard let header, let unit = header.last, (2...9).contains(header.count) else { return nil }
        guard let value = Int64(header.dropLast()), value >= 0 else { return nil }
        let scale: Int64
        switch unit {
        case "H": scale = 3_600_000_000_000
        case "M": scale = 60_000_000_000
        case "S": scale = 1_000_000_000
        case "m": scale = 1_000_000
        case "u": scale = 1_000
        case "n": scale = 1
        default: return nil
        }
        let (product, overflow) = value.multipliedReportingOverflow(by: scale)
        return overflow ? Int64.max : product
    }

    /// `grpc-message` as PROTOCOL-HTTP2.md wants it: percent-encoded outside printable ASCII.
    public static func percentEncoded(_ message: String) -> String {
        var out = ""
        for b in message.utf8 {
            if b >= 0x20 && b <= 0x7E && b != 0x25 {
                out.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                out += String(format: "%%%02X", b)
            }
        }
        return out
    }
}

public struct GRPCRequestError: Error, Equatable, Sendable, CustomStringConvertible {
    private enum Code: Int, Sendable {
        case deadlineExceeded = 4, resourceExhausted = 8, unimplemented = 12, internalError = 13
    }
    private let code: Code
    public let message: String

    /// The gRPC status code to answer with.
    public var statusCode: Int { code.rawValue }
    public var description: String { message }

    public static func internalError(_ m: String) -> GRPCRequestError {
        GRPCRequestError(code: .internalError, message: m)
    }
    public static func unimplemented(_ m: String) -> GRPCRequestError {
        GRPCRequestError(code: .unimplemented, message: m)
    }
    public static func resourceExhausted(_ m: String) -> GRPCRequestError {
        GRPCRequestError(code: .resourceExhausted, message: m)
    }
    public static func deadlineExceeded(_ m: String) -> GRPCRequestError {
        GRPCRequestError(code: .deadlineExceeded, message: m)
    }
}
