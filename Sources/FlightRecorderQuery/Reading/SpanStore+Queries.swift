public import FlightRecorderOTLP
import FlightRecorderSQLite
public import FlightRecorderStorage

/// The query engine over a `SpanStore`: run resolution, lookup by external ID, search and
/// paging. Every query reads through `SpanStore.read`, so it sees every span acknowledged
/// before it began, and runs on NIO's thread pool, never on an event loop.
extension SpanStore {
    public func listRuns(
        since: Int64? = nil, until: Int64? = nil, limit: Int = 100, scope: TenantScope = .all
    ) async throws -> [RunSummary] {
        try await read { r, segments in
            try Self.flagDamaged(r.listRuns(since: since, until: until, limit: limit, scope: scope), segments, r)
        }
    }

    /// Marks the runs a damaged region held (`RunSummary.damaged`), first working out the
    /// runs of regions found since the last call.
    static func flagDamaged(_ runs: [RunSummary], _ segments: SegmentReader, _ r: IndexReader) throws -> [RunSummary] {
        guard let damage = segments.damage, damage.count > 0 else { return runs }
        for region in damage.takeUnresolved() {
            // A region whose segment's index cannot name its runs (missing, being rebuilt) is skipped.
            damage.markRuns(
                (try? r.runs(inSegment: region.segment, overlapping: region.offset, length: region.length)) ?? [])
        }
        return runs.map { run in
            var run = run
            run.damaged = damage.holds(run: run.runID, tenant: run.tenant ?? ResourceFacts.defaultTenant)
            return run
        }
    }

    /// The run `id`, with all its spans sorted by start time; nil if unknown within `scope`.
    /// A trace ID whose run has since been named resolves to that run. When tenants in scope
    /// share a run ID, the first tenant in order answers and a warning says so.
    public func run(_ id: String, scope: TenantScope = .all) async throws -> RunDetail? {
        let resolver = RunResolver(identity: configuration.runIdentity)
        return try await read { r, segments in
            try Self.runDetail(id, scope: scope, reader: r, segments: segments, resolver: resolver, known: [:])
        }
    }

    /// The runs `refs` (each a run ID within its tenant), as `run` reads each, in one read:
    /// every block their traces touch is decoded once for all of them. Runs that settle
    /// together were mostly written together, so they share blocks (the run analyser reads
    /// its batches this way, `runsInBackground`; run by run, each read scanned whole blocks
    /// for one trace).
    public func runs(_ refs: [(tenant: String, run: String)]) async throws -> [RunDetail?] {
        let resolver = RunResolver(identity: configuration.runIdentity)
        return try await read { r, segments in
            try Self.runDetails(refs, reader: r, segments: segments, resolver: resolver)
        }
    }

    /// `runs` read on the calling thread, with the store's background reader
    /// (`readInBackground`), over what is indexed now: for the run analyser's low-priority
    /// thread, which reads only runs the indexer reported, and must not wait behind ingest.
    public func runsInBackground(_ refs: [(tenant: String, run: String)]) throws -> [RunDetail?] {
        let resolver = RunResolver(identity: configuration.runIdentity)
        return try readInBackground { r, segments in
            try Self.runDetails(refs, reader: r, segments: segments, resolver: resolver)
        }
    }

    /// `run(_:scope:)` read on the calling thread, as `runsInBackground`.
    public func runInBackground(_ id: String, scope: TenantScope) throws -> RunDetail? {
        let resolver = RunResolver(identity: configuration.runIdentity)
        return try readInBackground { r, segments in
            try Self.runDetail(id, scope: scope, reader: r, segments: segments, resolver: resolver, known: [:])
        }
    }

    static func runDetails(
        _ refs: [(tenant: String, run: String)], reader r: IndexReader, segments: SegmentReader,
        resolver: RunResolver
    ) throws -> [RunDetail?] {
        var keys: [TraceKey] = []
        var seen: Set<TraceKey> = []
        for ref in refs {
            for t in try r.traces(ofRun: ref.run, tenant: ref.tenant) {
                let k = TraceKey(tenant: ref.tenant, trace: t)
                if seen.insert(k).inserted { keys.append(k) }
            }
        }
        let known = try readTraces(keys, reader: r, segments: segments)
        return try refs.map { ref in
            try runDetail(
                ref.run, scope: .only([ref.tenant]), reader: r, segments: segments, resolver: resolver,
                known: known)
        }
    }

    /// Every span of each trace in `keys` within its tenant, reading each block once.
    static func readTraces(_ keys: [TraceKey], reader: IndexReader, segments: SegmentReader) throws -> KnownTraces {
        var known: KnownTraces = [:]
        for k in keys { known[k] = ([], []) }
        // A span stored twice (a retried export) is kept once, the first copy in file order.
        var seen: Set<TenantSpanKey> = []
        try decodeBlocks(
            of: keys.map(\.trace), reader: reader, segments: segments,
            missing: { traces, message in
                for k in keys where traces.contains(k.trace) { known[k]?.warnings.append(message) }
            },
            decoded: { spans in
                for s in spans {
                    let k = TraceKey(tenant: s.tenant, trace: s.traceID)
                    guard known[k] != nil,
                        seen.insert(TenantSpanKey(tenant: s.tenant, span: s.spanID, trace: s.traceID)).inserted
                    else { continue }
                    known[k]?.spans.append(s)
                }
            })
        return known
    }

    /// Spans read already, by trace: every span of the trace within its tenant, and the
    /// warnings reading them gave.
    typealias KnownTraces = [TraceKey: (spans: [SpanRecord], warnings: [String])]

    static func runDetail(
        _ id: String, scope: TenantScope, reader r: IndexReader, segments: SegmentReader, resolver: RunResolver,
        known: KnownTraces
    ) throws -> RunDetail? {
        var candidates = try r.runs(id, scope: scope)
        if candidates.isEmpty, let trace = TraceID(hex: id) {
            for (tenant, named) in try r.runs(ofTrace: trace, scope: scope) {
                candidates += try r.runs(named, scope: .only([tenant]))
            }
        }
        guard var summary = candidates.first else { return nil }
        let runID = summary.runID
        let tenant = summary.tenant ?? ResourceFacts.defaultTenant
        let traces = try r.traces(ofRun: runID, tenant: tenant)
        var traceRuns: [TraceID: String] = [:]
        for t in traces { traceRuns[t] = try resolver.traceRun(t, tenant: tenant, reader: r) }
        func inRun(_ span: SpanRecord) -> Bool {
            span.tenant == tenant && resolver.run(of: span, traceRun: traceRuns[span.traceID]) == runID
        }
        let unread = traces.filter { known[TraceKey(tenant: tenant, trace: $0)] == nil }
        var (spans, warnings) =
            unread.isEmpty ? ([], []) : try readSpans(traces: unread, reader: r, segments: segments, keep: inRun)
        let reused = traces.compactMap { known[TraceKey(tenant: tenant, trace: $0)] }
        if !reused.isEmpty {
            for k in reused {
                spans += k.spans.filter(inRun)
                warnings += k.warnings
            }
            spans.sort { ($0.startNanos, $0.spanID.value) < ($1.startNanos, $1.spanID.value) }
        }
        summary = try flagDamaged([summary], segments, r)[0]
        if !warnings.isEmpty { summary.damaged = true }
        if candidates.count > 1 {
            let others = candidates.dropFirst().compactMap(\.tenant).joined(separator: ", ")
            warnings.append("run ID \(runID) also exists in tenant(s) \(others); showing tenant \(tenant)")
        }
        return RunDetail(summary: summary, spans: spans, warnings: warnings)
    }

    /// The stored spans of one trace within `scope`, sorted by start time; empty if unknown.
    public func trace(
        _ id: TraceID, scope: TenantScope = .all
    ) async throws -> (spans: [SpanRecord], warnings: [String]) {
        try await read { r, segments in
            try Self.readSpans(traces: [id], reader: r, segments: segments) { scope.contains($0.tenant) }
        }
    }

    /// Spans within `scope` that carry `key = value` (an indexed key), with the run each
    /// belongs to, oldest first.
    public func lookup(
        key: String, value: String, scope: TenantScope, limit: Int = 100
    ) async throws -> [AttributeMatch] {
        let resolver = RunResolver(identity: configuration.runIdentity)
        return try await read { r, segments in
            try Self.matches(
                key: key, value: value, scope: scope, limit: limit, reader: r, segments: segments,
                resolver: resolver
            ).matches
        }
    }

    /// `lookup`, each match with its whole run (as `run` reads it), in one read: the traces
    /// the lookup decoded are not decoded again for their runs.
    public func lookupWithRuns(
        key: String, value: String, scope: TenantScope, limit: Int = 100
    ) async throws -> [(match: AttributeMatch, run: RunDetail)] {
        let resolver = RunResolver(identity: configuration.runIdentity)
        return try await read { r, segments in
            let (matches, known) = try Self.matches(
                key: key, value: value, scope: scope, limit: limit, reader: r, segments: segments, resolver: resolver)
            var runs: [RunKeyOut: RunDetail?] = [:]
            var out: [(AttributeMatch, RunDetail)] = []
            for m in matches {
                let k = RunKeyOut(run: m.runID, tenant: m.tenant)
                if runs[k] == nil {
                    runs[k] = try Self.runDetail(
                        m.runID, scope: .only([m.tenant]), reader: r, segments: segments, resolver: resolver,
                        known: known)
                }
                if let run = runs[k] ?? nil { out.append((m, run)) }
            }
            return out
        }
    }

    static func matches(
        key: String, value: String, scope: TenantScope, limit: Int, reader r: IndexReader, segments: SegmentReader,
        resolver: RunResolver
    ) throws -> (matches: [AttributeMatch], known: KnownTraces) {
        var out: [AttributeMatch] = []
        var known: KnownTraces = [:]
        for (tenant, trace, _) in try r.traces(withAttribute: key, value: value, scope: scope, limit: limit) {
            let read = try readSpans(traces: [trace], reader: r, segments: segments) { $0.tenant == tenant }
            known[TraceKey(tenant: tenant, trace: trace)] = read
            let traceRun = try resolver.traceRun(trace, tenant: tenant, reader: r)
            for span in read.spans
            where span.attributes.contains(where: { $0.key == key && $0.value.scalarString == value }) {
                out.append(
                    AttributeMatch(runID: resolver.run(of: span, traceRun: traceRun), tenant: tenant, span: span))
            }
        }
        return (Array(out.sorted { $0.span.startNanos < $1.span.startNanos }.prefix(limit)), known)
    }

    /// Runs within `scope` with at least one span for which `matches` holds, newest first,
    /// each with its matching spans. `narrow` lists indexed `key = value` pairs every match
    /// carries: the segments are then read newest first, each narrowed by its index to the
    /// traces that have them all. Without it,
    /// runs are scanned newest first, at most `scanLimit` of them. Candidate traces are read
    /// in small batches, and reading stops once `limit` runs have matched, so a page costs
    /// the same however large the store is.
    ///
    /// `filter` nil matches every span. Its `agent.version` uses the metrics' version keys and
    /// the version of each run's root span among the traces read.
    public func search(
        narrow: [(key: String, value: String)], scope: TenantScope, since: Int64?, until: Int64?, limit: Int,
        scanLimit: Int = 20_000, filter: SpanFilter?
    ) async throws -> SearchResult {
        let resolver = RunResolver(identity: configuration.runIdentity)
        let matches = Matcher(
            filter: filter, versionKeys: configuration.metricRules?.versionKeys ?? MetricRules.defaultVersionKeys)
        return try await read { r, segments in
            var state = SearchState()
            if !narrow.isEmpty {
                var complete = true
                let candidates = r.segmentsNewestFirst()
                for (n, segment) in candidates.enumerated() {
                    if state.hits.count >= limit {
                        complete = n == candidates.count
                        break
                    }
                    // A run starts no later than any of its spans, so a trace that starts before
                    // `since` belongs to a run that started before it too.
                    let found = try r.traces(
                        withAll: narrow, inSegment: segment, scope: scope, since: since, until: until)
                    let fresh = found.filter {
                        state.seen.insert(TraceKey(tenant: $0.tenant, trace: $0.trace)).inserted
                    }
                    state.candidates += fresh.count
                    let read = try Self.readCandidates(
                        fresh.map { (TraceKey(tenant: $0.tenant, trace: $0.trace), $0.start) }, into: &state,
                        limit: limit, since: since, until: until, reader: r, segments: segments, resolver: resolver,
                        matches: matches)
                    if read < fresh.count { complete = false }
                }
                return state.result(limit: limit, complete: complete && state.hits.count <= limit)
            }
            let runs = try r.listRuns(since: since, until: until, limit: scanLimit, scope: scope)
            var candidates: [(key: TraceKey, start: Int64)] = []
            for run in runs {
                let tenant = run.tenant ?? ResourceFacts.defaultTenant
                for t in try r.traces(ofRun: run.runID, tenant: tenant) {
                    candidates.append((TraceKey(tenant: tenant, trace: t), run.startNanos))
                }
            }
            candidates.sort { ($0.start, $0.key.trace) > ($1.start, $1.key.trace) }
            state.candidates = candidates.count
            let read = try Self.readCandidates(
                candidates, into: &state, limit: limit, since: since, until: until, reader: r, segments: segments,
                resolver: resolver, matches: matches)
            return state.result(limit: limit, complete: runs.count < scanLimit && read >= candidates.count)
        }
    }

    struct SearchState {
        var seen: Set<TraceKey> = []
        var candidates = 0
        var byRun: [RunKeyOut: [SpanRecord]] = [:]
        var hits: [SearchHit] = []
        var warnings: [String] = []

        func result(limit: Int, complete: Bool) -> SearchResult {
            var hits = hits
            for i in hits.indices {
                hits[i].spans = byRun[RunKeyOut(run: hits[i].run.runID, tenant: hits[i].run.tenant ?? "")] ?? []
            }
            hits.sort { ($0.run.startNanos, $0.run.runID) > ($1.run.startNanos, $1.run.runID) }
            return SearchResult(
                hits: Array(hits.prefix(limit)), candidateTraces: candidates, complete: complete, warnings: warnings)
        }
    }

    /// A search's filter, with what its `agent.version` needs.
    struct Matcher {
        var filter: SpanFilter?
        var versionKeys: [String]
        /// The filter reads `agent.version`: spans are matched once their runs' roots are known.
        var needsRuns: Bool { filter?.readsAgentVersion ?? false }

        func callAsFunction(_ span: SpanRecord, runVersion: String? = nil) -> Bool {
            filter?.matches(span, version: .init(keys: versionKeys, runVersion: runVersion)) ?? true
        }
    }

    /// Reads `candidates` (newest first) in batches of 32 until `limit` runs have matched;
    /// returns how many were read.
    static func readCandidates(
        _ candidates: [(key: TraceKey, start: Int64)], into state: inout SearchState, limit: Int, since: Int64?,
        until: Int64?, reader r: IndexReader, segments: SegmentReader, resolver: RunResolver,
        matches: Matcher
    ) throws -> Int {
        var next = 0
        while next < candidates.count && state.hits.count < limit {
            let batch = candidates[next..<min(candidates.count, next + 32)]
            next += batch.count
            var traceRun: [TraceKey: String] = [:]
            for c in batch { traceRun[c.key] = try resolver.traceRun(c.key.trace, tenant: c.key.tenant, reader: r) }
            let tenantsOf = Dictionary(grouping: batch.map(\.key), by: \.trace).mapValues { Set($0.map(\.tenant)) }
            let (spans, w) = try Self.readSpans(traces: Array(tenantsOf.keys), reader: r, segments: segments) { span in
                tenantsOf[span.traceID]?.contains(span.tenant) == true && (matches.needsRuns || matches(span))
            }
            state.warnings += w
            var keyed = spans.map { span in
                (
                    span,
                    RunKeyOut(
                        run: resolver.run(
                            of: span, traceRun: traceRun[TraceKey(tenant: span.tenant, trace: span.traceID)]),
                        tenant: span.tenant)
                )
            }
            if matches.needsRuns {
                // The version each run's root names, where the root is among the traces read:
                // scanning, every trace of each run; narrowed by the index, the traces that
                // hold the narrowing values (a root elsewhere counts as unknown there).
                var rootVersion: [RunKeyOut: String] = [:]
                for (span, key) in keyed where span.parentSpanID == nil {
                    if let v = SpanFilter.ownVersion(of: span, keys: matches.versionKeys) { rootVersion[key] = v }
                }
                keyed = keyed.filter { matches($0.0, runVersion: rootVersion[$0.1]) }
            }
            var touched: [RunKeyOut] = []
            for (span, key) in keyed {
                if state.byRun[key] == nil { touched.append(key) }
                state.byRun[key, default: []].append(span)
            }
            for key in touched {
                guard let summary = try r.runs(key.run, scope: .only([key.tenant])).first else { continue }
                if let since, summary.startNanos < since { continue }
                if let until, summary.startNanos >= until { continue }
                state.hits.append(SearchHit(run: summary, spans: []))
            }
        }
        return next
    }

    struct TraceKey: Hashable {
        var tenant: String
        var trace: TraceID
    }

    struct RunKeyOut: Hashable {
        var run: String
        var tenant: String
    }

    static func readSpans(
        traces: [TraceID], reader: IndexReader, segments: SegmentReader, keep: (SpanRecord) -> Bool
    ) throws -> (spans: [SpanRecord], warnings: [String]) {
        var spans: [SpanRecord] = []
        var seen: Set<SpanKey> = []
        var warnings: [String] = []
        try decodeBlocks(
            of: traces, reader: reader, segments: segments, missing: { _, message in warnings.append(message) },
            decoded: { decoded in
                for s in decoded where keep(s) && seen.insert(SpanKey(trace: s.traceID, span: s.spanID)).inserted {
                    spans.append(s)
                }
            })
        spans.sort { ($0.startNanos, $0.spanID.value) < ($1.startNanos, $1.spanID.value) }
        return (spans, warnings)
    }

    /// Reads every block holding a span of `traces`, each once, in file order, and hands
    /// `decoded` the spans of `traces` each holds. A block that cannot be read is reported to
    /// the damage log when corrupt, and `missing` gets the traces it held and the warning.
    static func decodeBlocks(
        of traces: [TraceID], reader: IndexReader, segments: SegmentReader,
        missing: (_ traces: Set<TraceID>, _ warning: String) -> Void, decoded: ([SpanRecord]) -> Void
    ) throws {
        let wanted = Set(traces)
        var blocks: [BlockRef] = []
        var blockTraces: [Int64: Set<TraceID>] = [:]
        for t in wanted {
            for b in try reader.blocks(ofTrace: t) {
                if blockTraces[b.id] == nil { blocks.append(b) }
                blockTraces[b.id, default: []].insert(t)
            }
        }
        blocks.sort { ($0.segment, $0.offset) < ($1.segment, $1.offset) }
        // Erased data is never handed on, whatever asked for it.
        let visible = reader.erasures?.spanFilter()
        for b in blocks {
            let raw: [UInt8]
            do {
                raw = try segments.readBlock(segment: b.segment, offset: b.offset, length: b.length)
            } catch {
                if error.isCorrupt {
                    segments.damage?.report(
                        .init(segment: b.segment, offset: b.offset, length: b.length, reason: error.message))
                }
                missing(blockTraces[b.id] ?? [], "spans missing: \(error.message)")
                continue
            }
            let spans = try raw.withUnsafeBytes {
                try TracesDataDecoder.decode($0, traces: wanted) { t, _ in wanted.contains(t) }
            }
            decoded(visible.map { spans.filter($0) } ?? spans)
        }
    }

    struct SpanKey: Hashable {
        var trace: TraceID
        var span: SpanID
    }

    struct TenantSpanKey: Hashable {
        var tenant: String
        var span: SpanID
        var trace: TraceID
    }
}
