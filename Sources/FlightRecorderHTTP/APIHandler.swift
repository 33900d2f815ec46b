public import Hummingbird
public import Logging

/// Runs one API request for either daemon: times it into `Server-Timing` (`app`), answers an
/// `APIError` with the shared error body, and any other error with a 500 or 503 whose message
/// never carries request values.
public struct APIHandler: Sendable {
    public let logger: Logger
    /// What an unexpected error is answered with (the collector: 503, its store could not answer).
    public let unexpected: APIError

    public init(logger: Logger, unexpected: APIError = APIError(.internalServerError, "internal error")) {
        self.logger = logger
        self.unexpected = unexpected
    }

    public func run(
        clock: some Clock<Duration> = ContinuousClock(), _ body: () async throws -> Response
    ) async -> Response {
        let started = clock.now
        do {
            var response = try await body()
            ServerTiming.add(ServerTiming.entry("app", started.duration(to: clock.now)), to: &response)
            return response
        } catch let e as APIError {
            return JSONResponse.error(e)
        } catch let e as any APIErrorConvertible {
            return JSONResponse.error(e.apiError)
        } catch {
            // The type only: an error's description may quote request values.
            logger.error("request failed", metadata: ["error": "\(type(of: error))"])
            return JSONResponse.error(unexpected)
        }
    }
}

/// An error a module defines for itself that knows its HTTP answer (the sidecar's
/// `GuardError`), so the HTTP layer needs no list of them.
public protocol APIErrorConvertible: Error {
    var apiError: APIError { get }
}
