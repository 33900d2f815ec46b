public import FlightRecorderCore
import Foundation
public import Hummingbird

/// JSON answers for both daemons' APIs: sorted keys, unescaped slashes, and one error shape.
public enum JSONResponse {
    /// `value` encoded as the body with `status`.
    public static func make(_ status: HTTPResponse.Status, _ value: some Encodable) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// `value` written directly (`JSONWritable`): the same bytes as its `Encodable` form.
    public static func make(_ status: HTTPResponse.Status, _ value: some Encodable & JSONWritable) -> Response {
        var writer = JSONWriter()
        value.writeJSON(to: &writer)
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: writer.bytes)))
    }

    /// `value` written directly, for bodies with no `Encodable` form (the run view's).
    public static func written(_ status: HTTPResponse.Status, _ value: some JSONWritable) -> Response {
        var writer = JSONWriter()
        value.writeJSON(to: &writer)
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: writer.bytes)))
    }

    /// `{"error": message, "status": code}` with the error's headers.
    public static func error(_ error: APIError) -> Response {
        struct Body: Encodable {
            var error: String
            var status: Int
        }
        var response = make(error.status, Body(error: error.message, status: error.status.code))
        if let after = error.retryAfterSeconds { response.headers[.retryAfter] = String(after) }
        if let challenge = error.challenge { response.headers[.wwwAuthenticate] = challenge }
        return response
    }

    public static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        error(APIError(status, message))
    }
}
