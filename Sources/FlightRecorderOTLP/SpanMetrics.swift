import COTLP

#if canImport(Glibc)
import Glibc
#endif

/// What the agent metrics read from spans, and how: which attributes name the agent version
/// and the task type, and the price table for cost. One value for ingest, recovery and
/// `flightrec reindex`, so all three derive the same counts from the same stored spans.
public struct MetricRules: Sendable, Equatable {
    public static let defaultVersionKeys = ["gen_ai.agent.version", "agent.version"]
    public static let defaultTaskTypeKeys = ["agent.task.type", "gen_ai.agent.name"]

    /// US dollars per million tokens.
    public struct Price: Sendable, Equatable {
        public var input: Double
        public var output: Double

        public init(input: Double, output: Double) {
            self.input = input
            self.output = output
        }
    }

    /// Looked for on the span, then on its resource, then `service.version` on the resource.
    public let versionKeys: [String]
    /// Looked for on the span, then on its resource.
    public let taskTypeKeys: [String]
    /// By model name (`gen_ai.response.model`, else `gen_ai.request.model`).
    public let prices: [String: Price]

    /// Every attribute key the metrics read, looked up once per span attribute.
    package let table: CKeyTable
    package let versionSlots: [Int]
    package let taskSlots: [Int]
    /// The version keys, then `service.version` (a resource's).
    let versionCKeys: [CKey]
    /// The version keys alone (a span's).
    let spanVersionCKeys: [CKey]
    let taskCKeys: [CKey]

    /// The fixed keys, in slot order (`Slot`).
    static let fixedKeys = [
        AgentKeys.operationName, AgentKeys.toolName, AgentKeys.toolTier, "tool.execution.status", "error.type",
        AgentKeys.policyOutcome, AgentKeys.policyRule, "approval.decision", AgentKeys.requestModel,
        AgentKeys.responseModel, "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.cost",
        "flightrec.redacted.rules",
    ]

    enum Slot: Int {
        case operation = 0, tool, tier, status, errorType, policyOutcome, policyRule, approval, requestModel,
            responseModel, inputTokens, outputTokens, cost, redactedRules
    }

    public init(
        versionKeys: [String] = MetricRules.defaultVersionKeys,
        taskTypeKeys: [String] = MetricRules.defaultTaskTypeKeys,
        prices: [String: Price] = [:]
    ) {
        self.versionKeys = versionKeys
        self.taskTypeKeys = taskTypeKeys
        self.prices = prices
        var names = Self.fixedKeys
        func slot(_ k: String) -> Int {
            if let i = names.firstIndex(of: k) { return i }
            names.append(k)
            return names.count - 1
        }
        versionSlots = versionKeys.map(slot)
        taskSlots = taskTypeKeys.map(slot)
        table = CKeyTable(names.map(CKey.init))
        versionCKeys = (versionKeys + ["service.version"]).map(CKey.init)
        spanVersionCKeys = versionKeys.map(CKey.init)
        taskCKeys = taskTypeKeys.map(CKey.init)
    }

    public static func == (a: MetricRules, b: MetricRules) -> Bool {
        a.versionKeys == b.versionKeys && a.taskTypeKeys == b.taskTypeKeys && a.prices == b.prices
    }

    var slotCount: Int { table.keys.count }
}

/// A label value as the metrics may show it: attribute values become label values only for
/// the bounded labels, and only when they look like identifiers (ASCII letters, digits and
/// `._-:/+`, at most 64 bytes). Anything else (free text, an e-mail address, a redaction
/// mask) becomes `other`, so no attribute value that could be sensitive reaches a label and
/// the series stay bounded.
public enum MetricLabel {
    public static let missing = "unknown"
    public static let other = "other"
    static let maxBytes = 64

    @inline(__always)
    static func allowed(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"),
            UInt8(ascii: ":"), UInt8(ascii: "/"), UInt8(ascii: "+"):
            true
        default: false
        }
    }

    public static func value(_ s: String?) -> String {
        guard let s, !s.isEmpty else { return missing }
        guard s.utf8.count <= maxBytes, s.utf8.allSatisfy(allowed) else { return other }
        return s
    }

    static func value(_ c: UnsafePointer<CChar>) -> String {
        var n = 0
        while c[n] != 0 {
            guard n < maxBytes, allowed(UInt8(truncatingIfNeeded: c[n])) else { return other }
            n += 1
        }
        return n == 0 ? missing : String(cString: c)
    }
}

/// Derives the span families of `MetricFamily` from one unpacked span, with the values of
/// the `MetricRules` keys its attributes hold (`values`, by slot).
enum SpanMetrics {
    /// Label values shared by every family of a resource's spans.
    struct ResourceLabels {
        var tenant: String
        var agent: String
        var version: String?
        var taskType: String?

        init(
            attributes: UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>?, count: Int, facts: ResourceFacts,
            rules: MetricRules
        ) {
            tenant = MetricLabel.value(facts.tenantKey)
            agent = MetricLabel.value(facts.agent)
            version = firstValue(of: rules.versionCKeys, in: attributes, count: count).map(MetricLabel.value)
            taskType = firstValue(of: rules.taskCKeys, in: attributes, count: count).map(MetricLabel.value)
        }
    }

    typealias Values = UnsafeMutableBufferPointer<UnsafeMutablePointer<CAnyValue>?>

    static func string(_ values: Values, _ slot: MetricRules.Slot) -> UnsafePointer<CChar>? {
        guard let v = values[slot.rawValue]?.pointee, v.value_case.rawValue == 1, let s = v.string_value,
            s.pointee != 0
        else { return nil }
        return UnsafePointer(s)
    }

    static func label(_ values: Values, _ slot: MetricRules.Slot) -> String? {
        string(values, slot).map(MetricLabel.value)
    }

    static func number(_ values: Values, _ slot: Int) -> Double? {
        guard let v = values[slot]?.pointee else { return nil }
        switch v.value_case.rawValue {
        case 3: return Double(v.int_value)
        case 4: return v.double_value.isFinite ? v.double_value : nil
        case 1: return v.string_value.flatMap { strtod($0, nil) }
        default: return nil
        }
    }

    static func equals(_ s: UnsafePointer<CChar>?, _ literal: StaticString) -> Bool {
        guard let s else { return false }
        return literal.withUTF8Buffer { l in
            strlen(s) == l.count && memcmp(s, l.baseAddress!, l.count) == 0
        }
    }

    /// Whether the C string contains "timeout" or "timed_out", ignoring ASCII case.
    static func meansTimeout(_ s: UnsafePointer<CChar>?) -> Bool {
        guard let s else { return false }
        let lower = String(cString: s).lowercased()
        return lower.contains("timeout") || lower.contains("timed_out") || lower.contains("timedout")
    }

    static let modelOperations: Set<String> = ["chat", "text_completion", "generate_content", "embeddings"]

    /// The agent version each run's root span in the request names (run ID to label): the
    /// second place the version is looked for, after the span itself. A root that arrives in
    /// a later request than its run's other spans is not seen here; the run families, observed
    /// once the run has settled, always use it.
    static func rootVersions(_ req: CExportRequest, runIdentity: RunIdentity, rules: MetricRules) -> [String: String] {
        var out: [String: String] = [:]
        for r in 0..<req.n_resource_spans {
            guard let rs = req.resource_spans[r]?.pointee else { continue }
            let resourceRun = firstValue(
                of: runIdentity.cKeys, in: rs.resource?.pointee.attributes,
                count: rs.resource?.pointee.n_attributes ?? 0)
            for s in 0..<rs.n_scope_spans {
                guard let ss = rs.scope_spans[s]?.pointee else { continue }
                for i in 0..<ss.n_spans {
                    guard let span = ss.spans[i]?.pointee, SpanID(bytes: span.parent_span_id.rawBuffer) == nil,
                        let version = firstValue(
                            of: rules.spanVersionCKeys, in: span.attributes, count: span.n_attributes),
                        let run = firstValue(of: runIdentity.cKeys, in: span.attributes, count: span.n_attributes)
                            ?? resourceRun
                    else { continue }
                    out[run] = MetricLabel.value(version)
                }
            }
        }
        return out
    }

    static func observe(
        span: CSpan, values: Values, resource r: ResourceLabels, rootVersion: String?, runID: () -> String,
        rules: MetricRules, into d: inout MetricDeltas
    ) {
        var version = rootVersion ?? r.version
        for s in rules.versionSlots {
            if let v = values[s], v.pointee.value_case.rawValue == 1, let c = v.pointee.string_value, c.pointee != 0 {
                version = MetricLabel.value(c)
                break
            }
        }
        let agentVersion = version ?? MetricLabel.missing
        let operation = string(values, .operation)
        let endSeconds = Double(span.end_time_unix_nano) / 1e9
        let seconds = Double(span.end_time_unix_nano &- min(span.start_time_unix_nano, span.end_time_unix_nano)) / 1e9
        let tool = label(values, .tool) ?? MetricLabel.missing
        let tier = label(values, .tier) ?? MetricLabel.missing

        if equals(operation, "execute_tool") {
            let status = string(values, .status)
            // An execution the sidecar blocked or left waiting for approval never ran.
            if !equals(status, "blocked") && !equals(status, "awaiting_approval") {
                let timedOut = meansTimeout(status) || meansTimeout(string(values, .errorType))
                let failed =
                    span.status?.pointee.code.rawValue == 2 || equals(status, "failed") || equals(status, "unknown")
                let outcome = timedOut ? "timeout" : failed ? "error" : "ok"
                var task = r.taskType
                for s in rules.taskSlots {
                    if let v = values[s], v.pointee.value_case.rawValue == 1, let c = v.pointee.string_value,
                        c.pointee != 0
                    {
                        task = MetricLabel.value(c)
                        break
                    }
                }
                d.count(
                    .toolCalls, [r.tenant, r.agent, agentVersion, task ?? MetricLabel.missing, tool, tier, outcome])
                d.observe(
                    .toolCallDuration, [r.tenant, r.agent, agentVersion, tool, tier], seconds,
                    exemplar: .init(runID: runID(), value: seconds, time: endSeconds))
                if tier.contains("write") && (timedOut || equals(status, "unknown")) {
                    d.count(.uncertainWrites, [r.tenant, r.agent, agentVersion, tool, tier])
                }
            }
        }
        if let outcome = label(values, .policyOutcome) {
            let rule = label(values, .policyRule) ?? MetricLabel.missing
            d.count(.policyDecisions, [r.tenant, r.agent, agentVersion, tool, tier, outcome, rule])
        }
        var decision: String?
        if let s = string(values, .approval) {
            decision = equals(s, "granted") ? "granted" : equals(s, "denied") ? "denied" : nil
        } else if let name = span.name {
            decision = equals(name, "approval.granted") ? "granted" : equals(name, "approval.denied") ? "denied" : nil
        }
        if let decision { d.count(.approvals, [r.tenant, r.agent, agentVersion, tool, decision]) }

        let input = number(values, MetricRules.Slot.inputTokens.rawValue)
        let output = number(values, MetricRules.Slot.outputTokens.rawValue)
        let isModelCall =
            operation.map { modelOperations.contains(String(cString: $0)) } ?? (input != nil || output != nil)
        if isModelCall {
            let modelName = string(values, .responseModel) ?? string(values, .requestModel)
            let model = modelName.map(MetricLabel.value) ?? MetricLabel.missing
            let labels = [r.tenant, r.agent, agentVersion, model]
            let run = runID()
            let exemplar = { (v: Double) in HistogramDelta.Exemplar(runID: run, value: v, time: endSeconds) }
            if let input, input >= 0 { d.observe(.tokenUsage, labels + ["input"], input, exemplar: exemplar(input)) }
            if let output, output >= 0 {
                d.observe(.tokenUsage, labels + ["output"], output, exemplar: exemplar(output))
            }
            d.observe(.operationDuration, labels, seconds, exemplar: exemplar(seconds))
            var cost = number(values, MetricRules.Slot.cost.rawValue)
            if cost == nil, let modelName,
                let price = rules.prices[String(cString: modelName)]
                    ?? string(values, .requestModel).flatMap({ rules.prices[String(cString: $0)] })
            {
                cost = (input ?? 0) * price.input / 1e6 + (output ?? 0) * price.output / 1e6
            }
            if let cost, cost > 0 { d.count(.cost, labels, by: cost) }
        }

        if let v = values[MetricRules.Slot.redactedRules.rawValue]?.pointee, v.value_case.rawValue == 5,
            let array = v.array_value?.pointee
        {
            for i in 0..<array.n_values {
                guard let e = array.values[i]?.pointee, e.value_case.rawValue == 1, let s = e.string_value else {
                    continue
                }
                d.count(.redactions, [r.tenant, MetricLabel.value(s)])
            }
        }
    }
}
