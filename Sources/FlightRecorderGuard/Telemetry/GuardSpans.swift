import FlightRecorderGuardPolicy
public import FlightRecorderOTLP
import Foundation
import W3CTraceContext

/// The spans the sidecar emits and their attribute names, in one place (README "Sidecar
/// spans" lists the same table). Names follow the OpenTelemetry GenAI conventions where one
/// exists; the policy, approval and operation keys are the ones `AgentKeys` defines, so the
/// causal queries and findings read exactly what the sidecar writes.
public enum GuardSpans {
    // Span names.
    public static let policyCheck = "policy.check"
    public static let approvalRequested = "approval.requested"
    public static let approvalGranted = "approval.granted"
    public static let approvalDenied = "approval.denied"
    /// An operator recorded the real outcome of an uncertain write (links to the execution).
    public static let toolReconciled = "tool.reconciled"
    /// `execute_tool <tool name>`, as the GenAI conventions name tool executions.
    public static func executeTool(_ tool: String) -> String { "execute_tool \(tool)" }

    // Attribute keys.
    public static let runID = RunIdentity.defaultKeys[0]  // agent.run.id
    public static let tenant = "tenant.id"
    public static let actor = "enduser.id"
    public static let operationName = AgentKeys.operationName  // execute_tool on executions
    public static let toolName = AgentKeys.toolName
    public static let toolCallID = AgentKeys.toolCallID
    public static let toolArguments = AgentKeys.toolArguments  // after redaction
    public static let toolTier = AgentKeys.toolTier
    public static let policyOutcome = AgentKeys.policyOutcome
    public static let policyRule = AgentKeys.policyRule
    public static let policyReason = "policy.reason"
    public static let approvalTicket = AgentKeys.approvalTicket
    public static let approver = AgentKeys.approver
    public static let approvalDecision = "approval.decision"  // granted or denied
    public static let idempotencyKey = AgentKeys.idempotencyKey
    public static let operationID = AgentKeys.operationID
    /// succeeded, failed, timed_out, unknown, blocked or awaiting_approval.
    public static let executionStatus = "tool.execution.status"
    public static let httpStatus = "http.response.status_code"
    public static let requestModel = AgentKeys.requestModel
    public static let responseModel = AgentKeys.responseModel
    public static let promptVersion = AgentKeys.promptVersion
    public static let prompt = AgentKeys.prompt
    public static let agentVersion = "gen_ai.agent.version"
}

/// A span's identity: the W3C trace context the sidecar continues and propagates, as the
/// collector's own ID types.
public struct SpanContext: Sendable, Equatable {
    public var traceID: FlightRecorderOTLP.TraceID
    public var spanID: FlightRecorderOTLP.SpanID

    public init(traceID: FlightRecorderOTLP.TraceID, spanID: FlightRecorderOTLP.SpanID) {
        self.traceID = traceID
        self.spanID = spanID
    }

    /// Parses a `traceparent` header with swift-w3c-trace-context; nil when it is absent or
    /// invalid (the sidecar then starts a new trace, as the W3C spec says to).
    public init?(traceparent: String?) {
        guard let traceparent, let parsed = try? TraceContext(traceParentHeaderValue: traceparent),
            let trace = withUnsafeBytes(of: parsed.traceID.bytes, FlightRecorderOTLP.TraceID.init(bytes:)),
            let span = withUnsafeBytes(of: parsed.spanID.bytes, FlightRecorderOTLP.SpanID.init(bytes:))
        else { return nil }
        self.init(traceID: trace, spanID: span)
    }

    public var traceparent: String { "00-\(traceID.hex)-\(spanID.hex)-01" }

    public static func newTraceID() -> FlightRecorderOTLP.TraceID {
        withUnsafeBytes(of: W3CTraceContext.TraceID.random().bytes) { FlightRecorderOTLP.TraceID(bytes: $0)! }
    }

    public static func newSpanID() -> FlightRecorderOTLP.SpanID {
        withUnsafeBytes(of: W3CTraceContext.SpanID.random().bytes) { FlightRecorderOTLP.SpanID(bytes: $0)! }
    }

    /// A context stored as hex (approval and execution records); nil if either is malformed.
    init?(traceHex: String?, spanHex: String?) {
        guard let traceHex, let spanHex, let trace = FlightRecorderOTLP.TraceID(hex: traceHex),
            let span = FlightRecorderOTLP.SpanID(hex: spanHex)
        else { return nil }
        self.init(traceID: trace, spanID: span)
    }
}

/// One span the sidecar records, before encoding.
public struct GuardSpan: Sendable {
    public enum Kind: UInt64, Sendable {
        case `internal` = 1
        case client = 3
    }

    public enum Value: Sendable, Equatable {
        case string(String), int(Int64), bool(Bool), double(Double)
    }

    public var context: SpanContext
    public var parentSpanID: FlightRecorderOTLP.SpanID?
    public var name: String
    public var kind: Kind
    public var startNanos: UInt64
    public var endNanos: UInt64
    public var tenant: String
    public var attributes: [(String, Value)]
    public var links: [SpanContext]
    /// nil: unset; true: error, with the message.
    public var error: String?

    public init(
        context: SpanContext, parentSpanID: FlightRecorderOTLP.SpanID?, name: String, kind: Kind = .internal,
        startNanos: UInt64,
        endNanos: UInt64, tenant: String, attributes: [(String, Value)], links: [SpanContext] = [], error: String? = nil
    ) {
        self.context = context
        self.parentSpanID = parentSpanID
        self.name = name
        self.kind = kind
        self.startNanos = startNanos
        self.endNanos = endNanos
        self.tenant = tenant
        self.attributes = attributes
        self.links = links
        self.error = error
    }

    /// Starts a span under `parent` (the agent's `traceparent`), or a new trace without one.
    public static func context(under parent: SpanContext?) -> (SpanContext, parent: FlightRecorderOTLP.SpanID?) {
        (
            SpanContext(traceID: parent?.traceID ?? SpanContext.newTraceID(), spanID: SpanContext.newSpanID()),
            parent?.spanID
        )
    }
}

/// Encodes spans as an OTLP `ExportTraceServiceRequest`, one `ResourceSpans` per tenant.
enum GuardSpanEncoder {
    static let serviceName = "flightrec-guard"

    static func request(_ spans: [GuardSpan]) -> [UInt8] {
        var byTenant: [String: [GuardSpan]] = [:]
        for s in spans { byTenant[s.tenant, default: []].append(s) }
        var w = ProtobufWriter(capacity: 512 * spans.count)
        for (tenant, group) in byTenant.sorted(by: { $0.key < $1.key }) {
            w.messageField(1) { rs in
                rs.messageField(1) { r in
                    keyValue(&r, 1, "service.name", .string(serviceName))
                    keyValue(&r, 1, GuardSpans.tenant, .string(tenant))
                }
                rs.messageField(2) { ss in
                    ss.messageField(1) { scope in scope.stringField(1, serviceName) }
                    for s in group { ss.messageField(2) { span(&$0, s) } }
                }
            }
        }
        return w.bytes
    }

    static func span(_ p: inout ProtobufWriter, _ s: GuardSpan) {
        p.bytesField(1, s.context.traceID.bytes)
        p.bytesField(2, s.context.spanID.bytes)
        if let parent = s.parentSpanID { p.bytesField(4, parent.bytes) }
        p.stringField(5, s.name)
        p.varintField(6, s.kind.rawValue)
        p.fixed64Field(7, s.startNanos)
        p.fixed64Field(8, max(s.endNanos, s.startNanos))
        for (k, v) in s.attributes { keyValue(&p, 9, k, v) }
        for link in s.links {
            p.messageField(13) { l in
                l.bytesField(1, link.traceID.bytes)
                l.bytesField(2, link.spanID.bytes)
            }
        }
        p.messageField(15) { st in
            if let message = s.error {
                st.stringField(2, message)
                st.varintField(3, 2)
            } else {
                st.varintField(3, 1)
            }
        }
    }

    static func keyValue(_ w: inout ProtobufWriter, _ field: Int, _ key: String, _ value: GuardSpan.Value) {
        w.messageField(field) { kv in
            kv.stringField(1, key)
            kv.messageField(2) { v in
                switch value {
                case .string(let s): v.stringField(1, s)
                case .bool(let b): v.varintField(2, b ? 1 : 0)
                case .int(let i): v.int64Field(3, i)
                case .double(let d): v.doubleField(4, d)
                }
            }
        }
    }
}
