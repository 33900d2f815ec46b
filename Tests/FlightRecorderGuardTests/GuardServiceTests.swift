import AsyncHTTPClient
import FlightRecorderGuardPolicy
import FlightRecorderIngest
import FlightRecorderOTLP
import FlightRecorderRedaction
import FlightRecorderTesting
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Testing

@testable import FlightRecorderGuard

@Suite struct GuardServiceTests {
    @Test func sidecarSpansAreValidOTLPThatTheCollectorDecodes() throws {
        let agent = try #require(SpanContext(traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
        #expect(agent.traceID.hex == "4bf92f3577b34da6a3ce929d0e0e4736" && agent.spanID.hex == "00f067aa0ba902b7")
        #expect(SpanContext(traceparent: "00-00000000000000000000000000000000-00f067aa0ba902b7-01") == nil)
        #expect(SpanContext(traceparent: "garbage") == nil)
        let check = SpanContext(traceID: agent.traceID, spanID: SpanContext.newSpanID())
        let spans = [
            GuardSpan(
                context: check, parentSpanID: agent.spanID, name: GuardSpans.policyCheck, startNanos: 1_000,
                endNanos: 2_000,
                tenant: "acme",
                attributes: [(GuardSpans.policyOutcome, .string("allowed")), (GuardSpans.httpStatus, .int(200))]),
            GuardSpan(
                context: SpanContext(traceID: SpanContext.newTraceID(), spanID: SpanContext.newSpanID()),
                parentSpanID: nil,
                name: GuardSpans.approvalGranted, startNanos: 3_000, endNanos: 3_500, tenant: "globex",
                attributes: [(GuardSpans.approver, .string("alice"))], links: [check], error: "denied"),
        ]
        let batch = try ExportRequestDecoder().decode(GuardSpanEncoder.request(spans))
        #expect(batch.rejectedSpans == 0 && batch.spans.count == 2)
        let decoded = try batch.payload.withUnsafeBytes { try TracesDataDecoder.decode($0) { _, _ in true } }
        let first = try #require(decoded.first { $0.name == GuardSpans.policyCheck })
        #expect(first.traceID.hex == agent.traceID.hex && first.parentSpanID?.hex == agent.spanID.hex)
        #expect(first.attributes.first { $0.key == GuardSpans.policyOutcome }?.value.displayString == "allowed")
        #expect(first.tenant == "acme")
        let grant = try #require(decoded.first { $0.name == GuardSpans.approvalGranted })
        #expect(grant.links.map(\.spanID.hex) == [check.spanID.hex] && grant.statusCode == .error)
        #expect(grant.tenant == "globex" && grant.statusMessage == "denied")
    }

    static func tool(_ tier: Tier, operationIDPath: String = "operation_id") -> Tool {
        var t = Tool(name: "t", arguments: .any, tier: tier, backendURL: "http://127.0.0.1:1/x")
        t.operationIDPath = operationIDPath
        return t
    }

    static func outcome(_ status: Int, _ body: String, _ tool: Tool, headers: HTTPHeaders = [:]) -> BackendOutcome {
        ToolBackend.outcome(status: status, headers: headers, body: ByteBuffer(string: body), tool: tool)
    }

    /// An outcome as `kind:status:operation` for comparison.
    static func label(_ o: BackendOutcome) -> String {
        switch o {
        case .confirmed(let s, _, let id): "confirmed:\(s):\(id ?? "-")"
        case .failed(let s, _): "failed:\(s.map(String.init) ?? "-")"
        case .timedOut: "timed_out"
        case .unknown(let s, _): "unknown:\(s.map(String.init) ?? "-")"
        }
    }

    @Test func onlyA2xxConfirmsAndUncertainWritesAreNeverFailures() {
        let write = Self.tool(.lowWrite, operationIDPath: "ticket.id")
        #expect(Self.label(Self.outcome(201, #"{"ticket":{"id":"INC-7"}}"#, write)) == "confirmed:201:INC-7")
        #expect(Self.label(Self.outcome(200, "{}", write, headers: ["Operation-Id": "op-9"])) == "confirmed:200:op-9")
        #expect(Self.label(Self.outcome(409, "{}", write)) == "failed:409")
        #expect(Self.label(Self.outcome(503, "{}", write)) == "unknown:503")
        #expect(Self.label(Self.outcome(504, "{}", write)) == "timed_out")
        #expect(Self.label(Self.outcome(503, "{}", Self.tool(.read))) == "failed:503")
    }

    @Test func aBackendThatHangsTimesOutAndOneThatIsDownNeverRan() async throws {
        // A listening socket that never answers: accept queue only.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        listen(fd, 16)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        let port = Int(UInt16(bigEndian: addr.sin_port))

        let client = HTTPClientHolder.client
        var hanging = Self.tool(.lowWrite)
        hanging.backendURL = "http://127.0.0.1:\(port)/write"
        hanging.timeoutSeconds = 0.3
        let started = ContinuousClock.now
        let outcome = await ToolBackend(client: client).call(
            hanging, arguments: .object([:]), idempotencyKey: "k",
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            runID: "r")
        #expect(Self.label(outcome) == "timed_out")
        // Without the tool's deadline the call would wait forever (the client has no read
        // timeout of its own). The bound is loose because the suites run in parallel on two
        // shared cores, where a 0.3 s timer has been seen to fire 3 s late.
        #expect(ContinuousClock.now - started < .seconds(20))

        var down = Self.tool(.lowWrite)
        down.backendURL = "http://127.0.0.1:1/write"  // nothing listens on port 1
        down.timeoutSeconds = 1  // the client retries a refused connect until the deadline
        let refused = await ToolBackend(client: client).call(
            down, arguments: .object([:]), idempotencyKey: "k", traceparent: "", runID: "r")
        #expect(Self.label(refused) == "failed:-")  // a refused connection never ran
        if case .failed(_, let reason) = refused { #expect(reason.hasPrefix("backend unreachable")) }
    }

    @Test func resultsPassThroughTheSharedRedactionEngineAndLookupsTeachTheRunState() async throws {
        let dir = TemporaryDirectory("guard-test")
        defer { dir.remove() }
        var policy = RedactionPolicy()
        policy.defaultSet.rules = [.init(name: "credentials", keys: [.init("*password*")], action: .mask)]
        let service = try GuardService(
            policy: GuardPolicy(tools: [], actors: [], rules: [], approverRoles: []), dataDirectory: dir.path,
            backend: ToolBackend(client: HTTPClientHolder.client),
            exporter: SpanExporter(endpoint: nil, token: nil, logger: Logger(label: "test")),
            redactor: try Redactor(policy: policy), logger: Logger(label: "test"))
        let result = try JSONValue.parse(
            Data(
                #"{"user":{"email":"jo@example.com","admin_password":"hunter2hunter2"},"keys":["sk_live_4eC39HqLyjWDarjtT1zdp7dc"],"n":3}"#
                    .utf8))
        let redacted = await service.redact(result, tenant: "acme")
        #expect(redacted.value(at: "user.admin_password") == .string("[REDACTED:credentials]"))
        #expect(redacted.value(at: "user.email") == .string("[REDACTED:email]"))
        #expect(redacted.value(at: "keys.0") == .string("[REDACTED:api_key]"))
        #expect(redacted.value(at: "n") == .int(3))

        var lookup = Self.tool(.read)
        lookup.resolves = Tool.EntityLookup(argument: "name", matches: "matches")
        lookup.recordsCaseState = ["device.corporate_managed": "device.managed"]
        var state = RunState()
        let two = try JSONValue.parse(Data(#"{"matches":[{"id":1},{"id":2}],"device":{"managed":true}}"#.utf8))
        GuardService.learn(from: two, tool: lookup, arguments: .object(["name": .string("John Smith")]), into: &state)
        #expect(state.ambiguousEntities == [RunState.entityDigest("john smith")])
        #expect(state.caseState == ["device.corporate_managed": "true"])
        let one = try JSONValue.parse(Data(#"{"matches":[{"id":1}]}"#.utf8))
        GuardService.learn(from: one, tool: lookup, arguments: .object(["name": .string("JOHN SMITH")]), into: &state)
        #expect(state.ambiguousEntities.isEmpty)
        await service.shutdown()
    }
}

/// One HTTP client for the suite (AsyncHTTPClient's shared singleton).
enum HTTPClientHolder {
    static var client: HTTPClient { HTTPClient.shared }
}

extension GuardServiceTests {
    /// With a collector configured, every answered decision's span is in the outbox when the
    /// answer is given; while the collector is away the outbox grows, and at its bound the
    /// sidecar refuses decisions rather than make unrecorded ones.
    @Test func answeredDecisionsWaitInTheOutboxUpToItsBound() async throws {
        let dir = TemporaryDirectory("guard-outbox")
        defer { dir.remove() }
        // Nothing listens on port 1, and the exporter is not even running: spans only queue.
        let exporter = SpanExporter(
            endpoint: "http://127.0.0.1:1/v1/traces", token: nil, limitBytes: 256 << 10, logger: Logger(label: "test"))
        let service = try GuardService(
            policy: GuardPolicy(tools: [], actors: [], rules: [], approverRoles: []), dataDirectory: dir.path,
            backend: ToolBackend(client: HTTPClientHolder.client), exporter: exporter,
            redactor: try Redactor(policy: RedactionPolicy()), logger: Logger(label: "test"))
        var answered = 0
        var refused: GuardError?
        for i in 0..<20_000 {
            let r = GuardRequest(
                runID: "run-\(i)", actorID: "nobody", tool: "t",
                arguments: .object(["note": .string(String(repeating: "x", count: 400))]))
            do {
                _ = try await service.decide(r)
                answered += 1
                if i % 500 == 0 { #expect(exporter.counters.queued == answered) }
            } catch {
                refused = error
                break
            }
        }
        // About 256 KiB of spans of about 1 KiB each, checked every 64 decisions.
        #expect(answered > 100 && answered < 1_000)
        #expect(exporter.counters.queued == answered)
        let error = try #require(refused)
        #expect(error.description.contains("cannot record more decisions"))
        await service.shutdown()
    }
}
