import Foundation

/// Which measures differ between two groups of runs (a baseline version and a candidate),
/// beyond chance and beyond a small effect.
///
/// Rates use a two-proportion z-test (pooled), step counts and durations the Mann-Whitney
/// rank-sum test with its normal approximation and tie correction (the distributions are kept
/// as counts per value, so ties are exact). A measure is flagged when its two-sided p-value
/// is below `alpha` (0.001) and the candidate differs from the baseline by at least
/// `minRelativeChange` (10 %): with thousands of runs a test alone calls trivial shifts
/// significant. Either side needs `minSamples` observations (20) for a measure to be tested.
public enum Drift {
    public static let alpha = 0.001
    public static let minRelativeChange = 0.10
    public static let minSamples = 20

    public struct Change: Sendable, Codable, Equatable {
        public var measure: String
        public var test: String
        public var baseline: Double
        public var candidate: Double
        /// candidate / baseline (nil when the baseline is 0).
        public var ratio: Double?
        public var pValue: Double
        public var baselineSamples: Int
        public var candidateSamples: Int
    }

    /// Every measure tested (flagged or not), then the flagged ones are those `significant`.
    public static func measures(baseline b: GroupStats, candidate c: GroupStats) -> [Change] {
        var out: [Change] = []
        func rate(_ name: String, _ bx: Int, _ bn: Int, _ cx: Int, _ cn: Int) {
            guard bn >= minSamples, cn >= minSamples else { return }
            let p = twoProportionP(bx, bn, cx, cn)
            let bv = Double(bx) / Double(bn)
            let cv = Double(cx) / Double(cn)
            out.append(
                Change(
                    measure: name, test: "two-proportion z", baseline: bv, candidate: cv, ratio: bv > 0 ? cv / bv : nil,
                    pValue: p, baselineSamples: bn, candidateSamples: cn))
        }
        rate("error_rate", b.errors, b.runs, c.errors, c.runs)
        rate("escalation_rate", b.escalated, b.runs, c.escalated, c.runs)
        rate("blocked_rate", b.blocked, b.decisions, c.blocked, c.decisions)
        rate("approval_required_rate", b.approvalRequired, b.decisions, c.approvalRequired, c.decisions)
        rate("denied_rate", b.denied, b.approvals, c.denied, c.approvals)
        rate("repeated_call_rate", b.repeated, b.toolCalls, c.repeated, c.toolCalls)
        for tool in Set(b.tools.keys).union(c.tools.keys).sorted() {
            let bt = b.tools[tool] ?? .init()
            let ct = c.tools[tool] ?? .init()
            rate("tool_timeout_rate{tool=\(tool)}", bt.timeouts, bt.calls, ct.timeouts, ct.calls)
            rate("tool_error_rate{tool=\(tool)}", bt.errors, bt.calls, ct.errors, ct.calls)
        }
        func rank(_ name: String, _ x: [Int: Int], _ y: [Int: Int], value: (Int) -> Double) {
            let nx = x.values.reduce(0, +)
            let ny = y.values.reduce(0, +)
            guard nx >= minSamples, ny >= minSamples else { return }
            let bm = GroupStats.quantile(x, 0.5).map(value) ?? 0
            let cm = GroupStats.quantile(y, 0.5).map(value) ?? 0
            out.append(
                Change(
                    measure: name, test: "Mann-Whitney U", baseline: bm, candidate: cm, ratio: bm > 0 ? cm / bm : nil,
                    pValue: mannWhitneyP(x, y), baselineSamples: nx, candidateSamples: ny))
        }
        rank("steps_p50", b.steps, c.steps) { Double($0) }
        rank("duration_p50_seconds", b.durations, c.durations) { DurationBins.seconds($0) }
        return out
    }

    public static func isSignificant(_ m: Change) -> Bool {
        guard m.pValue < alpha else { return false }
        if m.baseline == 0 { return m.candidate != 0 }
        return abs(m.candidate - m.baseline) / abs(m.baseline) >= minRelativeChange
    }

    /// The flagged measures, largest change first.
    public static func compare(baseline: GroupStats, candidate: GroupStats) -> [Change] {
        changes(in: measures(baseline: baseline, candidate: candidate))
    }

    /// The flagged ones of `measures` (`measures(baseline:candidate:)`), largest change first.
    public static func changes(in measures: [Change]) -> [Change] {
        measures.filter(isSignificant).sorted {
            abs(log(max($0.ratio ?? 1e9, 1e-9))) > abs(log(max($1.ratio ?? 1e9, 1e-9)))
        }
    }

    /// Two-sided p-value of the pooled two-proportion z-test.
    static func twoProportionP(_ x1: Int, _ n1: Int, _ x2: Int, _ n2: Int) -> Double {
        let p = Double(x1 + x2) / Double(n1 + n2)
        let se = (p * (1 - p) * (1 / Double(n1) + 1 / Double(n2))).squareRoot()
        guard se > 0 else { return x1 * n2 == x2 * n1 ? 1 : 0 }
        let z = (Double(x1) / Double(n1) - Double(x2) / Double(n2)) / se
        return erfc(abs(z) / 2.0.squareRoot())
    }

    /// Two-sided p-value of the Mann-Whitney U test of two samples given as counts per value
    /// (normal approximation with the tie correction).
    static func mannWhitneyP(_ x: [Int: Int], _ y: [Int: Int]) -> Double {
        let n1 = Double(x.values.reduce(0, +))
        let n2 = Double(y.values.reduce(0, +))
        let n = n1 + n2
        var rankSumX = 0.0
        var tieTerm = 0.0
        var below = 0.0
        for v in Set(x.keys).union(y.keys).sorted() {
            let cx = Double(x[v, default: 0])
            let cy = Double(y[v, default: 0])
            let t = cx + cy
            // Tied values share the mean of the ranks they span.
            let meanRank = below + (t + 1) / 2
            rankSumX += cx * meanRank
            tieTerm += t * t * t - t
            below += t
        }
        let u = rankSumX - n1 * (n1 + 1) / 2
        let mean = n1 * n2 / 2
        let variance = n1 * n2 / 12 * ((n + 1) - tieTerm / (n * (n - 1)))
        guard variance > 0 else { return 1 }
        let z = (u - mean) / variance.squareRoot()
        return erfc(abs(z) / 2.0.squareRoot())
    }
}
