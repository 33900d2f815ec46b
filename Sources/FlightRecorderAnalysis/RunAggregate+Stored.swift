import FlightRecorderOTLP
import Foundation

/// How `stats.db` stores a run's aggregate: varints, and each name (agent, version, task type,
/// tool, finding kind) as the number `names` gives it, so a row costs tens of bytes rather
/// than the 700-800 its JSON took (which made the file grow by about 20 bytes a span once the
/// analyser kept up). The tenant and run ID are the row's key, not repeated. Rows written as
/// JSON by an earlier version are still read (`init(stored:...)`), and so are rows of version 1,
/// from before the aggregate held the span families' counters (`spanCounters`: their number
/// plus one, or 0 for none kept, then the root labels they were counted with, then each series'
/// family, the label values that differ from the series before, and its value).
///
/// Written by hand: no serialisation library on this machine has a varint codec for Swift
/// structs, and the layout is a few dozen lines (written with the OTLP module's
/// `ProtobufWriter`, read with its `WireCursor`).
extension RunAggregate {
    static let storedVersion: UInt8 = 2
    /// The span families a row may hold counters of (the counters among those ingest may leave
    /// to the analyser), in the order written.
    static let spanCounterFamilies = MetricFamily.allCases.filter {
        !$0.isRunFamily && !$0.isHistogram && $0 != .redactions
    }

    /// The row's bytes; `name` numbers a string (adding it to the store's table if new).
    func stored(name: (String) -> UInt64) -> [UInt8] {
        var out = ProtobufWriter(capacity: 64)
        out.raw([Self.storedVersion])
        func put(_ v: UInt64) { out.varint(v) }
        func put(_ v: Int) { put(UInt64(max(0, v))) }
        func put(signed v: Int64) { put(UInt64(bitPattern: (v << 1) ^ (v >> 63))) }
        // A whole number as a varint (low bit 0); anything else as the low bit 1 and the
        // double's bits.
        func put(number d: Double) {
            if d >= 0 && d < 9e15 && d == d.rounded() {
                put(UInt64(d) << 1)
            } else {
                put(UInt64(1))
                withUnsafeBytes(of: d.bitPattern.littleEndian) { out.raw($0) }
            }
        }
        put(name(agent))
        put(name(version))
        put(name(taskType))
        put(signed: startNanos)
        put(signed: endNanos &- startNanos)
        put((error ? 1 : 0) | (hasRoot ? 2 : 0))
        for v in [
            spanCount, steps, modelCalls, toolCalls, decisions, blocked, approvalRequired, approvals, denied, repeated,
            uncertainWrites,
        ] { put(v) }
        put(number: tokensIn)
        put(number: tokensOut)
        put(number: costUSD)
        put(findings.count)
        for (kind, n) in findings.sorted(by: { $0.key < $1.key }) {
            put(name(kind))
            put(n)
        }
        put(tools.count)
        for (tool, c) in tools.sorted(by: { $0.key < $1.key }) {
            put(name(tool))
            put(c.calls)
            put(c.errors)
            put(c.timeouts)
        }
        put(repeatedByTool.count)
        for (tool, n) in repeatedByTool.sorted(by: { $0.key < $1.key }) {
            put(name(tool))
            put(n)
        }
        // Their number plus one; 0 for none kept (`spanCounters` nil; only the counter families
        // the analyser may count, `spanCounterFamilies`, family by family). Each series' labels
        // after the tenant are numbered names, and only those that differ from the previous
        // series' label in the same place are written, after a bit mask of which (a run's
        // series mostly share agent, version and task type).
        let written = spanCounters.map { counters in
            Self.spanCounterFamilies.flatMap { f in counters.filter { $0.key.family == f } }
        }
        put(written.map { $0.count + 1 } ?? 0)
        if let written {
            // The root labels they were counted with (a name's number, 0 for none).
            put(spanRoot.version.map(name) ?? 0)
            put(spanRoot.task.map(name) ?? 0)
            var previous: [UInt64] = []
            for (key, value) in written {
                put(UInt64(key.family.rawValue))
                let ids = key.labels.dropFirst().map(name)
                var mask: UInt64 = 0
                for (i, id) in ids.enumerated() where i >= previous.count || previous[i] != id { mask |= 1 << i }
                put(mask)
                for (i, id) in ids.enumerated() where mask & (1 << i) != 0 { put(id) }
                put(number: value)
                previous = ids
            }
        }
        return out.bytes
    }

    /// The aggregate of the run `runID` of `tenant` stored as `bytes`, written by `stored` or, by
    /// an earlier version, as JSON; nil if unreadable. `name` is the string a number stands for.
    /// `spanCounters` reads the span families' counters too (the analyser's comparison and the
    /// totals need them; stats, views and expiry do not, and leave them nil).
    init?(
        stored bytes: [UInt8], tenant: String, runID: String, spanCounters: Bool = true, name: (UInt64) -> String?
    ) {
        guard let first = bytes.first else { return nil }
        if first == UInt8(ascii: "{") {
            guard let a = try? RunStatsStore.decoder.decode(RunAggregate.self, from: Data(bytes)) else { return nil }
            self = a
            return
        }
        guard first == 1 || first == Self.storedVersion else { return nil }
        var decoded: RunAggregate?
        bytes.withUnsafeBytes { raw in
            var c = WireCursor(raw, 1..<raw.count)
            decoded = Self.decode(
                &c, format: first, tenant: tenant, runID: runID, spanCounters: spanCounters, name: name)
            if spanCounters && !c.atEnd { decoded = nil }
        }
        guard let decoded else { return nil }
        self = decoded
    }

    private static func decode(
        _ c: inout WireCursor, format: UInt8, tenant: String, runID: String, spanCounters: Bool,
        name: (UInt64) -> String?
    ) -> RunAggregate? {
        var bad = false
        func get() -> UInt64 {
            guard let v = c.varint() else {
                bad = true
                return 0
            }
            return v
        }
        func int() -> Int { Int(truncatingIfNeeded: min(get(), UInt64(Int.max))) }
        func signed() -> Int64 {
            let v = get()
            return Int64(bitPattern: v >> 1) ^ -Int64(bitPattern: v & 1)
        }
        func number() -> Double {
            let v = get()
            if v & 1 == 0 { return Double(v >> 1) }
            guard let bits = c.fixed64() else {
                bad = true
                return 0
            }
            return Double(bitPattern: bits)
        }
        func text() -> String {
            guard let s = name(get()) else {
                bad = true
                return ""
            }
            return s
        }
        let agent = text()
        let version = text()
        let taskType = text()
        let start = signed()
        var a = RunAggregate(
            tenant: tenant, runID: runID, agent: agent, version: version, taskType: taskType, startNanos: start,
            endNanos: start &+ signed())
        let flags = get()
        a.error = flags & 1 != 0
        a.hasRoot = flags & 2 != 0
        a.spanCount = int()
        a.steps = int()
        a.modelCalls = int()
        a.toolCalls = int()
        a.decisions = int()
        a.blocked = int()
        a.approvalRequired = int()
        a.approvals = int()
        a.denied = int()
        a.repeated = int()
        a.uncertainWrites = int()
        a.tokensIn = number()
        a.tokensOut = number()
        a.costUSD = number()
        for _ in 0..<min(int(), c.remaining) {
            let kind = text()
            a.findings[kind] = int()
        }
        for _ in 0..<min(int(), c.remaining) {
            let tool = text()
            a.tools[tool] = ToolCounts(calls: int(), errors: int(), timeouts: int())
        }
        for _ in 0..<min(int(), c.remaining) {
            let tool = text()
            a.repeatedByTool[tool] = int()
        }
        if format >= 2, spanCounters, case let n = int(), n > 0 {
            var counters = SeriesMap<Double>()
            let tenantLabel = MetricLabel.value(tenant)
            func optionalText() -> String? {
                let id = get()
                return id == 0
                    ? nil
                    : name(id)
                        ?? {
                            bad = true; return nil
                        }()
            }
            a.spanRoot = SpanRoot(version: optionalText(), task: optionalText())
            var previous: [String] = []
            for _ in 0..<min(n - 1, c.remaining) {
                guard let family = MetricFamily(rawValue: UInt8(truncatingIfNeeded: get())), !family.isRunFamily,
                    !family.isHistogram
                else { return nil }
                let mask = get()
                let labels = (0..<family.labels.count - 1).map { i in
                    if mask & (1 << i) != 0 { return text() }
                    if i < previous.count { return previous[i] }
                    bad = true
                    return ""
                }
                counters[SeriesKey(family, [tenantLabel] + labels)] = number()
                previous = labels
            }
            a.spanCounters = counters
        }
        return bad ? nil : a
    }
}
