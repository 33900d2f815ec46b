import FlightRecorderCore
public import FlightRecorderOTLP
public import FlightRecorderQuery

/// What one settled run amounts to: its outcome, loop, tool and safety figures, from its
/// stored (redacted) spans. The run analyser computes it once the run has settled, stores it
/// (`RunStatsStore`), and derives the run families of the agent metrics from it.
public struct RunAggregate: Sendable, Equatable, Codable {
    public struct ToolCounts: Sendable, Equatable, Codable {
        public var calls = 0
        public var errors = 0
        public var timeouts = 0

        public init(calls: Int = 0, errors: Int = 0, timeouts: Int = 0) {
            self.calls = calls
            self.errors = errors
            self.timeouts = timeouts
        }

        mutating func add(_ o: ToolCounts) {
            calls += o.calls
            errors += o.errors
            timeouts += o.timeouts
        }
    }

    public var tenant: String
    public var runID: String
    /// Bounded label values (`MetricLabel`).
    public var agent: String
    public var version: String
    public var taskType: String
    public var startNanos: Int64
    public var endNanos: Int64
    public var spanCount = 0
    /// The run failed: its root span's status is an error (a run that recovered from a failed
    /// tool call did not fail); without a stored root, some span's is.
    public var error = false
    /// Model calls plus tool executions.
    public var steps = 0
    public var modelCalls = 0
    public var toolCalls = 0
    public var decisions = 0
    public var blocked = 0
    public var approvalRequired = 0
    /// Approval decisions, and how many of them denied.
    public var approvals = 0
    public var denied = 0
    /// Tool calls repeating an earlier call of the run: the same tool with the same
    /// idempotency key, or without a key the same arguments (`RunGraph.repeatGroups`).
    public var repeated = 0
    /// Write-tier executions that timed out or ended unknown.
    public var uncertainWrites = 0
    public var tokensIn = 0.0
    public var tokensOut = 0.0
    public var costUSD = 0.0
    public var findings: [String: Int] = [:]
    public var tools: [String: ToolCounts] = [:]
    /// A root span of the run is stored (so it has ended).
    public var hasRoot = false
    /// The span families (`MetricFamily`) of the run's spans whose labels depend on its root,
    /// which ingest leaves to the analyser (`SpanMetrics.observe`): their counters, stored with
    /// the aggregate so that spans arriving later add only what they change. Nil in a row an
    /// earlier version stored, which counted every span at ingest.
    public var spanCounters: SeriesMap<Double>?
    /// The root labels the span families were counted with (stored with `spanCounters`).
    public var spanRoot = SpanRoot()
    /// Their histograms: observed when the run is first observed, never again, so not stored
    /// (and not compared: `Unstored`).
    public var spanHistograms = Unstored(SeriesMap<HistogramDelta>())

    /// The stored properties JSON rows (an earlier version's) hold.
    enum CodingKeys: String, CodingKey {
        case tenant, runID, agent, version, taskType, startNanos, endNanos, spanCount, error, steps, modelCalls
        case toolCalls, decisions, blocked, approvalRequired, approvals, denied, repeated, uncertainWrites
        case tokensIn, tokensOut, costUSD, findings, tools, hasRoot, repeatedByTool
    }

    /// The agent version and task type a run's root names for the span families of spans
    /// that name none of their own (nil: none, the span's resource's apply).
    public struct SpanRoot: Sendable, Equatable {
        public var version: String?
        public var task: String?

        public init(version: String? = nil, task: String? = nil) {
            self.version = version
            self.task = task
        }
    }

    /// A value carried along but never stored or compared: two aggregates holding different
    /// ones are equal.
    public struct Unstored<Value: Sendable>: Sendable, Equatable {
        public var value: Value
        public init(_ value: Value) { self.value = value }
        public static func == (a: Self, b: Self) -> Bool { true }
    }

    public var durationSeconds: Double { Double(max(0, endNanos - startNanos)) / 1e9 }
    public var escalated: Bool { approvalRequired > 0 }
    public var outcome: String { error ? "error" : "ok" }

    /// A run's identity and dimensions with every figure zero (`flightrec-loadgen --stats-bench`
    /// fills a store with these).
    package init(
        tenant: String, runID: String, agent: String, version: String, taskType: String, startNanos: Int64,
        endNanos: Int64
    ) {
        self.tenant = tenant
        self.runID = runID
        self.agent = agent
        self.version = version
        self.taskType = taskType
        self.startNanos = startNanos
        self.endNanos = endNanos
    }

    /// The figures of `spans`, the run `runID` of `tenant`. `agent` is the run summary's.
    /// Without `spanFamilies` (a view of a run, not its observation), `spanCounters` and
    /// `spanHistograms` are left empty. `spanRoot`: the root labels a run observed before
    /// counted its span families with, used again instead of its root's now.
    public init(
        tenant: String, runID: String, agent: String?, spans: [SpanRecord], rules: MetricRules,
        findingRules: FindingRules = .default, graph known: RunGraph? = nil, findings computed: [Finding]? = nil,
        spanFamilies: Bool = true, spanRoot pinned: SpanRoot? = nil
    ) {
        self.tenant = tenant
        self.runID = runID
        self.agent = MetricLabel.value(agent)
        startNanos = Int64(clamping: spans.map(\.startNanos).min() ?? 0)
        endNanos = Int64(clamping: spans.map(\.endNanos).max() ?? 0)
        spanCount = spans.count
        let root = spans.first { $0.parentSpanID == nil }
        hasRoot = root != nil
        // Agent version: the root span's keys, its resource's, then service.version.
        let reference = root ?? spans.first
        version = MetricLabel.value(
            reference.flatMap {
                $0.attributes.firstScalar(of: rules.versionKeys)
                    ?? $0.resource.attributes.firstScalar(of: rules.versionKeys + ["service.version"])
            })
        taskType = MetricLabel.value(
            reference.flatMap {
                $0.attributes.firstScalar(of: rules.taskTypeKeys)
                    ?? $0.resource.attributes.firstScalar(of: rules.taskTypeKeys)
            })

        var families = SpanFamilies(
            tenant: tenant, runID: runID,
            root: pinned
                ?? SpanRoot(
                    version: root?.attributes.firstScalar(of: rules.versionKeys),
                    task: root?.attributes.firstScalar(of: rules.taskTypeKeys)),
            rules: rules, counting: spanFamilies)
        spanRoot = families.root
        for s in spans {
            let a = s.attributes
            let operation = a.string(AgentKeys.operationName)
            // The rule of `SpanMetrics`: a tool execution names its operation, or without one
            // its span ("execute_tool {tool}", which also names the tool). `RunGraph` also takes
            // a span so named whatever operation it names.
            let isExecution = operation == "execute_tool" || (operation == nil && s.name.hasPrefix("execute_tool"))
            let tool = MetricLabel.value(
                a.string(AgentKeys.toolName) ?? (isExecution ? AgentKeys.executedTool(spanName: s.name) : nil))
            // Set when ingest left this span's families to the analyser.
            let labels = families.labels(of: s, isExecution: isExecution)
            let tier = a.string(AgentKeys.toolTier)
            if isExecution {
                let status = a["tool.execution.status"]?.scalarString
                if status != "blocked" && status != "awaiting_approval" {
                    let errorType = a["error.type"]?.scalarString
                    let failed = s.statusCode == .error || status == "failed" || status == "unknown"
                    // The rule of `SpanMetrics` (`AgentKeys.timeoutMarkers`); `RunGraph.outcome(of:)`
                    // reads error.type and the message only on an ERROR span.
                    let timedOut =
                        AgentKeys.namesTimeout(status) || AgentKeys.namesTimeout(errorType)
                        || (s.statusCode == .error && AgentKeys.failureNamesTimeout(s))
                    var c = ToolCounts(calls: 1)
                    if timedOut { c.timeouts = 1 } else if failed { c.errors = 1 }
                    tools[tool, default: ToolCounts()].add(c)
                    toolCalls += 1
                    let write = AgentKeys.isWriteTier(tier)
                    let uncertain = write && (timedOut || status == "unknown")
                    if uncertain { uncertainWrites += 1 }
                    labels?.execution(
                        s, tool: tool, tier: tier, outcome: timedOut ? "timeout" : failed ? "error" : "ok",
                        uncertain: uncertain, into: &families)
                }
            }
            if let outcome = a[AgentKeys.policyOutcome]?.scalarString {
                decisions += 1
                if outcome == "blocked" { blocked += 1 }
                if outcome == "approval_required" { approvalRequired += 1 }
                if let o = a.string(AgentKeys.policyOutcome) {
                    labels?.decision(
                        tool: tool, tier: tier, outcome: o, rule: a.string(AgentKeys.policyRule), &families)
                }
            }
            let decision =
                a["approval.decision"]?.scalarString
                ?? (s.name == "approval.granted" ? "granted" : s.name == "approval.denied" ? "denied" : nil)
            if decision == "granted" || decision == "denied" {
                approvals += 1
                if decision == "denied" { denied += 1 }
                labels?.approval(tool: tool, decision: decision!, &families)
            }
            let input = Self.number(a[AgentKeys.inputTokens] ?? a[AgentKeys.legacyInputTokens])
            let output = Self.number(a[AgentKeys.outputTokens] ?? a[AgentKeys.legacyOutputTokens])
            if operation.map(AgentKeys.modelOperations.contains)
                ?? (input != nil || output != nil || s.name.hasPrefix("chat "))
            {
                modelCalls += 1
                tokensIn += max(0, input ?? 0)
                tokensOut += max(0, output ?? 0)
                let model = a.string(AgentKeys.responseModel) ?? a.string(AgentKeys.requestModel)
                var cost = Self.number(a["gen_ai.usage.cost"])
                if cost == nil, let model,
                    let price = rules.prices[model] ?? a.string(AgentKeys.requestModel).flatMap({ rules.prices[$0] })
                {
                    cost = (input ?? 0) * price.input / 1e6 + (output ?? 0) * price.output / 1e6
                }
                costUSD += max(0, cost ?? 0)
                labels?.modelCall(s, model: model, input: input, output: output, cost: cost, &families)
            }
        }
        spanCounters = families.counts.counters
        spanHistograms = Unstored(families.counts.histograms)
        steps = modelCalls + toolCalls
        error = root.map { $0.statusCode == .error } ?? spans.contains { $0.statusCode == .error }
        // Repeats are the findings' groups (the same tool with one idempotency key, or
        // without a key the same arguments), so the loop metrics and `repeated_call` agree.
        let graph = known ?? RunGraph(runID: runID, spans: spans)
        for g in graph.repeatGroups() {
            let tool = MetricLabel.value(g.tool)
            repeatedByTool[tool, default: 0] += g.calls.count - 1
            repeated += g.calls.count - 1
        }
        for f in computed ?? graph.findings(rules: findingRules) { findings[f.kind, default: 0] += 1 }
    }

    static func number(_ v: AttributeValue?) -> Double? {
        switch v {
        case .int(let i): Double(i)
        case .double(let d): d.isFinite ? d : nil
        case .string(let s): Double(s)
        default: nil
        }
    }

    /// The run families this run adds to the agent metrics when it is first observed.
    public var metrics: MetricDeltas {
        var d = MetricDeltas()
        let base = [tenant, agent, version, taskType]
        d.count(.runs, base + [outcome])
        if escalated { d.count(.escalations, base) }
        d.observe(
            .runDuration, base, durationSeconds,
            exemplar: .init(runID: runID, value: durationSeconds, time: Double(endNanos) / 1e9))
        d.observe(
            .runSteps, base, Double(steps),
            exemplar: .init(runID: runID, value: Double(steps), time: Double(endNanos) / 1e9))
        d.add(counterMetrics(spans: true))
        d.histograms.merge(spanHistograms.value) { $0.add($1) }
        return d
    }

    /// The counters only: what a run observed again (late spans) adds, as a difference. With
    /// `spans`, the span families' too (`spanCounters`).
    func counterMetrics(spans: Bool) -> MetricDeltas {
        var d = MetricDeltas()
        if spans, let spanCounters { d.counters = spanCounters }
        for (kind, n) in findings where n > 0 {
            d.count(.findings, [tenant, agent, version, MetricLabel.value(kind)], by: Double(n))
        }
        for (tool, _) in tools {
            let n = repeatedByTool[tool, default: 0]
            if n > 0 { d.count(.repeatedCalls, [tenant, agent, version, tool], by: Double(n)) }
        }
        return d
    }

    /// Repeated calls per tool (stored with the aggregate).
    public var repeatedByTool: [String: Int] = [:]

    /// What observing `new` after `old` adds to the counters: their increases only (a counter
    /// never goes down; histograms are observed once, the first time). After a row an earlier
    /// version stored (no `spanCounters`), none of the span families: ingest counted them.
    public static func counterIncrease(from old: RunAggregate, to new: RunAggregate) -> MetricDeltas {
        var d = MetricDeltas()
        let spans = old.spanCounters != nil
        let o = old.counterMetrics(spans: spans).counters
        for (k, v) in new.counterMetrics(spans: spans).counters where v > o[k, default: 0] {
            d.counters[k] = v - o[k, default: 0]
        }
        if new.escalated && !old.escalated {
            d.count(.escalations, [new.tenant, new.agent, new.version, new.taskType])
        }
        return d
    }
}
