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

    /// The counts and the sums, in the order the binary form stores them: one list for adding,
    /// subtracting, encoding and summing.
    static let countFields: [any WritableKeyPath<GroupStats, Int> & Sendable] = [
        \.runs, \.errors, \.escalated, \.decisions, \.blocked, \.approvalRequired, \.approvals, \.denied,
        \.toolCalls, \.modelCalls, \.repeated,
    ]
    static let sumFields: [any WritableKeyPath<GroupStats, Double> & Sendable] = [\.tokensIn, \.tokensOut, \.costUSD]

    public mutating func add(_ o: GroupStats) {
        for f in Self.countFields { self[keyPath: f] += o[keyPath: f] }
        for f in Self.sumFields { self[keyPath: f] += o[keyPath: f] }
        for (k, n) in o.steps { Self.bump(&steps, k, n) }
        for (k, n) in o.durations { Self.bump(&durations, k, n) }
        for (tool, c) in o.tools { tools[tool, default: .init()].add(c) }
    }

    public mutating func subtract(_ o: GroupStats) {
        var negative = GroupStats()
        for f in Self.countFields { negative[keyPath: f] = -o[keyPath: f] }
        for f in Self.sumFields { negative[keyPath: f] = -o[keyPath: f] }
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

/// `GroupStats` in the rollups' binary form, and a sum of many of them with the step and
/// duration distributions as dense arrays.
///
/// Hand-written because a query over a week of rollups reads about 50,000 of them: as JSON
/// (Foundation's decoder) and dictionaries merged key by key, `GET /api/v1/stats` over a
/// million runs took 3.8 s (`--stats-bench`). Little-endian: a tag byte, the counts and the
/// sums (`countFields`, `sumFields`), then the steps, the duration bins and the tools, each a count and entries.
extension GroupStats {
    public static let binaryTag: UInt8 = 0xB1

    public var binary: [UInt8] {
        var out: [UInt8] = [Self.binaryTag]
        out.reserveCapacity(1 + 14 * 8 + (steps.count + durations.count) * 16 + tools.count * 48)
        func int(_ v: Int) { withUnsafeBytes(of: Int64(v).littleEndian) { out.append(contentsOf: $0) } }
        for f in Self.countFields { int(self[keyPath: f]) }
        for f in Self.sumFields { int(Int(bitPattern: UInt(self[keyPath: f].bitPattern))) }
        for m in [steps, durations] {
            int(m.count)
            for (k, v) in m {
                int(k)
                int(v)
            }
        }
        int(tools.count)
        for (name, t) in tools {
            let bytes = Array(name.utf8)
            int(bytes.count)
            out += bytes
            int(t.calls)
            int(t.errors)
            int(t.timeouts)
        }
        return out
    }

    /// A rollup as stored: binary, or JSON as the first version stored it.
    public init?(stored: [UInt8]) {
        var sum = Sum()
        if sum.add(stored) {
            self = sum.stats
        } else if let g = try? JSONDecoder().decode(GroupStats.self, from: Data(stored)) {
            self = g
        } else {
            return nil
        }
    }

    /// A sum of `GroupStats` (stored rollups, mostly).
    public struct Sum: Sendable {
        var counts = [Int](repeating: 0, count: GroupStats.countFields.count)
        var sums = [Double](repeating: 0, count: GroupStats.sumFields.count)
        /// By value: steps up to `denseLimit`, every duration bin (a bin is under 500 for a day).
        var steps: [Int] = []
        var durations: [Int] = []
        var sparse: [Int: Int] = [:]
        var sparseDurations: [Int: Int] = [:]
        var tools: [String: RunAggregate.ToolCounts] = [:]
        static let denseLimit = 4096

        public init() {}

        static func bump(_ dense: inout [Int], _ sparse: inout [Int: Int], _ k: Int, _ n: Int) {
            if k >= 0 && k < denseLimit {
                if k >= dense.count { dense += [Int](repeating: 0, count: k + 1 - dense.count) }
                dense[k] += n
            } else {
                sparse[k, default: 0] += n
            }
        }

        /// Adds a binary rollup; false (and nothing added) when `stored` is not one.
        public mutating func add(_ stored: [UInt8]) -> Bool {
            guard stored.first == GroupStats.binaryTag else { return false }
            // Read whole before anything is added (a copy of `self` to roll back would copy
            // the distributions on every rollup).
            var counts = [Int](repeating: 0, count: GroupStats.countFields.count)
            var sums = [Double](repeating: 0, count: GroupStats.sumFields.count)
            var pairs: [(steps: Bool, key: Int, count: Int)] = []
            var tools: [(String, RunAggregate.ToolCounts)] = []
            let ok = stored.withUnsafeBytes { raw -> Bool in
                var at = 1
                func int() -> Int? {
                    guard at + 8 <= raw.count else { return nil }
                    defer { at += 8 }
                    return Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: Int64.self)))
                }
                for i in counts.indices {
                    guard let v = int() else { return false }
                    counts[i] = v
                }
                for i in sums.indices {
                    guard let v = int() else { return false }
                    sums[i] = Double(bitPattern: UInt64(UInt(bitPattern: v)))
                }
                for steps in [true, false] {
                    guard let n = int(), n >= 0, n <= raw.count / 16 else { return false }
                    for _ in 0..<n {
                        guard let k = int(), let v = int() else { return false }
                        pairs.append((steps, k, v))
                    }
                }
                guard let n = int(), n >= 0, n <= raw.count / 32 else { return false }
                for _ in 0..<n {
                    guard let length = int(), length >= 0, at + length <= raw.count else { return false }
                    let name = String(decoding: UnsafeRawBufferPointer(rebasing: raw[at..<at + length]), as: UTF8.self)
                    at += length
                    guard let calls = int(), let errors = int(), let timeouts = int() else { return false }
                    tools.append((name, .init(calls: calls, errors: errors, timeouts: timeouts)))
                }
                return at == raw.count
            }
            guard ok else { return false }
            for i in counts.indices { self.counts[i] += counts[i] }
            for i in sums.indices { self.sums[i] += sums[i] }
            for p in pairs {
                if p.steps {
                    Self.bump(&steps, &sparse, p.key, p.count)
                } else {
                    Self.bump(&durations, &sparseDurations, p.key, p.count)
                }
            }
            for (name, t) in tools { self.tools[name, default: .init()].add(t) }
            return true
        }

        public mutating func add(_ g: GroupStats) {
            for (i, f) in GroupStats.countFields.enumerated() { counts[i] += g[keyPath: f] }
            for (i, f) in GroupStats.sumFields.enumerated() { sums[i] += g[keyPath: f] }
            for (k, v) in g.steps { Self.bump(&steps, &sparse, k, v) }
            for (k, v) in g.durations { Self.bump(&durations, &sparseDurations, k, v) }
            for (name, t) in g.tools { tools[name, default: .init()].add(t) }
        }

        public var stats: GroupStats {
            var g = GroupStats()
            for (i, f) in GroupStats.countFields.enumerated() { g[keyPath: f] = counts[i] }
            for (i, f) in GroupStats.sumFields.enumerated() { g[keyPath: f] = sums[i] }
            g.steps = sparse.filter { $0.value != 0 }
            for (k, v) in steps.enumerated() where v != 0 { g.steps[k] = v }
            g.durations = sparseDurations.filter { $0.value != 0 }
            for (k, v) in durations.enumerated() where v != 0 { g.durations[k] = v }
            g.tools = tools.filter { $0.value != .init() }
            return g
        }
    }
}
