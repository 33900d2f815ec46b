public import HTTPTypes

/// A request an API refuses: an HTTP status and a message naming the problem (never a
/// value from the request). Both daemons answer every error with the same body,
/// `{"error": "<message>", "status": <code>}`.
public struct APIError: Error, Sendable, CustomStringConvertible {
    public let status: HTTPResponse.Status
    public let message: String
    /// Seconds a client should wait before retrying (`Retry-After`), for 429 and 503.
    public var retryAfterSeconds: Int?
    /// The `WWW-Authenticate` challenge a 401 carries.
    public var challenge: String?

    public init(_ status: HTTPResponse.Status, _ message: String, retryAfterSeconds: Int? = nil) {
        self.status = status
        self.message = message
        self.retryAfterSeconds = retryAfterSeconds
    }

    /// 401 with a Bearer challenge for `realm`.
    public static func unauthorized(_ message: String, realm: String) -> APIError {
        var e = APIError(.unauthorized, message)
        e.challenge = "Bearer realm=\"\(realm)\""
        return e
    }

    public var description: String { "\(status.code) \(message)" }
}
