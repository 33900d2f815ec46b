import FlightRecorderOTLP

extension [Attribute] {
    /// The non-empty string value of `key` (not an integer's digits): what ingest reads from
    /// the C structs for the span families (`SpanMetrics.string`), so that the analyser counts
    /// exactly the spans ingest left to it, with the same labels.
    func string(_ key: String) -> String? {
        if case .string(let s)? = self[key], !s.isEmpty { return s }
        return nil
    }

    func firstString(of keys: [String]) -> String? {
        for k in keys { if let v = string(k) { return v } }
        return nil
    }
}

extension RunAggregate {
    /// The span families of the spans whose labels depend on their run's root. Ingest counts a
    /// span's families only when the span names its own agent version and, for a tool
    /// execution, its own task type (`SpanMetrics.observe`): otherwise their labels come from
    /// the run's root, which an SDK's batch processor exports last, in a later request. The
    /// analyser, which reads the whole run once it has settled, counts the rest here, with the
    /// same rule: the span's version, then its run's root's, then its resource's, then
    /// `service.version`; the task type likewise.
    struct SpanFamilies {
        var counts = MetricDeltas()
        let tenant: String
        let runID: String
        let rootVersion: String?
        let rootTask: String?
        let rules: MetricRules
        let counting: Bool

        init(tenant: String, runID: String, root: SpanRecord?, rules: MetricRules, counting: Bool) {
            self.counting = counting
            self.tenant = MetricLabel.value(tenant)
            self.runID = runID
            rootVersion = root?.attributes.firstScalar(of: rules.versionKeys)
            rootTask = root?.attributes.firstScalar(of: rules.taskTypeKeys)
            self.rules = rules
        }

        /// The labels the families of span `s` share when ingest left them to the analyser;
        /// nil when ingest counted them (or nothing is counted).
        func labels(of s: SpanRecord, isExecution: Bool) -> SpanLabels? {
            let a = s.attributes
            if !counting
                || a.firstString(of: rules.versionKeys) != nil
                    && (!isExecution || a.firstString(of: rules.taskTypeKeys) != nil)
            {
                return nil
            }
            let r = s.resource.attributes
            return SpanLabels(
                tenant: tenant, agent: MetricLabel.value(r.firstScalar(of: ["gen_ai.agent.name", "service.name"])),
                version: MetricLabel.value(
                    a.firstScalar(of: rules.versionKeys) ?? rootVersion
                        ?? r.firstScalar(of: rules.versionKeys + ["service.version"])),
                task: MetricLabel.value(
                    a.firstScalar(of: rules.taskTypeKeys) ?? rootTask ?? r.firstScalar(of: rules.taskTypeKeys)),
                runID: runID)
        }
    }

    /// One span's labels, and its families as `SpanMetrics.observe` counts them at ingest.
    struct SpanLabels {
        let tenant: String
        let agent: String
        let version: String
        let task: String
        let runID: String

        static func seconds(_ s: SpanRecord) -> Double { Double(s.endNanos &- min(s.startNanos, s.endNanos)) / 1e9 }

        func exemplar(_ s: SpanRecord, _ value: Double) -> HistogramDelta.Exemplar {
            .init(runID: runID, value: value, time: Double(s.endNanos) / 1e9)
        }

        /// A tool execution that ran (not blocked, not awaiting approval).
        func execution(
            _ s: SpanRecord, tool: String, tier: String?, outcome: String, uncertain: Bool,
            into f: inout SpanFamilies
        ) {
            let tier = MetricLabel.value(tier)
            f.counts.count(.toolCalls, [tenant, agent, version, task, tool, tier, outcome])
            let seconds = Self.seconds(s)
            f.counts.observe(
                .toolCallDuration, [tenant, agent, version, tool, tier], seconds, exemplar: exemplar(s, seconds))
            if uncertain { f.counts.count(.uncertainWrites, [tenant, agent, version, tool, tier]) }
        }

        func decision(tool: String, tier: String?, outcome: String, rule: String?, _ f: inout SpanFamilies) {
            f.counts.count(
                .policyDecisions,
                [
                    tenant, agent, version, tool, MetricLabel.value(tier), MetricLabel.value(outcome),
                    MetricLabel.value(rule),
                ])
        }

        func approval(tool: String, decision: String, _ f: inout SpanFamilies) {
            f.counts.count(.approvals, [tenant, agent, version, tool, decision])
        }

        func modelCall(
            _ s: SpanRecord, model: String?, input: Double?, output: Double?, cost: Double?, _ f: inout SpanFamilies
        ) {
            let model = MetricLabel.value(model)
            for (tokens, type) in [(input, "input"), (output, "output")] {
                guard let tokens, tokens >= 0 else { continue }
                f.counts.observe(
                    .tokenUsage, [tenant, agent, version, model, type], tokens, exemplar: exemplar(s, tokens))
            }
            let seconds = Self.seconds(s)
            f.counts.observe(
                .operationDuration, [tenant, agent, version, model], seconds, exemplar: exemplar(s, seconds))
            if let cost, cost > 0 { f.counts.count(.cost, [tenant, agent, version, model], by: cost) }
        }
    }
}
