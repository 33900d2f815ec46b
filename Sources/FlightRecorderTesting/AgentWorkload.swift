import FlightRecorderOTLP

/// Generates agent-shaped OTLP trace requests: runs of an `invoke_agent` root with model
/// calls, entity lookups, policy checks and tool executions, carrying the GenAI attributes
/// real agents send. Deterministic for a seed, so benchmarks and tests are repeatable.
public struct AgentWorkload: Sendable {
    public struct Options: Sendable {
        public var spansPerRequest = 512
        public var stepsPerRun = 20...60
        public var tenants = ["acme", "globex", "initech", "umbrella"]
        public var seed: UInt64 = 42
        /// Every n-th run has `longRunSteps` steps instead (0: never); the query benchmark's
        /// 200-span runs.
        public var longRunEvery = 0
        public var longRunSteps = 200
        /// Record one operation ID in this many (0: none), for lookups.
        public var recordOperationIDsEvery = 0
        /// Each request holds one tenant's runs only (the tenants in turn), as when each
        /// tenant's agents export through their own SDK; otherwise every request interleaves
        /// runs of all tenants, as a shared gateway's batches do.
        public var tenantPerRequest = false
        /// Every span names its own agent version and task type (`gen_ai.agent.version`,
        /// `agent.task.type`), as an agent that stamps them on every span does: its span
        /// families are then counted at ingest. Otherwise only the resource and the root name
        /// them, as with most SDK instrumentation, and the run analyser counts them.
        public var ownSpanLabels = false

        public init() {}
    }

    public var options: Options
    var rng: SplitMix64
    var runCounter = 0
    var open: [RunState] = []
    /// With `tenantPerRequest`: each tenant's open runs, and the requests made so far.
    var openByTenant: [String: [RunState]] = [:]
    var requestCounter = 0
    /// Runs started but not yet complete (their root not emitted).
    public var openRunIDs: Set<String> { Set((open + openByTenant.values.joined()).map(\.runID)) }
    /// Runs generated with `longRunSteps` steps (complete once their root is emitted).
    public private(set) var longRuns: [String] = []
    /// A sample of the operation IDs generated, with their run.
    public private(set) var operationIDs: [(run: String, id: String)] = []
    var operationCounter = 0

    struct RunState {
        var runID: String
        var trace: [UInt8]
        var root: [UInt8]
        var tenant: String
        var agentVersion: String
        var remaining: Int
        var clock: UInt64
        var start: UInt64
        var rootEmitted = false
    }

    /// Run IDs are fixed width, like UUIDs: `run-<seed>-<counter>`, both spelt in letters
    /// (`a` for 0, `b` for 1, ...) so that no run ID looks like a card number to redaction.
    static func runID(seed: UInt64, counter: Int) -> String {
        "run-" + letters(padded(seed, 2)) + "-" + letters(padded(UInt64(counter), 12))
    }

    static func letters(_ digits: String) -> String {
        String(digits.unicodeScalars.map { Character(UnicodeScalar($0.value - 48 + 97)!) })
    }

    static func padded(_ n: UInt64, _ width: Int) -> String {
        let digits = String(n)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }

    public init(options: Options = Options()) {
        self.options = options
        self.rng = SplitMix64(seed: options.seed)
    }

    /// One serialized `ExportTraceServiceRequest` with `spansPerRequest` spans drawn from
    /// several interleaved runs, the way a batch exporter in a busy agent service sends them.
    public mutating func nextRequest() -> (bytes: [UInt8], spans: Int) {
        var groups: [String: [[UInt8]]] = [:]
        var order: [String] = []
        // One tenant's pool of runs for this request, or the shared pool.
        let tenant = options.tenantPerRequest ? options.tenants[requestCounter % options.tenants.count] : nil
        requestCounter += 1
        var pool = tenant.map { openByTenant[$0] ?? [] } ?? open
        for _ in 0..<options.spansPerRequest {
            if pool.count < 8 { pool.append(newRun(tenant: tenant)) }
            let i = Int(rng.next() % UInt64(pool.count))
            var run = pool[i]
            let span = nextSpan(&run)
            let key = run.tenant + "|" + run.agentVersion
            if groups[key] == nil { order.append(key) }
            groups[key, default: []].append(span)
            if run.rootEmitted { pool.remove(at: i) } else { pool[i] = run }
        }
        if let tenant { openByTenant[tenant] = pool } else { open = pool }
        var w = ProtobufWriter(capacity: options.spansPerRequest * 600)
        for key in order {
            let parts = key.split(separator: "|").map(String.init)
            w.messageField(1) { rs in
                rs.messageField(1) { r in
                    Self.kv(&r, 1, "service.name", "support-agent")
                    Self.kv(&r, 1, "service.version", parts[1])
                    Self.kv(&r, 1, "tenant.id", parts[0])
                    Self.kv(&r, 1, "deployment.environment.name", "production")
                    Self.kv(&r, 1, "telemetry.sdk.language", "python")
                    Self.kv(&r, 1, "telemetry.sdk.name", "opentelemetry")
                    Self.kv(&r, 1, "telemetry.sdk.version", "1.38.0")
                }
                rs.messageField(2) { ss in
                    ss.messageField(1) { sc in
                        sc.stringField(1, "agent.runtime")
                        sc.stringField(2, "0.9.3")
                    }
                    for span in groups[key]! { ss.bytesField(2, span) }
                }
            }
        }
        return (w.bytes, options.spansPerRequest)
    }

    mutating func newRun(tenant chosen: String? = nil) -> RunState {
        runCounter += 1
        // Drawn even when chosen, so the random sequence is the same either way.
        let drawn = options.tenants[Int(rng.next() % UInt64(options.tenants.count))]
        let tenant = chosen ?? drawn
        var steps = Int(rng.next() % UInt64(options.stepsPerRun.count)) + options.stepsPerRun.lowerBound
        let long = options.longRunEvery > 0 && runCounter % options.longRunEvery == 0
        if long {
            steps = options.longRunSteps - 1
            longRuns.append(Self.runID(seed: options.seed, counter: runCounter))
        }
        let start = 1_764_000_000_000_000_000 + UInt64(runCounter) * 3_000_000_000
        return RunState(
            runID: Self.runID(seed: options.seed, counter: runCounter), trace: randomBytes(16), root: randomBytes(8),
            tenant: tenant,
            agentVersion: "2.\(runCounter % 3).0", remaining: steps, clock: start + 1_000_000, start: start)
    }

    mutating func randomBytes(_ n: Int) -> [UInt8] {
        var out: [UInt8] = []
        while out.count < n {
            var v = rng.next()
            for _ in 0..<8 where out.count < n {
                out.append(UInt8(truncatingIfNeeded: v))
                v >>= 8
            }
        }
        return out
    }

    static let tools = [
        ("lookup_employee", "read"), ("lookup_device", "read"), ("disable_managed_device", "privileged_write"),
        ("create_security_ticket", "low_write"), ("revoke_sessions", "privileged_write"), ("search_kb", "read"),
    ]
    static let words = [
        "laptop", "stolen", "employee", "device", "disable", "ticket", "security", "account", "session", "revoke",
        "verify", "manager", "approval", "policy", "corporate", "managed", "replacement", "procurement", "urgent",
        "john", "smith", "contractor", "badge", "vpn", "mfa", "reset", "incident", "escalate", "queue", "priority",
    ]

    mutating func sentence(_ n: Int) -> String {
        (0..<n).map { _ in Self.words[Int(rng.next() % UInt64(Self.words.count))] }.joined(separator: " ")
    }

    /// The next span of a run; the root is emitted last, as SDKs export it when it ends.
    mutating func nextSpan(_ run: inout RunState) -> [UInt8] {
        var w = ProtobufWriter(capacity: 700)
        if run.remaining == 0 {
            run.rootEmitted = true
            w.bytesField(1, run.trace)
            w.bytesField(2, run.root)
            w.stringField(5, "invoke_agent support-agent")
            w.varintField(6, 1)
            w.fixed64Field(7, run.start)
            w.fixed64Field(8, run.clock + 1_000_000)
            Self.kv(&w, 9, "agent.run.id", run.runID)
            Self.kv(&w, 9, "gen_ai.operation.name", "invoke_agent")
            Self.kv(&w, 9, "gen_ai.agent.name", "support-agent")
            Self.kv(&w, 9, "enduser.id", "user-\(rng.next() % 5000)")
            w.messageField(15) { s in s.varintField(3, 1) }
            return w.bytes
        }
        run.remaining -= 1
        let duration = 2_000_000 + rng.next() % 900_000_000
        w.bytesField(1, run.trace)
        w.bytesField(2, randomBytes(8))
        w.bytesField(4, run.root)
        let kind = rng.next() % 4
        switch kind {
        case 0:
            let model = rng.next() % 2 == 0 ? "gpt-4o-2024-08-06" : "claude-sonnet-4"
            w.stringField(5, "chat \(model)")
            w.varintField(6, 3)
            w.fixed64Field(7, run.clock)
            w.fixed64Field(8, run.clock + duration)
            ownLabels(&w, run)
            Self.kv(&w, 9, "gen_ai.operation.name", "chat")
            Self.kv(&w, 9, "gen_ai.request.model", model)
            Self.kv(&w, 9, "gen_ai.response.model", model)
            Self.kv(&w, 9, "gen_ai.prompt.version", "triage-v\(rng.next() % 4)")
            Self.intKV(&w, 9, "gen_ai.usage.input_tokens", Int64(200 + rng.next() % 4000))
            Self.intKV(&w, 9, "gen_ai.usage.output_tokens", Int64(20 + rng.next() % 800))
            Self.kv(&w, 9, "gen_ai.response.finish_reasons", "tool_calls")
            Self.kv(&w, 9, "gen_ai.output.messages", "[{\"role\":\"assistant\",\"content\":\"\(sentence(18))\"}]")
        case 1:
            let (tool, tier) = Self.tools[Int(rng.next() % UInt64(Self.tools.count))]
            w.stringField(5, "execute_tool \(tool)")
            w.varintField(6, 3)
            w.fixed64Field(7, run.clock)
            w.fixed64Field(8, run.clock + duration)
            ownLabels(&w, run)
            Self.kv(&w, 9, "gen_ai.operation.name", "execute_tool")
            Self.kv(&w, 9, "gen_ai.tool.name", tool)
            Self.kv(&w, 9, "gen_ai.tool.call.id", "call_" + randomBytes(9).map { String($0, radix: 16) }.joined())
            Self.kv(&w, 9, "tool.risk_tier", tier)
            // One call in 20 carries an email address, as real tool arguments sometimes do.
            let contact = rng.next() % 20 == 0 ? ",\"notify\":\"user\(rng.next() % 9000)@example.com\"" : ""
            Self.kv(
                &w, 9, "gen_ai.tool.call.arguments",
                "{\"employee_id\":\"E\(rng.next() % 90000)\",\"reason\":\"\(sentence(6))\"\(contact)}")
            // Fixed width, like the IDs most systems issue (the load generator rewrites the digits per pass).
            let operation = "op-" + Self.padded(rng.next() % 1_000_000_000_000, 12)
            Self.kv(&w, 9, "operation.id", operation)
            operationCounter += 1
            if options.recordOperationIDsEvery > 0 && operationCounter % options.recordOperationIDsEvery == 0 {
                operationIDs.append((run.runID, operation))
            }
            Self.kv(&w, 9, "idempotency.key", run.runID + "-\(run.remaining)")
            if rng.next() % 20 == 0 {
                w.messageField(15) { s in
                    s.stringField(2, "backend timeout after 5000ms")
                    s.varintField(3, 2)
                }
            }
        case 2:
            let outcome = ["allowed", "allowed", "allowed", "blocked", "approval_required"][Int(rng.next() % 5)]
            w.stringField(5, "policy.check")
            w.varintField(6, 1)
            w.fixed64Field(7, run.clock)
            w.fixed64Field(8, run.clock + duration / 100)
            ownLabels(&w, run)
            Self.kv(&w, 9, "policy.outcome", outcome)
            Self.kv(&w, 9, "policy.rule", "rule-\(rng.next() % 12)")
            Self.kv(&w, 9, "gen_ai.tool.name", Self.tools[Int(rng.next() % UInt64(Self.tools.count))].0)
        default:
            w.stringField(5, "retrieval memory")
            w.varintField(6, 1)
            w.fixed64Field(7, run.clock)
            w.fixed64Field(8, run.clock + duration / 10)
            ownLabels(&w, run)
            Self.kv(&w, 9, "gen_ai.operation.name", "retrieval")
            Self.kv(&w, 9, "gen_ai.data_source.id", "kb-\(rng.next() % 8)")
            Self.intKV(&w, 9, "retrieval.documents", Int64(rng.next() % 10))
            w.messageField(11) { e in
                e.fixed64Field(1, run.clock + 1000)
                e.stringField(2, "cache.miss")
            }
        }
        run.clock += duration + 1_000_000
        return w.bytes
    }

    /// With `ownSpanLabels`: the run's version and task type on a span of it.
    func ownLabels(_ w: inout ProtobufWriter, _ run: RunState) {
        guard options.ownSpanLabels else { return }
        Self.kv(&w, 9, "gen_ai.agent.version", run.agentVersion)
        Self.kv(&w, 9, "agent.task.type", "device-triage")
    }

    static func kv(_ w: inout ProtobufWriter, _ field: Int, _ key: String, _ value: String) {
        w.messageField(field) { kv in
            kv.stringField(1, key)
            kv.messageField(2) { v in v.stringField(1, value) }
        }
    }

    static func intKV(_ w: inout ProtobufWriter, _ field: Int, _ key: String, _ value: Int64) {
        w.messageField(field) { kv in
            kv.stringField(1, key)
            kv.messageField(2) { v in v.int64Field(3, value) }
        }
    }
}

/// A small, fast, seedable generator (SplitMix64), so workloads are reproducible.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
