import COTLP

#if canImport(Glibc)
import Glibc
#endif

/// What the agent metrics read from spans, and how: which attributes name the agent version
/// and the task type, and the price table for cost. One value for ingest, recovery and
/// `flightrec reindex`, so all three derive the same counts from the same stored spans.
///
/// A class: ingest reads it for every span attribute, and copying a struct of nine arrays
/// there was 2 % of the daemon's samples (`perf`).
public final class MetricRules: Sendable, Equatable {
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

/// A label value with the hash the accumulator keys series by: FNV-1a over its bytes, made
/// straight from a C string without a `String`, which is made only for a series the request
/// has not met yet.
struct LabelRef: @unchecked Sendable {  // the shared ones (static) hold no pointer
    let hash: UInt64
    /// The value as a C string (a span attribute), or nil when `text` holds it.
    let cString: UnsafePointer<CChar>?
    let text: String

    init(_ s: String) {
        hash = SeriesKey.fnv(s)
        cString = nil
        text = s
    }

    /// `MetricLabel.value` of a C string, hashed in the same pass that checks it.
    init(_ c: UnsafePointer<CChar>?) {
        guard let c, c.pointee != 0 else {
            self = LabelRef.missing
            return
        }
        var h = SeriesKey.fnvBasis
        var n = 0
        while c[n] != 0 {
            let b = UInt8(truncatingIfNeeded: c[n])
            guard n < MetricLabel.maxBytes, MetricLabel.allowed(b) else {
                self = LabelRef.other
                return
            }
            h = (h ^ UInt64(b)) &* SeriesKey.fnvPrime
            n += 1
        }
        hash = h
        cString = c
        text = ""
    }

    var string: String { cString.map { String(cString: $0) } ?? text }

    static let missing = LabelRef(MetricLabel.missing)
    static let other = LabelRef(MetricLabel.other)
    static let literals: [String: LabelRef] = Dictionary(
        uniqueKeysWithValues: ["ok", "error", "timeout", "granted", "denied", "input", "output"].map {
            ($0, LabelRef($0))
        })
    static func literal(_ s: String) -> LabelRef { literals[s] ?? LabelRef(s) }
    static let input = literal("input")
    static let output = literal("output")
}

/// The running hash of a series' label values (`SeriesKey.id` once `id(_:)` adds the family),
/// so the values shared by a span's families (tenant, agent, version) are hashed once.
struct LabelHash {
    var h: UInt64 = SeriesKey.fnvBasis

    @inline(__always)
    func adding(_ l: LabelRef) -> LabelHash { LabelHash(h: SeriesKey.combine(h, l.hash)) }

    @inline(__always)
    func id(_ family: MetricFamily) -> UInt64 { SeriesKey.finish(h, family) }
}

/// One request's span-family counts, straight into `MetricDeltas`: a span costs a few hash
/// steps and one lookup per family with a probe key (the id alone, which is all `SeriesKey`
/// compares); the label strings are made only for a series the request has not met yet.
struct MetricAccumulator {
    var deltas = MetricDeltas()

    mutating func count(
        _ family: MetricFamily, _ hash: LabelHash, by n: Double = 1, labels: () -> [LabelRef]
    ) {
        let id = hash.id(family)
        let probe = SeriesKey(family: family, labels: [], id: id)
        if let i = deltas.counters.index(forKey: probe) {
            deltas.counters.values[i] += n
        } else {
            deltas.counters[SeriesKey(family: family, labels: labels().map(\.string), id: id)] = n
        }
    }

    mutating func observe(
        _ family: MetricFamily, _ hash: LabelHash, _ value: Double, exemplar: HistogramDelta.Exemplar?,
        labels: () -> [LabelRef]
    ) {
        guard let bounds = family.buckets else { return }
        let id = hash.id(family)
        let probe = SeriesKey(family: family, labels: [], id: id)
        if let i = deltas.histograms.index(forKey: probe) {
            deltas.histograms.values[i].observe(value, bounds: bounds, exemplar: exemplar)
        } else {
            var h = HistogramDelta(buckets: bounds.count)
            h.observe(value, bounds: bounds, exemplar: exemplar)
            deltas.histograms[SeriesKey(family: family, labels: labels().map(\.string), id: id)] = h
        }
    }
}

/// Derives the span families of `MetricFamily` from one unpacked span, with the values of
/// the `MetricRules` keys its attributes hold (`values`, by slot).
enum SpanMetrics {
    /// Label values shared by every family of a resource's spans.
    struct ResourceLabels {
        var tenant: LabelRef
        var agent: LabelRef
        var version: LabelRef?
        var taskType: LabelRef?

        init(
            attributes: UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>?, count: Int, facts: ResourceFacts,
            rules: MetricRules
        ) {
            tenant = LabelRef(MetricLabel.value(facts.tenantKey))
            agent = LabelRef(MetricLabel.value(facts.agent))
            version = firstValue(of: rules.versionCKeys, in: attributes, count: count).map {
                LabelRef(MetricLabel.value($0))
            }
            taskType = firstValue(of: rules.taskCKeys, in: attributes, count: count).map {
                LabelRef(MetricLabel.value($0))
            }
        }
    }

    typealias Values = UnsafeMutableBufferPointer<UnsafeMutablePointer<CAnyValue>?>

    static func string(_ values: Values, _ slot: Int) -> UnsafePointer<CChar>? {
        guard let v = values[slot]?.pointee, v.value_case.rawValue == 1, let s = v.string_value, s.pointee != 0
        else { return nil }
        return UnsafePointer(s)
    }

    static func string(_ values: Values, _ slot: MetricRules.Slot) -> UnsafePointer<CChar>? {
        string(values, slot.rawValue)
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
            var i = 0
            while i < l.count {
                if UInt8(truncatingIfNeeded: s[i]) != l[i] { return false }
                i += 1
            }
            return s[l.count] == 0
        }
    }

    /// Whether the C string contains one of `AgentKeys.timeoutMarkers`, ignoring ASCII case.
    static func meansTimeout(_ s: UnsafePointer<CChar>?) -> Bool {
        guard let s else { return false }
        func lower(_ i: Int) -> UInt8 {
            let b = UInt8(truncatingIfNeeded: s[i])
            return b >= 65 && b <= 90 ? b + 32 : b
        }
        var i = 0
        while s[i] != 0 {
            for word in AgentKeys.timeoutMarkers {
                var j = 0
                for w in word.utf8 {
                    guard s[i + j] != 0, lower(i + j) == w else { break }
                    j += 1
                }
                if j == word.utf8.count { return true }
            }
            i += 1
        }
        return false
    }

    static func isModelOperation(_ s: UnsafePointer<CChar>) -> Bool {
        AgentKeys.modelOperations.contains { op in op.withCString { strcmp($0, s) == 0 } }
    }

    /// The agent version each run's root span in the request names (run ID to label): the
    /// second place the version is looked for, after the span itself. A root that arrives in
    /// a later request than its run's other spans is not seen here; the run families, observed
    /// once the run has settled, always use it.
    static func rootVersions(_ req: CExportRequest, runIdentity: RunIdentity, rules: MetricRules) -> [String: LabelRef]
    {
        var out: [String: LabelRef] = [:]
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
                    out[run] = LabelRef(MetricLabel.value(version))
                }
            }
        }
        return out
    }

    static func observe(
        span: CSpan, values: Values, resource r: ResourceLabels, rootVersion: LabelRef?, runID: () -> String,
        rules: MetricRules, into d: inout MetricAccumulator
    ) {
        var version = rootVersion ?? r.version ?? LabelRef.missing
        for s in rules.versionSlots {
            if let c = string(values, s) {
                version = LabelRef(c)
                break
            }
        }
        let operation = string(values, .operation)
        let endSeconds = Double(span.end_time_unix_nano) / 1e9
        let seconds = Double(span.end_time_unix_nano &- min(span.start_time_unix_nano, span.end_time_unix_nano)) / 1e9
        let toolName = string(values, .tool)
        let tool = toolName.map { LabelRef($0) } ?? LabelRef.missing
        let tierName = string(values, .tier)
        let tier = tierName.map { LabelRef($0) } ?? LabelRef.missing
        // Tenant, agent and version lead every family's labels but the redactions'.
        let base = LabelHash().adding(r.tenant).adding(r.agent).adding(version)
        let toolTier = base.adding(tool).adding(tier)

        if equals(operation, "execute_tool") {
            let status = string(values, .status)
            // An execution the sidecar blocked or left waiting for approval never ran.
            if !equals(status, "blocked") && !equals(status, "awaiting_approval") {
                let timedOut = meansTimeout(status) || meansTimeout(string(values, .errorType))
                let failed =
                    span.status?.pointee.code.rawValue == 2 || equals(status, "failed") || equals(status, "unknown")
                let outcome = LabelRef.literal(timedOut ? "timeout" : failed ? "error" : "ok")
                var task = r.taskType ?? LabelRef.missing
                for s in rules.taskSlots {
                    if let c = string(values, s) {
                        task = LabelRef(c)
                        break
                    }
                }
                d.count(.toolCalls, base.adding(task).adding(tool).adding(tier).adding(outcome)) {
                    [r.tenant, r.agent, version, task, tool, tier, outcome]
                }
                d.observe(
                    .toolCallDuration, toolTier, seconds,
                    exemplar: .init(runID: runID(), value: seconds, time: endSeconds)
                ) { [r.tenant, r.agent, version, tool, tier] }
                let write = tierName.map { strstr($0, "write") != nil } ?? false
                if write && (timedOut || equals(status, "unknown")) {
                    d.count(.uncertainWrites, toolTier) { [r.tenant, r.agent, version, tool, tier] }
                }
            }
        }
        if let outcome = string(values, .policyOutcome) {
            let rule = string(values, .policyRule).map { LabelRef($0) } ?? LabelRef.missing
            let outcome = LabelRef(outcome)
            d.count(.policyDecisions, toolTier.adding(outcome).adding(rule)) {
                [r.tenant, r.agent, version, tool, tier, outcome, rule]
            }
        }
        var decision: String?
        if let s = string(values, .approval) {
            decision = equals(s, "granted") ? "granted" : equals(s, "denied") ? "denied" : nil
        } else if let name = span.name {
            decision = equals(name, "approval.granted") ? "granted" : equals(name, "approval.denied") ? "denied" : nil
        }
        if let decision {
            let label = LabelRef.literal(decision)
            d.count(.approvals, base.adding(tool).adding(label)) { [r.tenant, r.agent, version, tool, label] }
        }

        let input = number(values, MetricRules.Slot.inputTokens.rawValue)
        let output = number(values, MetricRules.Slot.outputTokens.rawValue)
        let isModelCall = operation.map(isModelOperation) ?? (input != nil || output != nil)
        if isModelCall {
            let modelName = string(values, .responseModel) ?? string(values, .requestModel)
            let model = modelName.map { LabelRef($0) } ?? LabelRef.missing
            let modelHash = base.adding(model)
            let run = runID()
            for (tokens, type) in [(input, LabelRef.input), (output, LabelRef.output)] {
                guard let tokens, tokens >= 0 else { continue }
                d.observe(
                    .tokenUsage, modelHash.adding(type), tokens,
                    exemplar: .init(runID: run, value: tokens, time: endSeconds)
                ) { [r.tenant, r.agent, version, model, type] }
            }
            d.observe(
                .operationDuration, modelHash, seconds, exemplar: .init(runID: run, value: seconds, time: endSeconds)
            ) { [r.tenant, r.agent, version, model] }
            var cost = number(values, MetricRules.Slot.cost.rawValue)
            if cost == nil, !rules.prices.isEmpty, let modelName,
                let price = rules.prices[String(cString: modelName)]
                    ?? string(values, .requestModel).flatMap({ rules.prices[String(cString: $0)] })
            {
                cost = (input ?? 0) * price.input / 1e6 + (output ?? 0) * price.output / 1e6
            }
            if let cost, cost > 0 { d.count(.cost, modelHash, by: cost) { [r.tenant, r.agent, version, model] } }
        }

        if let v = values[MetricRules.Slot.redactedRules.rawValue]?.pointee, v.value_case.rawValue == 5,
            let array = v.array_value?.pointee
        {
            for i in 0..<array.n_values {
                guard let e = array.values[i]?.pointee, e.value_case.rawValue == 1, let s = e.string_value else {
                    continue
                }
                let rule = LabelRef(UnsafePointer(s))
                d.count(.redactions, LabelHash().adding(r.tenant).adding(rule)) { [r.tenant, rule] }
            }
        }
    }
}
