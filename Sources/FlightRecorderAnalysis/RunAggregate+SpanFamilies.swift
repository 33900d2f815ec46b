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
    /// A label value with its hash (`SeriesKey.fnv`): a series' id is combined from its values'
    /// hashes, so those a span's families share are hashed once, and its labels are made into
    /// an array only for a series the run has not met yet.
    struct Label {
        let value: String
        let hash: UInt64

        init(_ value: String) {
            self.value = value
            hash = SeriesKey.fnv(value)
        }

        static let ok = Label("ok")
        static let error = Label("error")
        static let timeout = Label("timeout")
        static let input = Label("input")
        static let output = Label("output")
        static let granted = Label("granted")
        static let denied = Label("denied")
    }

    /// The span families of the spans whose labels depend on their run's root. Ingest counts a
    /// span's families only when the span names its own agent version and, for a tool
    /// execution, its own task type (`SpanMetrics.observe`): otherwise their labels come from
    /// the run's root, which an SDK's batch processor exports last, in a later request. The
    /// analyser, which reads the whole run once it has settled, counts the rest here, with the
    /// same rule: the span's version, then its run's root's, then its resource's, then
    /// `service.version`; the task type likewise.
    struct SpanFamilies {
        var counts = MetricDeltas()
        let tenant: Label
        let runID: String
        let root: SpanRoot
        let rules: MetricRules
        let counting: Bool
        /// Each resource's agent, version and task type (a run's spans share a few).
        var resources: [ObjectIdentifier: (agent: Label, version: String?, task: String?)] = [:]

        init(tenant: String, runID: String, root: SpanRoot, rules: MetricRules, counting: Bool) {
            self.counting = counting
            self.tenant = Label(MetricLabel.value(tenant))
            self.runID = runID
            self.root = root
            self.rules = rules
        }

        /// The labels the families of span `s` share when ingest left them to the analyser;
        /// nil when ingest counted them (or nothing is counted).
        mutating func labels(of s: SpanRecord, isExecution: Bool) -> SpanLabels? {
            guard counting else { return nil }
            let a = s.attributes
            // Its own version and task type (an integer too, as labels read them), each looked
            // up once; ingest counted the span when it names them as strings (asked only when
            // it names one at all).
            let ownVersion = a.firstScalar(of: rules.versionKeys)
            let versionCounted = ownVersion != nil && a.firstString(of: rules.versionKeys) != nil
            if versionCounted && !isExecution { return nil }
            let ownTask = a.firstScalar(of: rules.taskTypeKeys)
            if versionCounted && ownTask != nil && a.firstString(of: rules.taskTypeKeys) != nil { return nil }
            let id = ObjectIdentifier(s.resource)
            let resource =
                resources[id]
                ?? {
                    let r = s.resource.attributes
                    let facts = (
                        agent: Label(MetricLabel.value(r.firstScalar(of: ["gen_ai.agent.name", "service.name"]))),
                        version: r.firstScalar(of: rules.versionKeys + ["service.version"]),
                        task: r.firstScalar(of: rules.taskTypeKeys)
                    )
                    resources[id] = facts
                    return facts
                }()
            let version = Label(MetricLabel.value(ownVersion ?? root.version ?? resource.version))
            return SpanLabels(
                tenant: tenant, agent: resource.agent, version: version,
                task: Label(MetricLabel.value(ownTask ?? root.task ?? resource.task)),
                runID: runID,
                base: SeriesKey.combine(
                    SeriesKey.combine(SeriesKey.combine(SeriesKey.fnvBasis, tenant.hash), resource.agent.hash),
                    version.hash))
        }
    }

    /// One span's labels, and its families as `SpanMetrics.observe` counts them at ingest.
    struct SpanLabels {
        let tenant: Label
        let agent: Label
        let version: Label
        let task: Label
        let runID: String
        /// Tenant, agent and version combined: every family's labels but the redactions' start so.
        let base: UInt64

        static func seconds(_ s: SpanRecord) -> Double { Double(s.endNanos &- min(s.startNanos, s.endNanos)) / 1e9 }

        func exemplar(_ s: SpanRecord, _ value: Double) -> HistogramDelta.Exemplar {
            .init(runID: runID, value: value, time: Double(s.endNanos) / 1e9)
        }

        /// The series `family` with the labels `more` after tenant, agent and version: its id,
        /// and its key, made only for a series new to the run.
        func series(_ family: MetricFamily, _ more: [Label]) -> (id: UInt64, key: () -> SeriesKey) {
            var h = base
            for l in more { h = SeriesKey.combine(h, l.hash) }
            let id = SeriesKey.finish(h, family)
            return (
                id,
                {
                    SeriesKey(
                        family: family, labels: [tenant.value, agent.value, version.value] + more.map(\.value), id: id)
                }
            )
        }

        func count(_ family: MetricFamily, _ more: [Label], by n: Double = 1, into f: inout SpanFamilies) {
            let s = series(family, more)
            f.counts.count(family, id: s.id, by: n, key: s.key)
        }

        func observe(
            _ family: MetricFamily, _ more: [Label], _ value: Double, _ span: SpanRecord, into f: inout SpanFamilies
        ) {
            let s = series(family, more)
            f.counts.observe(family, id: s.id, value, exemplar: exemplar(span, value), key: s.key)
        }

        /// A tool execution that ran (not blocked, not awaiting approval).
        func execution(
            _ s: SpanRecord, tool: String, tier: String?, outcome: String, uncertain: Bool,
            into f: inout SpanFamilies
        ) {
            let tool = Label(tool)
            let tier = Label(MetricLabel.value(tier))
            let outcome = outcome == "ok" ? Label.ok : outcome == "error" ? Label.error : Label.timeout
            count(.toolCalls, [task, tool, tier, outcome], into: &f)
            observe(.toolCallDuration, [tool, tier], Self.seconds(s), s, into: &f)
            if uncertain { count(.uncertainWrites, [tool, tier], into: &f) }
        }

        func decision(tool: String, tier: String?, outcome: String, rule: String?, _ f: inout SpanFamilies) {
            count(
                .policyDecisions,
                [
                    Label(tool), Label(MetricLabel.value(tier)), Label(MetricLabel.value(outcome)),
                    Label(MetricLabel.value(rule)),
                ],
                into: &f)
        }

        func approval(tool: String, decision: String, _ f: inout SpanFamilies) {
            count(.approvals, [Label(tool), decision == "granted" ? .granted : .denied], into: &f)
        }

        func modelCall(
            _ s: SpanRecord, model: String?, input: Double?, output: Double?, cost: Double?, _ f: inout SpanFamilies
        ) {
            let model = Label(MetricLabel.value(model))
            for (tokens, type) in [(input, Label.input), (output, Label.output)] {
                guard let tokens, tokens >= 0 else { continue }
                observe(.tokenUsage, [model, type], tokens, s, into: &f)
            }
            observe(.operationDuration, [model], Self.seconds(s), s, into: &f)
            if let cost, cost > 0 { count(.cost, [model], by: cost, into: &f) }
        }
    }
}
