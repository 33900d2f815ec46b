import Foundation

/// The figures of a group of runs (a version, a tenant, an hour of one): counts to make rates
/// from, and the distributions of steps and durations to take percentiles and rank tests
/// from. Adds and subtracts exactly, so an hourly rollup can take a run back out when the run
/// is observed again.
public struct GroupStats: Sendable, Equatable, Codable {
    public var runs = 0
    public var errors = 0
    public var escalated = 0
    public var decisions = 0
    public var blocked = 0
    public var approvalRequired = 0
    public var approvals = 0
    public var denied = 0
    public var toolCalls = 0
    public var modelCalls = 0
    public var repeated = 0
    public var tokensIn = 0.0
    public var tokensOut = 0.0
    public var costUSD = 0.0
    /// Runs by step count (exact).
    public var steps: [Int: Int] = [:]
    /// Runs by duration bin (`DurationBins`).
    public var durations: [Int: Int] = [:]
    public var tools: [String: RunAggregate.ToolCounts] = [:]

    public init() {}

    public mutating func add(_ r: RunAggregate, sign: Int = 1) {
        runs += sign
        if r.error { errors += sign }
        if r.escalated { escalated += sign }
        decisions += sign * r.decisions
        blocked += sign * r.blocked
        approvalRequired += sign * r.approvalRequired
        approvals += sign * r.approvals
        denied += sign * r.denied
        toolCalls += sign * r.toolCalls
        modelCalls += sign * r.modelCalls
        repeated += sign * r.repeated
        tokensIn += Double(sign) * r.tokensIn
        tokensOut += Double(sign) * r.tokensOut
        costUSD += Double(sign) * r.costUSD
        Self.bump(&steps, r.steps, sign)
        Self.bump(&durations, DurationBins.bin(r.durationSeconds), sign)
        for (tool, c) in r.tools {
            var t = tools[tool, default: .init()]
            t.calls += sign * c.calls
            t.errors += sign * c.errors
            t.timeouts += sign * c.timeouts
            tools[tool] = t.calls == 0 && t.errors == 0 && t.timeouts == 0 ? nil : t
        }
    }

    public mutating func add(_ o: GroupStats) {
        runs += o.runs
        errors += o.errors
        escalated += o.escalated
        decisions += o.decisions
        blocked += o.blocked
        approvalRequired += o.approvalRequired
        approvals += o.approvals
        denied += o.denied
        toolCalls += o.toolCalls
        modelCalls += o.modelCalls
        repeated += o.repeated
        tokensIn += o.tokensIn
        tokensOut += o.tokensOut
        costUSD += o.costUSD
        for (k, n) in o.steps { Self.bump(&steps, k, n) }
        for (k, n) in o.durations { Self.bump(&durations, k, n) }
        for (tool, c) in o.tools {
            var t = tools[tool, default: .init()]
            t.calls += c.calls
            t.errors += c.errors
            t.timeouts += c.timeouts
            tools[tool] = t
        }
    }

    public mutating func subtract(_ o: GroupStats) {
        var negative = GroupStats()
        negative.runs = -o.runs
        negative.errors = -o.errors
        negative.escalated = -o.escalated
        negative.decisions = -o.decisions
        negative.blocked = -o.blocked
        negative.approvalRequired = -o.approvalRequired
        negative.approvals = -o.approvals
        negative.denied = -o.denied
        negative.toolCalls = -o.toolCalls
        negative.modelCalls = -o.modelCalls
        negative.repeated = -o.repeated
        negative.tokensIn = -o.tokensIn
        negative.tokensOut = -o.tokensOut
        negative.costUSD = -o.costUSD
        negative.steps = o.steps.mapValues { -$0 }
        negative.durations = o.durations.mapValues { -$0 }
        negative.tools = o.tools.mapValues { .init(calls: -$0.calls, errors: -$0.errors, timeouts: -$0.timeouts) }
        add(negative)
        tools = tools.filter { $0.value != .init() }
    }

    static func bump(_ m: inout [Int: Int], _ k: Int, _ n: Int) {
        let v = m[k, default: 0] + n
        m[k] = v == 0 ? nil : v
    }

    /// The `q` quantile (0...1) of a distribution given as counts per value.
    static func quantile(_ counts: [Int: Int], _ q: Double) -> Int? {
        let total = counts.values.reduce(0, +)
        guard total > 0 else { return nil }
        let rank = max(1, Int((q * Double(total)).rounded(.up)))
        var seen = 0
        for k in counts.keys.sorted() {
            seen += counts[k]!
            if seen >= rank { return k }
        }
        return counts.keys.max()
    }

    public func stepsQuantile(_ q: Double) -> Int? { Self.quantile(steps, q) }
    public func durationQuantile(_ q: Double) -> Double? { Self.quantile(durations, q).map(DurationBins.seconds) }
}

/// Run durations in bins 5 % wide (a bin's value is its geometric middle), from 1 ms up: a
/// percentile read from the bins is within 2.5 % of the exact one.
public enum DurationBins {
    static let ratio = 1.05
    static let unit = 0.001

    public static func bin(_ seconds: Double) -> Int {
        guard seconds > unit else { return 0 }
        return Int((log(seconds / unit) / log(ratio)).rounded(.down)) + 1
    }

    public static func seconds(_ bin: Int) -> Double {
        bin == 0 ? 0 : unit * pow(ratio, Double(bin) - 0.5)
    }
}
