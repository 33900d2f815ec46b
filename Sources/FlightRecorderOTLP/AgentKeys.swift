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

    /// A model call's token usage (GenAI semantic conventions), and the names the conventions
    /// used before 1.27 (still sent by older instrumentations), read when the current ones
    /// are absent.
    public static let inputTokens = "gen_ai.usage.input_tokens"
    public static let outputTokens = "gen_ai.usage.output_tokens"
    public static let legacyInputTokens = "gen_ai.usage.prompt_tokens"
    public static let legacyOutputTokens = "gen_ai.usage.completion_tokens"
    /// All four, for the question whether a span reports token usage at all.
    public static let tokenUsageKeys = [inputTokens, outputTokens, legacyInputTokens, legacyOutputTokens]

    /// `gen_ai.operation.name` values of a model call (the GenAI client operations).
    public static let modelOperations = ["chat", "text_completion", "generate_content", "embeddings"]
    /// Words that mark a `tool.execution.status`, an `error.type` or an ERROR span's status
    /// message as a timeout (any ASCII case): `TimeoutError`, `ReadTimeout`, `timed out`,
    /// gRPC's `DEADLINE_EXCEEDED`, Go's `context deadline exceeded`. The OTel SDKs set an
    /// escaped exception's status message to its type and text, so a tool span that raised
    /// `TimeoutError` counts as a timeout without `error.type`.
    public static let timeoutMarkers = [
        "timeout", "timed_out", "timedout", "timed out", "deadline_exceeded", "deadline exceeded", "deadlineexceeded",
    ]

    /// Whether a `tool.risk_tier` is a write tier: one naming "write" in any ASCII case (the
    /// sidecar's `low_write` and `privileged_write`, and an agent's own such as
    /// `financial_write`). Findings, metrics and stats share this rule.
    public static func isWriteTier(_ tier: String?) -> Bool {
        guard var tier else { return false }
        return tier.withUTF8 { isWriteTier(bytes: $0) }
    }

    /// `isWriteTier` of UTF-8 bytes (ingest's C strings: `SpanMetrics`).
    static func isWriteTier(bytes t: UnsafeBufferPointer<UInt8>) -> Bool {
        writeWord.withUnsafeBufferPointer { containsFolded(t, $0) }
    }

    /// The span event the OTel SDKs record for an exception (`record_exception`, `RecordError`,
    /// `recordException`), and the attributes of it that may name a timeout: an ERROR span whose
    /// exception's type or message names one (`TimeoutError`, `SocketTimeoutException`,
    /// `context deadline exceeded`) timed out even when its status carries no message.
    public static let exceptionEvent = "exception"
    public static let exceptionType = "exception.type"
    public static let exceptionMessage = "exception.message"

    /// Whether an ERROR span's own words name a timeout: its status message (what an OTel SDK
    /// records for an escaped `TimeoutError`) or its recorded exception (`exceptionEvent`).
    /// The stats and the findings ask this of an ERROR span; ingest asks it of the C structs
    /// (`SpanMetrics`).
    public static func failureNamesTimeout(_ span: SpanRecord) -> Bool {
        namesTimeout(span.statusMessage)
            || span.events.contains { event in
                event.name == exceptionEvent
                    && event.attributes.contains {
                        ($0.key == exceptionType || $0.key == exceptionMessage) && namesTimeout($0.value.scalarString)
                    }
            }
    }

    /// The tool a span named as the GenAI conventions name a tool execution (`execute_tool
    /// {tool}`) names: what follows the prefix, nil without it.
    public static func executedTool(spanName name: String) -> String? {
        name.hasPrefix("execute_tool ") ? String(name.dropFirst(13)) : nil
    }

    /// Whether `text` contains one of `timeoutMarkers`, ignoring ASCII case.
    public static func namesTimeout(_ text: String?) -> Bool {
        guard var text, !text.isEmpty else { return false }
        return text.withUTF8 { namesTimeout(bytes: $0) }
    }

    /// `namesTimeout` of UTF-8 bytes: ingest's C strings (`SpanMetrics.meansTimeout`) use the
    /// same list and search.
    static func namesTimeout(bytes t: UnsafeBufferPointer<UInt8>) -> Bool {
        timeoutMarkerBytes.contains { w in w.withUnsafeBufferPointer { containsFolded(t, $0) } }
    }

    static let timeoutMarkerBytes = timeoutMarkers.map { Array($0.utf8) }
    static let writeWord = Array("write".utf8)

    /// Whether `text` contains `word` (lower-case ASCII), ignoring ASCII case: a byte search,
    /// for Swift strings (their UTF-8) and ingest's C strings (`SpanMetrics`) alike. Not
    /// `lowercased().contains`: a new string and the generic substring search for every tool
    /// span cost an audit verification 6 % of its CPU (`perf`, the findings' write test).
    @inline(__always)
    static func containsFolded(_ t: UnsafeBufferPointer<UInt8>, _ w: UnsafeBufferPointer<UInt8>) -> Bool {
        @inline(__always) func lower(_ b: UInt8) -> UInt8 { b &- 65 < 26 ? b | 0x20 : b }
        guard let first = w.first, t.count >= w.count else { return false }
        var i = 0
        while i <= t.count - w.count {
            if lower(t[i]) == first {
                var j = 1
                while j < w.count, lower(t[i + j]) == w[j] { j += 1 }
                if j == w.count { return true }
            }
            i += 1
        }
        return false
    }

    /// External IDs indexed at ingest by default, so a side effect leads back to its run.
    public static let defaultExternalIDKeys = [operationID, ticketID, idempotencyKey, approvalTicket, toolCallID]
    /// Attributes indexed at ingest by default for `where` searches (with the external IDs).
    /// `enduser.id` too: a data subject's runs are found by it for erasure (`flightrec erase --subject`).
    public static let defaultSearchKeys = [
        toolName, operationName, policyOutcome, policyRule, requestModel, toolTier, endUserID,
    ]
    public static let endUserID = "enduser.id"
}
