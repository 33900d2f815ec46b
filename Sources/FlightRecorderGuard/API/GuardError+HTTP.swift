public import FlightRecorderHTTP
import HTTPTypes

/// Each refusal's HTTP answer, in the body shape both daemons share.
extension GuardError: APIErrorConvertible {
    public var apiError: APIError {
        let status: HTTPResponse.Status =
            switch kind {
            case .badRequest: .badRequest
            case .unauthorized: .unauthorized
            case .forbidden: .forbidden
            case .notFound: .notFound
            case .conflict: .conflict
            case .tooLarge: .contentTooLarge
            case .unavailable: .serviceUnavailable
            }
        var e =
            kind == .unauthorized ? APIError.unauthorized(message, realm: "flightrec-guard") : APIError(status, message)
        e.retryAfterSeconds = retryAfterSeconds
        return e
    }
}
