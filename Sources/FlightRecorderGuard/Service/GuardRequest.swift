public import FlightRecorderGuardPolicy
public import FlightRecorderOTLP

/// A tool call as an agent sends it to `/v1/decide` or `/v1/execute`.
public struct GuardRequest: Sendable {
    public var runID: String
    public var actorID: String
    public var tool: String
    public var arguments: JSONValue
    /// Required by `execute`: the same key always answers with the same stored result.
    public var idempotencyKey: String?
    public var toolCallID: String?
    public var riskScore: Double?
    public var model: ModelContext
    public var usage: Usage?
    /// The agent's span, from its `traceparent` header; the sidecar's spans continue it.
    public var parent: SpanContext?

    public init(
        runID: String, actorID: String, tool: String, arguments: JSONValue, idempotencyKey: String? = nil,
        toolCallID: String? = nil, riskScore: Double? = nil, model: ModelContext = ModelContext(), usage: Usage? = nil,
        parent: SpanContext? = nil
    ) {
        self.runID = runID
        self.actorID = actorID
        self.tool = tool
        self.arguments = arguments
        self.idempotencyKey = idempotencyKey
        self.toolCallID = toolCallID
        self.riskScore = riskScore
        self.model = model
        self.usage = usage
        self.parent = parent
    }

    var call: ToolCall {
        ToolCall(runID: runID, actorID: actorID, tool: tool, arguments: arguments, riskScore: riskScore)
    }
}

/// Which model proposed the call, when the agent says so; recorded on the spans.
public struct ModelContext: Sendable, Equatable {
    public var requestModel: String?
    public var responseModel: String?
    public var promptVersion: String?
    public var prompt: String?
    public var agentVersion: String?

    public init(
        requestModel: String? = nil, responseModel: String? = nil, promptVersion: String? = nil, prompt: String? = nil,
        agentVersion: String? = nil
    ) {
        self.requestModel = requestModel
        self.responseModel = responseModel
        self.promptVersion = promptVersion
        self.prompt = prompt
        self.agentVersion = agentVersion
    }
}

/// Model usage since the agent's previous call to the sidecar; added to the run's budget.
public struct Usage: Sendable, Equatable {
    public var inputTokens: Int
    public var outputTokens: Int
    public var costUSD: Double

    public init(inputTokens: Int = 0, outputTokens: Int = 0, costUSD: Double = 0) {
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.costUSD = costUSD
    }
}

/// The answer to `decide`, with the approval's state when one is involved.
public struct DecideAnswer: Sendable, Encodable, Equatable {
    public var outcome: Decision.Outcome
    public var reason: String
    public var rule: String
    public var ticket: String?
    /// pending, granted, denied (nil when no approval is involved).
    public var approvalStatus: String?
    public var violations: [String]
    enum CodingKeys: String, CodingKey {
        case outcome
        case reason
        case rule
        case ticket
        case approvalStatus = "approval_status"
        case violations
    }

}

/// The answer to `execute`.
public struct ExecuteAnswer: Sendable, Encodable {
    /// succeeded, failed, timed_out, unknown, awaiting_approval or blocked.
    public var status: String
    public var idempotencyKey: String
    public var runId: String
    public var tool: String
    public var reason: String
    public var rule: String
    public var ticket: String?
    public var operationId: String?
    public var backendStatus: Int?
    /// The backend's answer after redaction.
    public var result: JSONValue?
    /// True when this is the stored answer to an earlier request with the same key.
    public var replayed: Bool
    public var violations: [String]
    /// How long the backend call took (not encoded; the API reports it in `Server-Timing`).
    public var backendSeconds: Double?

    enum CodingKeys: String, CodingKey {
        case status
        case idempotencyKey = "idempotency_key"
        case runId = "run_id"
        case tool
        case reason
        case rule
        case ticket
        case operationId = "operation_id"
        case backendStatus = "backend_status"
        case result
        case replayed
        case violations
    }

    init(_ r: ExecutionRecord, result: JSONValue?, replayed: Bool, violations: [String] = []) {
        status = r.status.rawValue
        idempotencyKey = r.idempotencyKey
        runId = r.runID
        tool = r.tool
        reason = r.reason
        rule = r.rule
        ticket = r.ticket
        operationId = r.operationID
        backendStatus = r.backendStatus
        self.result = result
        self.replayed = replayed
        self.violations = violations
    }
}

/// A request the sidecar refuses outright (not a policy decision): each maps to an HTTP
/// status with a precise message that never echoes argument values.
public struct GuardError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The sidecar's own list; outside it, the HTTP answer (`apiError`) is what counts.
    enum Kind: Sendable, Equatable {
        case badRequest, unauthorized, forbidden, notFound, conflict, tooLarge, unavailable
    }

    let kind: Kind
    public let message: String
    public let retryAfterSeconds: Int?

    init(_ kind: Kind, _ message: String, retryAfterSeconds: Int? = nil) {
        self.kind = kind
        self.message = message
        self.retryAfterSeconds = retryAfterSeconds
    }

    public var description: String { message }
}
