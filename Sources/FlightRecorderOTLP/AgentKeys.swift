/// The attribute names the causal queries and findings read, in one place. They follow the
/// OpenTelemetry GenAI conventions where one exists (`gen_ai.*`); the policy, approval and
/// operation keys are FlightRecorder's own, and the policy sidecar writes exactly these.
public enum AgentKeys {
    public static let operationName = "gen_ai.operation.name"  // chat, execute_tool, invoke_agent, ...
    public static let requestModel = "gen_ai.request.model"
    public static let responseModel = "gen_ai.response.model"
    public static let promptVersion = "gen_ai.prompt.version"
    public static let prompt = "gen_ai.prompt"
    /// The GenAI conventions' structured prompt (newer SDKs), used when `gen_ai.prompt` is absent.
    public static let inputMessages = "gen_ai.input.messages"
    public static let toolName = "gen_ai.tool.name"
    public static let toolCallID = "gen_ai.tool.call.id"
    public static let toolArguments = "gen_ai.tool.call.arguments"
    /// `read`, `low_write` or `privileged_write`.
    public static let toolTier = "tool.risk_tier"
    /// `allowed`, `blocked` or `approval_required`.
    public static let policyOutcome = "policy.outcome"
    public static let policyRule = "policy.rule"
    public static let approvalTicket = "approval.ticket"
    public static let approver = "approval.approver"
    public static let idempotencyKey = "idempotency.key"
    public static let operationID = "operation.id"
    public static let ticketID = "ticket.id"
    public static let agentVersion = "service.version"

    /// `gen_ai.operation.name` values of a model call (the GenAI client operations).
    public static let modelOperations = ["chat", "text_completion", "generate_content", "embeddings"]
    /// Words that mark a status or `error.type` as a timeout (any ASCII case).
    public static let timeoutMarkers = ["timeout", "timed_out", "timedout"]

    /// External IDs indexed at ingest by default, so a side effect leads back to its run.
    public static let defaultExternalIDKeys = [operationID, ticketID, idempotencyKey, approvalTicket, toolCallID]
    /// Attributes indexed at ingest by default for `where` searches (with the external IDs).
    /// `enduser.id` too: a data subject's runs are found by it for erasure (`flightrec erase --subject`).
    public static let defaultSearchKeys = [
        toolName, operationName, policyOutcome, policyRule, requestModel, toolTier, endUserID,
    ]
    public static let endUserID = "enduser.id"
}
