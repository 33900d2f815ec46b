import FlightRecorderCore
import Logging
import Synchronization
import Testing

@Suite struct LogLimiterTests {
    /// Collects what is logged.
    final class Capture: LogHandler, @unchecked Sendable {
        // Only the test's own task logs through it.
        var lines: [(message: String, metadata: Logger.Metadata)] = []
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            lines.append((event.message.description, event.metadata ?? [:]))
        }
    }

    @Test func oneLinePerReasonPerIntervalWithTheCountSuppressed() async throws {
        let capture = Capture()
        let logger = Logger(label: "test") { _ in capture }
        let limiter = LogLimiter(interval: .milliseconds(200))
        for _ in 0..<50 { limiter.log(logger, .error, reason: "disk", "write failed") }
        limiter.log(logger, .error, reason: "index", "index failed")
        #expect(capture.lines.map(\.message) == ["write failed", "index failed"])
        try await Task.sleep(for: .milliseconds(250))
        limiter.log(logger, .error, reason: "disk", "write failed")
        #expect(capture.lines.count == 3)
        #expect(capture.lines.last?.metadata["suppressed"] == "49")
    }
}
