import FlightRecorderCore
import FlightRecorderGuard
import FlightRecorderGuardPolicy
import FlightRecorderRedaction
import FlightRecorderTesting
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing

/// The sidecar's HTTP handlers in process: request bodies decoded strictly, every refusal in
/// the error shape the collector uses too.
@Suite struct GuardAPITests {
    func withAPI(_ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let dir = TemporaryDirectory("guard-api")
        defer { dir.remove() }
        let logger = Logger(label: "test")
        let policy = GuardPolicy(
            tools: [], actors: [Actor(id: "agent", tenant: "acme", roles: ["support_agent"])], rules: [],
            approverRoles: [])
        let service = try GuardService(
            policy: policy, dataDirectory: dir.path, backend: ToolBackend(client: HTTPClientHolder.client),
            exporter: SpanExporter(endpoint: nil, token: nil, logger: logger),
            redactor: try Redactor(policy: .secureDefault), clock: ManualWallClock(), logger: logger)
        let router = Router(context: BasicRequestContext.self)
        GuardAPI(service: service, tokens: [:], logger: logger).addRoutes(to: router)
        try await Application(router: router, logger: logger).test(.router, body)
        await service.shutdown()
    }

    static func post(
        _ client: any TestClientProtocol, _ json: String
    ) async throws -> (HTTPResponse.Status, [String: Any]) {
        try await client.execute(
            uri: "/v1/decide", method: .post, headers: [.contentType: "application/json"],
            body: ByteBuffer(string: json)
        ) { response in
            let body = try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any]
            return (response.status, body ?? [:])
        }
    }

    @Test(arguments: [
        (#"{"run_id":"r","actor":"agent","tool":"t","arguments":{},"sudo":true}"#, "unknown field sudo"),
        (#"{"run_id":"r","actor":5,"tool":"t","arguments":{}}"#, "actor must be a string"),
        (#"{"run_id":"r","actor":"agent","tool":"t","arguments":"x"}"#, "arguments must be a JSON object"),
        (#"{"actor":"agent","tool":"t","arguments":{}}"#, "run_id is required (a string of at most 256 bytes)"),
        (
            #"{"run_id":"r","actor":"agent","tool":"t","arguments":{},"risk_score":2}"#,
            "risk_score must be a number between 0 and 1"
        ),
        (
            #"{"run_id":"r","actor":"agent","tool":"t","arguments":{},"usage":{"input_tokens":-1}}"#,
            "usage.input_tokens must be a non-negative integer"
        ),
        (
            #"{"run_id":"r","actor":"agent","tool":"t","arguments":{},"usage":{"tokens":1}}"#,
            "unknown field usage.tokens"
        ),
        (#"{"run_id":"r","#, "the body is not valid JSON"),
        (#"[1,2]"#, "the body must be a JSON object"),
    ])
    func badBodiesNameTheFieldNeverTheValue(json: String, message: String) async throws {
        try await withAPI { client in
            let (status, body) = try await Self.post(client, json)
            #expect(status == .badRequest)
            #expect(body["error"] as? String == message)
            #expect(body["status"] as? Int == 400)
        }
    }

    @Test func aDecisionComesBackWithServerTiming() async throws {
        try await withAPI { client in
            try await client.execute(
                uri: "/v1/decide", method: .post,
                body: ByteBuffer(string: #"{"run_id":"r","actor":"agent","tool":"nope","arguments":{}}"#)
            ) { response in
                #expect(response.status == .ok)
                #expect(response.headers[HTTPField.Name("Server-Timing")!]?.hasPrefix("app;dur=") == true)
                #expect(String(buffer: response.body).contains("\"outcome\":\"blocked\""))
            }
            try await client.execute(
                uri: "/v1/decide", method: .post, body: ByteBuffer(repeating: 0x20, count: GuardAPI.maxBodyBytes + 1)
            ) { response in
                #expect(response.status == .contentTooLarge)
            }
        }
    }
}
