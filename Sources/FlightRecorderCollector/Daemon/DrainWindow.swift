import FlightRecorderHTTP
import HTTPTypes
import Logging
import ServiceLifecycle
import Synchronization

/// Whether the daemon is shutting down: shared by every listener, so requests that arrive
/// after shutdown began are answered 503 / `UNAVAILABLE` with Retry-After, never a closed
/// connection, until the listeners close.
public final class DrainGate: Sendable {
    private let draining = Atomic<Bool>(false)

    public init() {}

    public var isDraining: Bool { draining.load(ordering: .relaxed) }

    func begin() { draining.store(true, ordering: .relaxed) }

    /// What a request that arrives while draining is answered.
    static let refusal = APIError(
        .serviceUnavailable, "the collector is shutting down; retry later", retryAfterSeconds: 1)
}

/// The first service to stop on SIGTERM/SIGINT (it is last in the group): it opens the drain
/// window, waits `grace`, and returns, so the listeners close only after clients were told
/// to retry for that long. Nothing already acknowledged is affected: the store drains last.
struct DrainWindow: Service {
    let gate: DrainGate
    let ingest: IngestService
    let grace: Duration
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        gate.begin()
        ingest.beginDraining()
        logger.notice(
            "shutting down: answering 503 with Retry-After until the listeners close", metadata: ["grace": "\(grace)"])
        // Sleeps through the grace even though shutdown has begun (a cancelled sleep would end it early).
        let deadline = ContinuousClock.now + grace
        while ContinuousClock.now < deadline {
            try? await Task.sleep(until: min(deadline, ContinuousClock.now + .milliseconds(50)))
            if Task.isCancelled { break }
        }
    }
}
