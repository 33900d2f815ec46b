public import Hummingbird

/// Reads a request body of at most `limit` bytes: a `Content-Length` over it is refused before
/// reading, and a streamed body stops at the limit, both with 413. `onChunk` sees each
/// chunk's size before it is kept (the collector reserves it in its memory budget there).
public enum BoundedBody {
    public static func collect(
        _ request: Request, limit: Int, onChunk: (Int) throws -> Void = { _ in }
    ) async throws -> ByteBuffer {
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit {
            throw APIError(.contentTooLarge, "body of \(length) bytes exceeds the limit of \(limit) bytes")
        }
        var buffer = ByteBuffer()
        for try await chunk in request.body {
            guard buffer.readableBytes + chunk.readableBytes <= limit else {
                throw APIError(.contentTooLarge, "body exceeds the limit of \(limit) bytes")
            }
            try onChunk(chunk.readableBytes)
            var chunk = chunk
            buffer.writeBuffer(&chunk)
        }
        return buffer
    }
}
