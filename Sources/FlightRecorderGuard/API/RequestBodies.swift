import FlightRecorderHTTP
import FlightRecorderOTLP
import Foundation
import NIOCore

/// The sidecar's request bodies (Schemas/api/guard-api.yaml), decoded with `Codable`.
/// Decoding is strict: an unknown field is refused, and every error names the field and what
/// it must be, never the value that was sent.
enum RequestBody {
    /// Decodes `T` from a JSON object body.
    static func decode<T: Decodable>(_ type: T.Type, from body: ByteBuffer) throws -> T {
        guard body.readableBytes > 0 else { throw GuardError(.badRequest, "the body must be a JSON object") }
        let data = Data(body.readableBytesView)
        guard (try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])) != nil else {
            throw GuardError(.badRequest, "the body is not valid JSON")
        }
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch let e as FieldError {
            throw GuardError(.badRequest, e.message)
        } catch let e as DecodingError {
            throw GuardError(.badRequest, describe(e))
        }
    }

    /// A message naming the field; JSONDecoder's own descriptions can quote values, so they
    /// are never passed on.
    static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String { keys.map(\.stringValue).joined(separator: ".") }
        switch error {
        case .typeMismatch(let type, let context):
            if context.codingPath.isEmpty { return "the body must be a JSON object" }
            let expected =
                type == String.self
                ? "a string"
                : type == Bool.self
                    ? "true or false"
                    : [Int.self, Int64.self, UInt64.self].contains(where: { $0 == type })
                        ? "an integer"
                        : type == Double.self ? "a number" : "of another type"
            return "\(path(context.codingPath)) must be \(expected)"
        case .keyNotFound(let key, let context):
            return "\(path(context.codingPath + [key])) is required"
        case .valueNotFound(_, let context):
            return "\(path(context.codingPath)) is required"
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty
                ? "the body is not valid JSON" : "\(path(context.codingPath)) is not valid"
        @unknown default:
            return "the body is not a valid request"
        }
    }
}

/// A field-level refusal thrown while decoding; its message names the field.
struct FieldError: Error {
    var message: String
}

/// Any JSON key, to list what a body carries.
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

extension Decoder {
    /// Refuses a body carrying a field `Keys` does not name (`prefix` for nested objects).
    func refuseUnknownFields<Keys: CodingKey>(_ keys: Keys.Type, prefix: String = "") throws {
        let all = try container(keyedBy: AnyKey.self)
        if let unknown = all.allKeys.map(\.stringValue).sorted().first(where: { Keys(stringValue: $0) == nil }) {
            throw FieldError(message: "unknown field \(prefix)\(unknown.prefix(64))")
        }
    }
}

/// `POST /v1/decide` and `POST /v1/execute`.
struct CallBody: Decodable {
    var runID: String
    var actor: String?
    var tool: String
    var arguments: JSONValue
    var idempotencyKey: String?
    var toolCallID: String?
    var riskScore: Double?
    var model: String?
    var responseModel: String?
    var promptVersion: String?
    var prompt: String?
    var agentVersion: String?
    var usage: UsageBody?

    enum CodingKeys: String, CodingKey {
        case runID = "run_id"
        case actor, tool, arguments
        case idempotencyKey = "idempotency_key"
        case toolCallID = "tool_call_id"
        case riskScore = "risk_score"
        case model
        case responseModel = "response_model"
        case promptVersion = "prompt_version"
        case prompt
        case agentVersion = "agent_version"
        case usage
    }

    init(from decoder: any Decoder) throws {
        try decoder.refuseUnknownFields(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        guard let run = try? c.decodeIfPresent(String.self, forKey: .runID), !run.isEmpty, run.utf8.count <= 256 else {
            throw FieldError(message: "run_id is required (a string of at most 256 bytes)")
        }
        runID = run
        actor = try c.decodeIfPresent(String.self, forKey: .actor)
        guard let tool = try c.decodeIfPresent(String.self, forKey: .tool), !tool.isEmpty else {
            throw FieldError(message: "tool is required")
        }
        self.tool = tool
        guard let arguments = try c.decodeIfPresent(JSONValue.self, forKey: .arguments), arguments != .null else {
            throw FieldError(message: "arguments is required (a JSON object)")
        }
        guard case .object = arguments else { throw FieldError(message: "arguments must be a JSON object") }
        self.arguments = arguments
        idempotencyKey = try c.decodeIfPresent(String.self, forKey: .idempotencyKey)
        if let key = idempotencyKey, key.isEmpty || key.utf8.count > 256 {
            throw FieldError(message: "idempotency_key must be 1 to 256 bytes")
        }
        toolCallID = try c.decodeIfPresent(String.self, forKey: .toolCallID)
        do {
            riskScore = try c.decodeIfPresent(Double.self, forKey: .riskScore)
        } catch {
            throw FieldError(message: "risk_score must be a number between 0 and 1")
        }
        if let r = riskScore, !(0...1).contains(r) {
            throw FieldError(message: "risk_score must be a number between 0 and 1")
        }
        model = try c.decodeIfPresent(String.self, forKey: .model)
        responseModel = try c.decodeIfPresent(String.self, forKey: .responseModel)
        promptVersion = try c.decodeIfPresent(String.self, forKey: .promptVersion)
        prompt = try c.decodeIfPresent(String.self, forKey: .prompt)
        agentVersion = try c.decodeIfPresent(String.self, forKey: .agentVersion)
        usage = try c.decodeIfPresent(UsageBody.self, forKey: .usage)
    }

    /// What the service works with, once the actor is known.
    func request(actor: String, parent: SpanContext?) -> GuardRequest {
        GuardRequest(
            runID: runID, actorID: actor, tool: tool, arguments: arguments, idempotencyKey: idempotencyKey,
            toolCallID: toolCallID, riskScore: riskScore,
            model: ModelContext(
                requestModel: model, responseModel: responseModel, promptVersion: promptVersion, prompt: prompt,
                agentVersion: agentVersion),
            usage: usage.map { Usage(inputTokens: $0.inputTokens, outputTokens: $0.outputTokens, costUSD: $0.costUSD) },
            parent: parent)
    }
}

/// `usage` of a call: tokens and cost the agent reports, added to the run's budgets.
struct UsageBody: Decodable {
    var inputTokens = 0
    var outputTokens = 0
    var costUSD = 0.0

    enum CodingKeys: String, CodingKey {
        case inputTokens = "input_tokens"
        case outputTokens = "output_tokens"
        case costUSD = "cost_usd"
    }

    init(from decoder: any Decoder) throws {
        try decoder.refuseUnknownFields(CodingKeys.self, prefix: "usage.")
        let c: KeyedDecodingContainer<CodingKeys>
        do {
            c = try decoder.container(keyedBy: CodingKeys.self)
        } catch {
            throw FieldError(message: "usage must be an object")
        }
        inputTokens = try Self.count(c, .inputTokens)
        outputTokens = try Self.count(c, .outputTokens)
        if Self.present(c, .costUSD) {
            guard let cost = try? c.decode(Double.self, forKey: .costUSD), cost >= 0, cost.isFinite else {
                throw FieldError(message: "usage.cost_usd must be a non-negative number")
            }
            costUSD = cost
        }
    }

    /// Present and not null.
    static func present(_ c: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys) -> Bool {
        c.contains(key) && (try? c.decodeNil(forKey: key)) == false
    }

    static func count(_ c: KeyedDecodingContainer<CodingKeys>, _ key: CodingKeys) throws -> Int {
        guard present(c, key) else { return 0 }
        guard let n = try? c.decode(Int.self, forKey: key), n >= 0, n < Int(Int32.max) else {
            throw FieldError(message: "usage.\(key.rawValue) must be a non-negative integer")
        }
        return n
    }
}

/// `POST /v1/approvals/{ticket}/grant` and `/deny`.
struct ApprovalBody: Decodable {
    var approver: String?
    var note: String?

    enum CodingKeys: String, CodingKey { case approver, note }

    init(from decoder: any Decoder) throws {
        try decoder.refuseUnknownFields(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        approver = try c.decodeIfPresent(String.self, forKey: .approver)
        note = try c.decodeIfPresent(String.self, forKey: .note)
    }
}

/// `POST /v1/executions/{key}/reconcile`.
struct ReconcileBody: Decodable {
    var actor: String?
    var succeeded: Bool
    var operationID: String?
    var note: String?

    enum CodingKeys: String, CodingKey {
        case actor, status
        case operationID = "operation_id"
        case note
    }

    init(from decoder: any Decoder) throws {
        try decoder.refuseUnknownFields(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        actor = try c.decodeIfPresent(String.self, forKey: .actor)
        let status = try c.decodeIfPresent(String.self, forKey: .status)
        guard status == "succeeded" || status == "failed" else {
            throw FieldError(message: "status must be succeeded or failed")
        }
        succeeded = status == "succeeded"
        operationID = try c.decodeIfPresent(String.self, forKey: .operationID)
        note = try c.decodeIfPresent(String.self, forKey: .note)
    }
}
