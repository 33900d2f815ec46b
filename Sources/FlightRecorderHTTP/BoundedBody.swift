public import Hummingbird

/// Reads a request body of at most `limit` bytes: a `Content-Length` over it is refused before
/// reading, and a streamed body stops at the limit, both with 413.
public enum BoundedBody {
    public static func collect(_ request: Request, limit: Int) async throws -> ByteBuffer {
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit {
            throw APIError(.contentTooLarge, "body of \(length) bytes exceeds the limit of \(limit) bytes")
        }
        var buffer = ByteBuffer()
        for try await chunk in request.body {
            guard buffer.readableBytes + chunk.readableBytes <= limit else {
                throw APIError(.contentTooLarge, "body exceeds the limit of \(limit) bytes")
            }
            var chunk = chunk
            buffer.writeBuffer(&chunk)
        }
        return buffer
    }
}
