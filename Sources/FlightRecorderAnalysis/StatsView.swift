/// The figures `GET /api/v1/stats` answers per group, and how groups are keyed.
public struct StatsView: Sendable, Codable, Equatable {
    public struct Quantiles: Sendable, Codable, Equatable {
        public var p50: Double?
        public var p95: Double?
    }

    public struct Tool: Sendable, Codable, Equatable {
        public var calls: Int
        public var errorRate: Double
        public var timeoutRate: Double
    }

    public struct Tokens: Sendable, Codable, Equatable {
        public var input: Double
        public var output: Double
    }

    public var group: String
    public var runs: Int
    public var errorRate: Double
    public var escalationRate: Double
    public var steps: Quantiles
    public var durationSeconds: Quantiles
    public var tools: [String: Tool]
    /// Of policy decisions.
    public var blockedRate: Double
    public var approvalRequiredRate: Double
    /// Of approval decisions.
    public var deniedRate: Double
    /// Of tool calls.
    public var repeatedCallRate: Double
    public var tokens: Tokens
    public var costUsd: Double

    public init(group: String, _ g: GroupStats) {
        func ratio(_ x: Int, _ n: Int) -> Double { n > 0 ? Double(x) / Double(n) : 0 }
        self.group = group
        runs = g.runs
        errorRate = ratio(g.errors, g.runs)
        escalationRate = ratio(g.escalated, g.runs)
        steps = Quantiles(p50: g.stepsQuantile(0.5).map(Double.init), p95: g.stepsQuantile(0.95).map(Double.init))
        durationSeconds = Quantiles(p50: g.durationQuantile(0.5), p95: g.durationQuantile(0.95))
        tools = g.tools.mapValues {
            Tool(calls: $0.calls, errorRate: ratio($0.errors, $0.calls), timeoutRate: ratio($0.timeouts, $0.calls))
        }
        blockedRate = ratio(g.blocked, g.decisions)
        approvalRequiredRate = ratio(g.approvalRequired, g.decisions)
        deniedRate = ratio(g.denied, g.approvals)
        repeatedCallRate = ratio(g.repeated, g.toolCalls)
        tokens = Tokens(input: g.tokensIn, output: g.tokensOut)
        costUsd = g.costUSD
    }
}

/// What stats group runs by: `agent.version` (the configured version rule), `tenant`,
/// `agent` (`gen_ai.agent.name`, else `service.name`) or `task.type` (the configured
/// task-type rule).
public enum StatsGrouping: String, Sendable, CaseIterable {
    case version = "agent.version"
    case tenant
    case agent
    case taskType = "task.type"

    public func key(_ d: RunStatsStore.Dimensions) -> String {
        switch self {
        case .version: d.version
        case .tenant: d.tenant
        case .agent: d.agent
        case .taskType: d.taskType
        }
    }

    public func key(_ r: RunAggregate) -> String {
        key(.init(tenant: r.tenant, agent: r.agent, version: r.version, taskType: r.taskType))
    }
}
