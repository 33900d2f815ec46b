import FlightRecorderCore
public import FlightRecorderOTLP
import FlightRecorderQuery
import Foundation
import HeapModule
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The bundle's derived files (`decisions.jsonl`, `findings.jsonl`, `runs.csv`), computed from
/// the exported spans and which run each trace belongs to. The exporter and the verifier call
/// the same function, so a verifier checks each derived file byte for byte against the spans
/// it has proved, instead of trusting it.
public enum BundleViews {
    /// A run: its ID, tenant and traces (a run may span traces).
    public struct Run: Sendable, Equatable {
        public var runID: String
        public var tenant: String
        public var traces: [TraceID]

        public init(runID: String, tenant: String, traces: [TraceID]) {
            self.runID = runID
            self.tenant = tenant
            self.traces = traces
        }
    }

    /// A derived file's bytes, in the pieces the cores made (joined only when written or
    /// compared, never copied into one array).
    public struct Pieces: Sendable {
        public var pieces: [[UInt8]] = []
        public var count: Int { pieces.reduce(0) { $0 + $1.count } }
        public var joined: [UInt8] { Array(pieces.joined()) }

        /// Whether `bytes` are exactly these pieces, one after another.
        public func matches(_ bytes: UnsafeRawBufferPointer) -> Bool {
            guard bytes.count == count else { return false }
            var at = 0
            for p in pieces {
                let same = p.withUnsafeBytes { q in
                    q.isEmpty || memcmp(bytes.baseAddress! + at, q.baseAddress!, q.count) == 0
                }
                guard same else { return false }
                at += p.count
            }
            return true
        }
    }

    public struct Output: Sendable {
        public var decisions = Pieces()
        public var findings = Pieces()
        public var runs = Pieces()
        public var decisionCount = 0
        public var findingCount = 0
        public var runCount = 0
        /// Spans whose trace is in no run (a verifier reports them).
        public var unowned: [SpanRecord] = []
        /// Per finding kind, how many (for reports).
        public var findingKinds: [String: Int] = [:]
        /// Derived checking (`expected`): `decisions` and `findings` are empty, and this says
        /// whether the files given are exactly what they would have held.
        var linesMatched = false
    }

    static let csvHeader = "run_id,tenant,start,end,duration_ms,spans,error_spans,decisions,executions,findings,traces"

    /// `spans` in any order, duplicates allowed (each distinct span counts once, as the
    /// collector deduplicates on read); `runs` in the order they should be listed.
    public static func derive(spans: [SpanRecord], runs: [Run], rules: FindingRules = .default) -> Output {
        derive(chunks: [spans], runs: runs, rules: rules)
    }

    /// `derive(spans:)` of the chunks' spans one after another (as a verifier's threads read
    /// them: never copied into one array).
    ///
    /// With `expected`, the decision and finding lines are checked against those files as they
    /// are made, not kept (`Output.linesMatched`). A claim that does not add up to the files'
    /// lines, or a run count that differs, makes it derive them in full instead.
    static func derive(
        chunks spans: [[SpanRecord]], runs: [Run], rules: FindingRules, expected: ExpectedLines? = nil
    ) -> Output {
        /// A span's place: its chunk in the high bits, its index in the low 40.
        @Sendable func at(_ i: Int) -> SpanRecord { spans[i >> 40][i & (1 << 40 - 1)] }
        /// A run's spans (places in the order read), each distinct span once (its first copy),
        /// ordered by start, then span ID; compared as keys, so each record is copied once.
        @Sendable func ordered(_ places: [Int]) -> [Int] {
            struct Key {
                var start: UInt64
                var span: UInt64
                var trace: TraceID
                var place: Int
            }
            var keys = places.map { i in
                let s = spans[i >> 40]
                let k = i & (1 << 40 - 1)
                return Key(start: s[k].startNanos, span: s[k].spanID.value, trace: s[k].traceID, place: i)
            }
            // Copies of a span by ID: the first read stays.
            keys.sort { ($0.span, $0.trace, $0.place) < ($1.span, $1.trace, $1.place) }
            var w = 0
            for r in keys.indices where r == 0 || keys[r].span != keys[w - 1].span || keys[r].trace != keys[w - 1].trace
            {
                keys[w] = keys[r]
                w += 1
            }
            keys.removeLast(keys.count - w)
            keys.sort { ($0.start, $0.span, $0.place) < ($1.start, $1.span, $1.place) }
            return keys.map { $0.place }
        }
        // Tenants as small numbers, so the per-span keys hash fixed-size values only.
        var tenantNumbers: [String: Int32] = [:]
        var owner: [NumberedTrace: Int32] = [:]
        for (i, r) in runs.enumerated() {
            let tenant = tenantNumbers[r.tenant] ?? Int32(tenantNumbers.count)
            tenantNumbers[r.tenant] = tenant
            for t in r.traces where owner[NumberedTrace(tenant: tenant, trace: t)] == nil {
                owner[NumberedTrace(tenant: tenant, trace: t)] = Int32(i)
            }
        }
        // Each span's run (-1: none), looked up on every core: the tables are only read.
        let owners = Mutex([[Int32]](repeating: [], count: spans.count))
        let (tenantTable, ownerTable) = (tenantNumbers, owner)
        DispatchQueue.concurrentPerform(iterations: spans.count) { c in
            let chunk = spans[c]
            var found = [Int32](repeating: -1, count: chunk.count)
            var last: (tenant: String, number: Int32?)?
            // By index, the fields read in place: copying a record retains each of its parts.
            for k in chunk.indices {
                let tenant: Int32?
                if let last, last.tenant == chunk[k].tenant {
                    tenant = last.number
                } else {
                    tenant = tenantTable[chunk[k].tenant]
                    last = (chunk[k].tenant, tenant)
                }
                if let tenant, let g = ownerTable[NumberedTrace(tenant: tenant, trace: chunk[k].traceID)] {
                    found[k] = g
                }
            }
            owners.withLock { $0[c] = found }
        }
        // Grouped by run as indices into `spans`, in the order read; duplicates are dropped
        // per run below (a span's run follows from its tenant and trace, so its copies all
        // land in one group).
        var groupedIndices = [[Int]](repeating: [], count: runs.count)
        var out = Output()
        var unownedSeen: Set<TenantSpan> = []
        for (c, found) in owners.withLock({ $0 }).enumerated() {
            for (k, g) in found.enumerated() {
                if g >= 0 {
                    groupedIndices[Int(g)].append(c << 40 | k)
                } else if unownedSeen.insert(
                    TenantSpan(tenant: spans[c][k].tenant, trace: spans[c][k].traceID, span: spans[c][k].spanID)
                ).inserted {
                    out.unowned.append(spans[c][k])
                }
            }
        }
        // Each run's spans copied out on the core that derives it.
        let groups = groupedIndices
        groupedIndices = []
        // Runs are independent: read in chunks on every core, joined in order.
        struct Part {
            var decisions = JSONLines()
            var findings = JSONLines()
            var csv = ""
            var decisionCount = 0
            var findingCount = 0
            var kinds: [String: Int] = [:]
        }
        let chunks = max(1, min(runs.count / 64, ProcessInfo.processInfo.activeProcessorCount * 16))
        let per = (runs.count + chunks - 1) / chunks
        let parts = Mutex([Part?](repeating: nil, count: chunks))
        // Checking: the first decision and finding line of each run, from the claims.
        var firstLines: [(decisions: Int, findings: Int)]?
        if let expected, expected.claims.count == runs.count, expected.decisions.wellFormed,
            expected.findings.wellFormed
        {
            var at = (decisions: 0, findings: 0)
            var firsts = [at]
            firsts.reserveCapacity(runs.count + 1)
            for claim in expected.claims {
                guard claim.decisions >= 0, claim.findings >= 0 else { break }
                at = (at.decisions + claim.decisions, at.findings + claim.findings)
                firsts.append(at)
            }
            if firsts.count == runs.count + 1, at.decisions == expected.decisions.lines.count,
                at.findings == expected.findings.lines.count
            {
                firstLines = firsts
            }
        }
        let placed = firstLines
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let range = min(c * per, runs.count)..<min(c * per + per, runs.count)
            var part = Part()
            if let expected, let placed {
                part.decisions = JSONLines(
                    checking: expected.decisions,
                    lines: placed[range.lowerBound].decisions..<placed[range.upperBound].decisions)
                part.findings = JSONLines(
                    checking: expected.findings,
                    lines: placed[range.lowerBound].findings..<placed[range.upperBound].findings)
            }
            for i in range {
                Self.derive(
                    rules: rules,
                    run: runs[i],
                    spans: ordered(groups[i]).map(at), into: &part.decisions,
                    &part.findings, &part.csv,
                    decisions: &part.decisionCount, findings: &part.findingCount, kinds: &part.kinds)
            }
            parts.withLock { $0[c] = part }
        }
        out.runs.pieces.append(Array((csvHeader + "\r\n").utf8))
        let done = parts.withLock({ $0 }).compactMap({ $0 })
        if placed != nil {
            out.linesMatched = done.allSatisfy { $0.decisions.matchedAll && $0.findings.matchedAll }
            // Lines that differ: made again in full, for the report to say where.
            guard out.linesMatched else { return derive(chunks: spans, runs: runs, rules: rules) }
        }
        for part in done {
            out.decisions.pieces += part.decisions.pieces
            out.findings.pieces += part.findings.pieces
            out.runs.pieces.append(Array(part.csv.utf8))
            out.decisionCount += part.decisionCount
            out.findingCount += part.findingCount
            out.findingKinds.merge(part.kinds, uniquingKeysWith: +)
        }
        out.runCount = runs.count
        return out
    }

    /// One run's decisions, findings and `runs.csv` row; `runSpans` ordered by start time, then
    /// span ID.
    static func derive(
        rules: FindingRules, run: Run, spans runSpans: [SpanRecord], into decisions: inout JSONLines,
        _ findings: inout JSONLines,
        _ csv: inout String,
        decisions decisionCount: inout Int, findings findingCount: inout Int, kinds: inout [String: Int]
    ) {
        let graph = RunGraph(runID: run.runID, spans: runSpans)
        var decided = 0
        var executions = 0
        var values: [AttributeValue?] = []
        for j in causalOrder(graph) {
            guard let kind = decisionKind(graph, j) else { continue }
            if kind == "execution" { executions += 1 }
            decided += 1
            decisions.add { w in writeDecision(graph, j, kind: kind, run: run, &w, values: &values) }
        }
        let found = graph.findings(rules: rules)
        for f in found {
            kinds[f.kind, default: 0] += 1
            findings.add { w in
                w.beginObject()
                w.member("kind", f.kind)
                w.member("message", f.message)
                w.member("run_id", run.runID)
                w.member("severity", f.severity)
                w.member("span_ids", f.spanIds)
                w.member("tenant", run.tenant)
                w.endObject()
            }
        }
        // One pass by index, each field read in place (mapping the records copied each one,
        // a retain of every part, `perf`).
        var (start, end, errors) = (runSpans.isEmpty ? 0 : UInt64.max, UInt64(0), 0)
        for k in runSpans.indices {
            start = min(start, runSpans[k].startNanos)
            end = max(end, runSpans[k].endNanos, runSpans[k].startNanos)
            if runSpans[k].statusCode == .error { errors += 1 }
        }
        let fields = [
            run.runID, run.tenant, runSpans.isEmpty ? "" : Timestamp.rfc3339(start),
            runSpans.isEmpty ? "" : Timestamp.rfc3339(end), String((end - start) / 1_000_000),
            String(runSpans.count), String(errors), String(decided),
            String(executions), String(found.count), run.traces.map(\.hex).sorted().joined(separator: " "),
        ]
        csv += fields.map(CSV.field).joined(separator: ",") + "\r\n"
        decisionCount += decided
        findingCount += found.count
    }

    struct NumberedTrace: Hashable {
        var tenant: Int32
        var trace: TraceID
    }

    struct TenantSpan: Hashable {
        var tenant: String
        var trace: TraceID
        var span: SpanID
    }

    /// What a span is in the decision record, or nil when it is not part of it.
    static func decisionKind(_ g: RunGraph, _ i: Int) -> String? {
        let name = g.spans[i].name
        let decision = g.approvalDecisions[i]
        if name == "approval.granted" || decision == "granted" { return "approval_granted" }
        if name == "approval.denied" || decision == "denied" { return "approval_denied" }
        if name == "approval.requested" { return "approval_request" }
        if g.executes[i] { return "execution" }
        if g.policyOutcomes[i] != nil { return "policy_decision" }
        return nil
    }

    /// Every span before the spans it causally follows: parents before children, link targets
    /// before the spans linking to them, else by skew-corrected start. A topological order
    /// (Kahn's algorithm, earliest start first among the ready).
    static func causalOrder(_ g: RunGraph) -> [Int] {
        let n = g.spans.count
        var indegree = [Int](repeating: 0, count: n)
        var after = [[Int]](repeating: [], count: n)
        for i in 0..<n {
            if let p = g.parent[i] {
                after[p].append(i)
                indegree[i] += 1
            }
            for t in g.linksTo[i] where t != i {
                after[t].append(i)
                indegree[i] += 1
            }
        }
        struct Ready: Comparable {
            var start: Int64
            var id: UInt64
            var index: Int
            static func < (a: Ready, b: Ready) -> Bool { (a.start, a.id, a.index) < (b.start, b.id, b.index) }
        }
        func ready(_ i: Int) -> Ready { Ready(start: g.start[i], id: g.spans[i].spanID.value, index: i) }
        var heap = Heap<Ready>()
        for i in 0..<n where indegree[i] == 0 { heap.insert(ready(i)) }
        var order: [Int] = []
        order.reserveCapacity(n)
        while let next = heap.popMin() {
            order.append(next.index)
            for j in after[next.index] {
                indegree[j] -= 1
                if indegree[j] == 0 { heap.insert(ready(j)) }
            }
        }
        // A cycle (links both ways): the rest by start.
        if order.count < n {
            let placed = Set(order)
            order += (0..<n).filter { !placed.contains($0) }.map(ready).sorted().map(\.index)
        }
        return order
    }

    /// The attributes a decision line names, in `DecisionKey` order.
    static let decisionKeys = AttributeKeys([
        AgentKeys.approvalTicket, AgentKeys.approver, AgentKeys.idempotencyKey, AgentKeys.operationID,
        "tool.execution.status", "policy.reason", AgentKeys.policyRule, AgentKeys.toolTier,
    ])
    enum DecisionKey: Int {
        case ticket, approver, idempotencyKey, operationID, executionStatus, reason, rule, tier
    }

    /// `values` is scratch space for the span's attributes, reused from one decision to the next.
    static func writeDecision(
        _ g: RunGraph, _ i: Int, kind: String, run: Run, _ w: inout JSONWriter, values: inout [AttributeValue?]
    ) {
        // The record read in place, through `g.spans[i]` (a copy retained each of its parts).
        g.spans[i].attributes.values(of: decisionKeys, into: &values)
        let found = values
        func a(_ key: DecisionKey) -> String? { found[key.rawValue]?.displayString }
        w.beginObject()
        w.member("approval_ticket", a(.ticket))
        w.member("approver", a(.approver))
        w.member("idempotency_key", a(.idempotencyKey))
        w.member("kind", kind)
        let links = g.linksTo[i].map { g.spans[$0].spanID.hex }
        if !links.isEmpty { w.member("links", links) }
        w.member("name", g.spans[i].name)
        w.member("operation_id", a(.operationID))
        w.member("outcome", g.policyOutcomes[i] ?? g.approvalDecisions[i] ?? a(.executionStatus))
        // IDs and the time written in place: no string made for each (one decision in two spans).
        if let parent = g.spans[i].parentSpanID {
            w.key("parent_span_id")
            w.hexString(parent.value)
        }
        w.member("reason", a(.reason))
        w.member("rule", a(.rule))
        w.member("run_id", run.runID)
        w.key("span_id")
        w.hexString(g.spans[i].spanID.value)
        w.member("status", g.spans[i].statusCode == .error ? "error" : g.spans[i].statusCode == .ok ? "ok" : "unset")
        w.member("tenant", run.tenant)
        w.key("time")
        w.timestamp(g.spans[i].startNanos)
        w.member("tool", g.toolNames[i])
        w.member("tool_risk_tier", a(.tier))
        w.key("trace_id")
        w.hexString(g.spans[i].traceID.high, g.spans[i].traceID.low)
        w.endObject()
    }
}

/// A trace within a tenant: trace IDs are unique only per tenant.
struct TenantTrace: Hashable, Sendable {
    var tenant: String
    var trace: TraceID
}

/// What a verifier holds the derived line files to: the files' lines, and how many decisions and
/// findings each run's `runs.csv` row claims, which place each run's lines in the files. The
/// claims are only a guide: a wrong one misplaces lines, which then differ.
struct ExpectedLines: @unchecked Sendable {  // the buffers outlive `derive`, which only reads them
    struct File: @unchecked Sendable {  // read only, within `derive`
        var bytes: UnsafeRawBufferPointer
        /// Its lines, without their newlines.
        var lines: [Range<Int>]
        /// Whether the file is its lines, each ending in a newline (or empty).
        var wellFormed: Bool { bytes.isEmpty || bytes[bytes.count - 1] == 0x0A }
    }

    var decisions: File
    var findings: File
    /// Per run, in `runs` order: the decisions and the findings its row claims.
    var claims: [(decisions: Int, findings: Int)]
}

/// Lines of JSON objects, each ending in a newline, in pieces of about 256 KiB: one buffer
/// grown to a file's size would be copied at each doubling, and each larger copy taken from
/// fresh pages (over glibc's mmap threshold, 1 MiB in the daemon), which is slow to fault in.
///
/// Or, checking (`init(checking:)`), each line compared with the file's line it should be as it
/// is written, and nothing kept: a verifier then never holds (or faults in) a copy of the file.
struct JSONLines {
    static let pieceBytes = 256 << 10
    /// One writer for the lines of a piece: each line is a top-level value followed by a newline.
    private var writer = JSONWriter(capacity: pieceBytes)
    private var full: [[UInt8]] = []
    var pieces: [[UInt8]] { writer.bytes.isEmpty ? full : full + [writer.bytes] }
    private var checking: ExpectedLines.File?
    private var nextLine = 0
    private var endLine = 0
    /// Checking: every line so far was the file's.
    private(set) var matched = true
    /// Checking: every line written was the file's, and every line expected was written.
    var matchedAll: Bool { matched && nextLine == endLine }

    init() {}

    /// Checks lines `lines` of `file` instead of keeping what is written.
    init(checking file: ExpectedLines.File, lines: Range<Int>) {
        writer = JSONWriter(capacity: 4096)
        checking = file
        (nextLine, endLine) = (lines.lowerBound, lines.upperBound)
    }

    mutating func add(_ body: (inout JSONWriter) -> Void) {
        body(&writer)
        if let checking {
            if matched {
                matched =
                    nextLine < endLine
                    && writer.bytes.withUnsafeBytes { line in
                        let expected = checking.lines[nextLine]
                        return line.count == expected.count
                            && (line.isEmpty
                                || memcmp(
                                    checking.bytes.baseAddress! + expected.lowerBound, line.baseAddress!, line.count)
                                    == 0)
                    }
            }
            nextLine += 1
            writer.reset()
            return
        }
        writer.endLine()
        if writer.bytes.count >= Self.pieceBytes - Self.pieceBytes / 8 {
            full.append(writer.bytes)
            writer = JSONWriter(capacity: Self.pieceBytes)
        }
    }
}

/// RFC 4180 fields. Hand-written: writing is one rule (quote a field holding a comma, quote,
/// CR or LF, doubling its quotes); reading, only our own file, which the verifier also
/// regenerates byte for byte.
enum CSV {
    static func field(_ s: String) -> String {
        guard s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\r" || $0 == "\n" || $0 == "\r\n" }) else {
            return s
        }
        return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// The records of `text` (CRLF or LF line ends), fields unquoted; nil when a quote is unbalanced.
    /// Read as UTF-8 bytes: every character the format gives a meaning is ASCII.
    static func parse(_ text: String) -> [[String]]? {
        var rows: [[String]] = []
        var row: [String] = []
        var quoted = false
        var atFieldStart = true
        var text = text
        return text.withUTF8 { b -> [[String]]? in
            var field: [UInt8] = []
            func take() -> String {
                defer { field.removeAll(keepingCapacity: true) }
                return String(decoding: field, as: UTF8.self)
            }
            var i = 0
            while i < b.count {
                let c = b[i]
                i += 1
                if quoted {
                    if c == UInt8(ascii: "\"") {
                        if i < b.count, b[i] == UInt8(ascii: "\"") {
                            field.append(c)
                            i += 1
                        } else {
                            quoted = false
                        }
                    } else {
                        field.append(c)
                    }
                    continue
                }
                switch c {
                case UInt8(ascii: "\"") where atFieldStart:
                    quoted = true
                    atFieldStart = false
                case UInt8(ascii: ","):
                    row.append(take())
                    atFieldStart = true
                case UInt8(ascii: "\r") where i < b.count && b[i] == UInt8(ascii: "\n"):
                    break
                case UInt8(ascii: "\n"):
                    row.append(take())
                    rows.append(row)
                    row = []
                    atFieldStart = true
                default:
                    field.append(c)
                    atFieldStart = false
                }
            }
            if quoted { return nil }
            if !row.isEmpty || !field.isEmpty {
                row.append(take())
                rows.append(row)
            }
            return rows
        }
    }
}
