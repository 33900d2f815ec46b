import FlightRecorderCollector
import FlightRecorderConfig
import FlightRecorderIngest
import FlightRecorderOTLP
import FlightRecorderRedaction
import FlightRecorderStorage
import FlightRecorderTesting
import GRPCCore
import HTTPTypes
import Logging
import Testing

@Suite struct IngestServiceTests {
    let logger = Logger(label: "test")

    func service(_ dir: TemporaryDirectory) throws -> IngestService {
        let store = try SpanStore(configuration: StoreConfiguration(directory: dir.path + "/data"), logger: logger)
        return IngestService(
            store: store, policy: try IngestPolicy(runIdentity: RunIdentity(), redaction: .secureDefault),
            auth: Authenticator(tokens: []), rateLimiter: nil, budget: MemoryBudget(limit: 1 << 20),
            maxRequestBytes: 1 << 20, logger: logger)
    }

    @Test func whileDrainingExportsAreUnavailableWithARetryDelay() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let ingest = try service(dir)
        let body = RequestBuilder.request(spans: [
            TestSpan(trace: RequestBuilder.traceID(1), span: RequestBuilder.spanID(1))
        ])
        let principal = try ingest.authorize(nil)
        #expect(try await ingest.ingest(body, principal: principal).storedSpans == 1)
        ingest.beginDraining()
        do {
            _ = try await ingest.ingest(body, principal: principal)
            Issue.record("an export was accepted while draining")
        } catch {
            guard error.reason == "unavailable", let after = error.retryAfterSeconds else {
                Issue.record("expected unavailable, got \(error)")
                return
            }
            #expect(after >= 1)
            #expect(error.httpStatus == .serviceUnavailable)
            // Over gRPC that is UNAVAILABLE with a google.rpc.Status carrying RetryInfo.
            let rpc = OTLPGRPCService.rpcError(error)
            #expect(rpc.code == .unavailable)
            let details = rpc.metadata[binaryValues: "grpc-status-details-bin"].map { $0 }
            #expect(details.count == 1)
            #expect(details.first.map { String(decoding: $0, as: UTF8.self).contains("google.rpc.RetryInfo") } == true)
        }
        #expect(ingest.stats.refusedRequests["unavailable"] == 1 && ingest.stats.acceptedSpans == 1)
        await ingest.store.close()
    }

    @Test func theMemoryBudgetRefusesWithARetryableError() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let ingest = try service(dir)
        try ingest.reserve(1 << 20)
        #expect {
            try ingest.reserve(1)
        } throws: { error in
            guard let refusal = error as? IngestError else { return false }
            return refusal.reason == "overloaded" && (refusal.retryAfterSeconds ?? 0) >= 1
        }
        ingest.budget.release(1 << 20)
        try ingest.reserve(1)
        await ingest.store.close()
    }
}
