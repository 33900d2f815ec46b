public import FlightRecorderHTTP
public import FlightRecorderStorage
import HTTPTypes

/// How the query API answers a store that cannot answer: a 503 with `Retry-After` and the
/// store's reason (which names segments, offsets and errors, never span values), so a
/// responder sees "the index is behind" rather than "no such trace".
extension StorageError: APIErrorConvertible {
    public var apiError: APIError {
        if isIndexBehind { return APIError(.serviceUnavailable, message, retryAfterSeconds: 5) }
        if isShuttingDown { return APIError(.serviceUnavailable, message, retryAfterSeconds: 1) }
        return APIError(.serviceUnavailable, "the store could not answer: \(message)", retryAfterSeconds: 5)
    }
}
