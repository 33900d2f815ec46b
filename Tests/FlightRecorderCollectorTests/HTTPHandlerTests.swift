import FlightRecorderCollector
import FlightRecorderConfig
import FlightRecorderIngest
import FlightRecorderOTLP
import FlightRecorderRedaction
import FlightRecorderStorage
import FlightRecorderTesting
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing

/// The collector's HTTP handlers in process (HummingbirdTesting's router client): the OTLP/HTTP
/// receiver and the query API, as a client meets them, without sockets.
@Suite struct HTTPHandlerTests {
    let logger = Logger(label: "test")

    /// A receiver and query API over a fresh store; `body` gets the test client.
    func withCollector(
        tokens: [AccessToken] = [], _ body: @Sendable (any TestClientProtocol) async throws -> Void
    ) async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let store = try SpanStore(configuration: StoreConfiguration(directory: dir.path + "/data"), logger: logger)
        let policy = try IngestPolicy(runIdentity: RunIdentity(), redaction: .secureDefault)
        let auth = Authenticator(tokens: tokens)
        let ingest = IngestService(
            store: store, policy: policy, auth: auth, rateLimiter: nil, budget: MemoryBudget(limit: 4 << 20),
            maxRequestBytes: 1 << 20, logger: logger)
        let router = Router(context: BasicRequestContext.self)
        OTLPHTTPReceiver(ingest: ingest, logger: logger).addRoutes(to: router)
        QueryAPI(store: store, policy: policy, ingest: ingest, auth: auth, logger: logger).addRoutes(to: router)
        try await Application(router: router, logger: logger).test(.router, body)
        await store.close()
    }

    static let protobuf: HTTPFields = [.contentType: "application/x-protobuf"]

    static func run(_ id: String, policyOutcome: String) -> [UInt8] {
        RequestBuilder.request(spans: [
            TestSpan(
                trace: RequestBuilder.traceID(UInt8(id.count)), span: RequestBuilder.spanID(1),
                attributes: [("agent.run.id", .string(id)), ("policy.outcome", .string(policyOutcome))])
        ])
    }

    static func json(_ buffer: ByteBuffer) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)) as? [String: Any])
    }

    @Test func aMalformedBodyIs400AndTheReceiverKeepsServing() async throws {
        try await withCollector { client in
            try await client.execute(
                uri: "/v1/traces", method: .post, headers: Self.protobuf,
                body: ByteBuffer(bytes: [0x0A, 0x01, 0x8A, 0x00, 0x00])
            ) { response in
                #expect(response.status == .badRequest)
                #expect(response.headers[.contentType] == "application/x-protobuf")
            }
            try await client.execute(
                uri: "/v1/traces", method: .post, headers: Self.protobuf,
                body: ByteBuffer(bytes: Self.run("run-ok", policyOutcome: "allowed"))
            ) { response in
                #expect(response.status == .ok)
            }
            try await client.execute(uri: "/api/v1/runs/run-ok", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[HTTPField.Name("Server-Timing")!]?.hasPrefix("app;dur=") == true)
            }
        }
    }

    @Test func unsupportedMediaAndCorruptGzipAreNamed() async throws {
        try await withCollector { client in
            try await client.execute(
                uri: "/v1/traces", method: .post, headers: [.contentType: "text/plain"], body: ByteBuffer(string: "x")
            ) { response in
                #expect(response.status == .unsupportedMediaType)
            }
            try await client.execute(
                uri: "/v1/traces", method: .post,
                headers: [.contentType: "application/json", .contentEncoding: "gzip"],
                body: ByteBuffer(bytes: [0x1F, 0x8B, 0x08, 0x00])
            ) { response in
                #expect(response.status == .badRequest)
                #expect(String(buffer: response.body).contains("gzip body is corrupt or truncated"))
            }
        }
    }

    @Test func formEncodedQueriesAndOneErrorShape() async throws {
        try await withCollector { client in
            for (id, outcome) in [("run-a", "blocked"), ("run-b", "allowed")] {
                try await client.execute(
                    uri: "/v1/traces", method: .post, headers: Self.protobuf,
                    body: ByteBuffer(bytes: Self.run(id, policyOutcome: outcome)))
            }
            try await client.execute(uri: "/api/v1/runs?where=policy.outcome+%3D+%22blocked%22", method: .get) {
                response in
                #expect(response.status == .ok)
                let runs = try Self.json(response.body)["runs"] as? [[String: Any]]
                #expect(runs?.compactMap { $0["runId"] as? String } == ["run-a"])
            }
            try await client.execute(uri: "/api/v1/runs?where=policy.outcome+%3D", method: .get) { response in
                #expect(response.status == .badRequest)
                let body = try Self.json(response.body)
                #expect((body["error"] as? String)?.hasPrefix("where:") == true)
                #expect(body["status"] as? Int == 400)
            }
            try await client.execute(uri: "/api/v1/runs/nope", method: .get) { response in
                #expect(response.status == .notFound)
                let body = try Self.json(response.body)
                #expect(body["status"] as? Int == 404)
            }
        }
    }

    @Test func tokensAreRequiredAndRolesChecked() async throws {
        let ingestToken = AccessToken(
            name: "agents", sha256: AccessToken.digest(of: "t-ingest"), tenants: ["acme"], roles: [.ingest])
        try await withCollector(tokens: [ingestToken]) { client in
            try await client.execute(uri: "/api/v1/runs", method: .get) { response in
                #expect(response.status == .unauthorized)
                #expect(response.headers[.wwwAuthenticate] == "Bearer realm=\"flightrec\"")
            }
            try await client.execute(uri: "/api/v1/runs", method: .get, headers: [.authorization: "Bearer t-ingest"]) {
                response in
                #expect(response.status == .forbidden)
                let body = try Self.json(response.body)
                #expect((body["error"] as? String)?.contains("lacks the role") == true)
            }
            try await client.execute(
                uri: "/v1/traces", method: .post, headers: [.contentType: "application/x-protobuf"],
                body: ByteBuffer(bytes: Self.run("run-x", policyOutcome: "allowed"))
            ) { response in
                #expect(response.status == .unauthorized)
            }
        }
    }
}
