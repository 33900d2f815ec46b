package import FlightRecorderOTLP
package import FlightRecorderSQLite

/// A block's location, as the index records it. `id` is unique across segments.
public struct BlockRef: Hashable, Sendable {
    public var id: Int64
    public var segment: Int64
    public var offset: Int
    public var length: Int
}

/// Read-only queries over every segment's index, merged into one view: a run, a trace or an
/// attribute value is looked up in the segments whose Bloom filter may hold it (and always in
/// the active one), and a run's totals are summed over the segments it spans. One connection
/// per segment, opened on first use; callers serialize access (the store guards it with a
/// lock) and call from a thread pool, never an event loop.
package final class IndexReader {
    let catalog: SegmentCatalog
    /// The indexer's reader sees only sealed segments older than the one it writes.
    private let sealedOnly: Bool
    /// Only segments before this one (rebuilding a sealed index consults only older ones).
    private let before: Int64?
    private var readers: [Int64: SegmentIndexReader] = [:]
    /// The erasures whose data this reader's answers leave out (the query readers'; the
    /// indexer's and recovery's readers see everything).
    package var erasures: ErasureStore?

    init(
        catalog: SegmentCatalog, sealedOnly: Bool = false, before: Int64? = nil, maxOpenSegments: Int = 64,
        filterMemoryBytes: Int = 0
    ) {
        self.catalog = catalog
        self.sealedOnly = sealedOnly
        self.before = before
        self.maxOpenSegments = max(1, maxOpenSegments)
        self.filterMemoryBytes = filterMemoryBytes
    }

    /// The catalog's entries (only the sealed ones for `sealedOnly`), derived again only when
    /// the catalog changed: the indexer asks for them for every new trace and run.
    private var entries: [SegmentCatalog.Entry] {
        if let (all, groups, version) = catalog.snapshot(ifChangedSince: entriesVersion) {
            cachedEntries = all.filter { (!sealedOnly || $0.bloom != nil) && $0.id < (before ?? .max) }
            // Segments that left the catalog (expired): their connections are closed. So are
            // connections opened while a segment was active that has sealed since: each holds
            // that segment's in-memory attribute rows (`ActiveAttributes`, 10-20 MiB for a
            // full segment), which a reader not asked about the segment again (the run
            // analyser's, moving on to newer runs) kept until its connections were many.
            let present = Set(all.map(\.id))
            let sealed = Set(all.lazy.filter { $0.bloom != nil }.map(\.id))
            for (id, r) in readers where !present.contains(id) || (!r.immutable && sealed.contains(id)) {
                readers[id] = nil
                lastUse[id] = nil
            }
            cachedGroups = Self.spans(of: groups, in: cachedEntries)
            entriesVersion = version
        }
        return cachedEntries
    }
    private var cachedEntries: [SegmentCatalog.Entry] = []
    private var entriesVersion = -1
    /// The key groups as ranges of `cachedEntries`, in order and disjoint.
    private var cachedGroups: [GroupSpan] = []

    struct GroupSpan {
        var group: KeyGroup
        var range: Range<Int>

        /// Whether `entries` (a snapshot a query took, maybe older than the groups) holds
        /// only segments of the group in `range`: skipping them is then right, since a group
        /// holds every key of its segments, which sealed before they joined it.
        func fits(_ entries: [SegmentCatalog.Entry]) -> Bool {
            range.upperBound <= entries.count && entries[range.lowerBound].id >= group.first
                && entries[range.upperBound - 1].id <= group.last
        }
    }

    /// Where each group's segments sit in `entries` (oldest first): the sealed entries with
    /// IDs in its `first...last` that no earlier group covers. Skipping any of them on the
    /// group's "no" is right, since a group holds every key of every segment in its range.
    static func spans(
        of groups: [KeyGroup], in entries: [SegmentCatalog.Entry]
    ) -> [GroupSpan] {
        var out: [GroupSpan] = []
        var next = 0
        for g in groups {
            var start = next
            while start < entries.count, entries[start].id < g.first { start += 1 }
            var end = start
            while end < entries.count, entries[end].id <= g.last, entries[end].bloom != nil { end += 1 }
            guard end > start else { continue }
            out.append(GroupSpan(group: g, range: start..<end))
            next = end
        }
        return out
    }

    /// Connections kept open at most (each holds three descriptors and a small cache); the
    /// least recently used is closed first, and reopened when needed again.
    private let maxOpenSegments: Int
    /// Segments whose index is being rebuilt (`SpanStore.repair`): the indexer's lookups treat
    /// them as absent rather than wait, and remember what they asked (`skippedLookups`). Empty
    /// for queries, which answer 503 during a rebuild instead.
    package var unavailable: Set<Int64> = []
    private(set) var skippedLookups: Set<SkippedLookup> = []
    private var skipped = false
    private var lastUse: [Int64: Int] = [:]
    private var uses = 0

    /// The connection to `entry`'s index. A sealed index is opened immutable (no locks, a
    /// cache that lasts); one opened while its segment was active is reopened once it seals.
    private func reader(_ entry: SegmentCatalog.Entry) throws(SQLiteError) -> SegmentIndexReader {
        let segment = entry.id
        let sealed = entry.bloom != nil
        uses += 1
        if let r = readers[segment], r.generation == entry.generation, r.immutable || !sealed {
            lastUse[segment] = uses
            return r
        }
        if let r = readers[segment], r.generation != entry.generation {
            // The index was rebuilt: its attribute filter is read again too.
            filterBytesInMemory -= attributeFilters[segment]?.filter?.bytesInMemory ?? 0
            attributeFilters[segment] = nil
        }
        readers[segment] = nil
        if readers.count >= maxOpenSegments, let oldest = lastUse.min(by: { $0.value < $1.value })?.key {
            readers[oldest] = nil
            lastUse[oldest] = nil
        }
        let r = try SegmentIndexReader(
            directory: catalog.directory, segment: segment, immutable: sealed,
            attributes: sealed ? nil : entry.attributes)
        r.generation = entry.generation
        readers[segment] = r
        lastUse[segment] = uses
        return r
    }

    /// Sealed segments' attribute filters (`AttributeFilterFile`), each verified when opened,
    /// and kept in memory while they fit in `filterMemoryBytes` (the rest are read a line at
    /// a time); the least recently used is closed beyond `maxOpenSegments` times four. A
    /// missing or damaged filter (an index from before filters, a flipped byte) is rebuilt
    /// from the segment's pages; when that fails too, the segment is probed every time (nil).
    private var attributeFilters: [Int64: (filter: AttributeFilterFile?, lastUse: Int)] = [:]
    private let filterMemoryBytes: Int
    private var filterBytesInMemory = 0

    private func mayHoldAttribute(_ hash: Int64, _ entry: SegmentCatalog.Entry) throws(SQLiteError) -> Bool {
        guard entry.bloom != nil else { return true }
        uses += 1
        if let known = attributeFilters[entry.id] {
            attributeFilters[entry.id]!.lastUse = uses
            return known.filter?.mayContain(hash) ?? true
        }
        if attributeFilters.count >= maxOpenSegments * 4,
            let oldest = attributeFilters.min(by: { $0.value.lastUse < $1.value.lastUse })?.key
        {
            filterBytesInMemory -= attributeFilters[oldest]?.filter?.bytesInMemory ?? 0
            attributeFilters[oldest] = nil
        }
        let path = IndexSchema.attributeFilterPath(IndexSchema.path(catalog.directory, entry.id))
        let room = filterMemoryBytes - filterBytesInMemory
        var filter = AttributeFilterFile(path: path, keepInMemoryUpTo: room)
        if filter == nil {
            let hashes = try reader(entry).attributeShortHashes()
            if (try? AttributeFilterFile.write(sortedShortHashes: hashes, to: path)) != nil {
                filter = AttributeFilterFile(path: path, keepInMemoryUpTo: room)
            }
        }
        filterBytesInMemory += filter?.bytesInMemory ?? 0
        attributeFilters[entry.id] = (filter, uses)
        return filter?.mayContain(hash) ?? true
    }

    /// The segments that may hold `key`, oldest first.
    private func candidates(
        _ key: UInt64, in entries: [SegmentCatalog.Entry]
    ) throws(SQLiteError)
        -> [SegmentIndexReader]
    {
        var out: [SegmentIndexReader] = []
        let probe = BloomFilter.Probe(key)
        let groups = cachedGroups
        var g = 0
        var i = 0
        while i < entries.count {
            while g < groups.count, groups[g].range.lowerBound < i { g += 1 }
            if g < groups.count, groups[g].range.lowerBound == i {
                let span = groups[g]
                g += 1
                if span.fits(entries), !span.group.bloom.mayContain(probe) {
                    i = span.range.upperBound
                    continue
                }
            }
            if entries[i].mayContain(probe) {
                if unavailable.contains(entries[i].id) {
                    skipped = true
                } else {
                    out.append(try reader(entries[i]))
                }
            }
            i += 1
        }
        return out
    }

    // MARK: Runs

    package func listRuns(
        since: Int64?, until: Int64?, limit: Int, scope: TenantScope
    ) throws(SQLiteError) -> [RunSummary] {
        var tenants: [String]?
        if case .only(let set) = scope {
            if set.isEmpty { return [] }
            tenants = set.sorted()
        }
        let all = entries
        let (hiddenTenants, hiddenRuns) = erasures?.hiddenCounts ?? ([], 0)
        let lower = since ?? .min
        let upper = until ?? .max
        var found: [RunKey: RunSummary] = [:]
        // Newest segment first: each run is read from the segment it started in, only the runs
        // that can still make the page.
        var kth = Int64.min  // the page's current last start, once it is full
        for entry in all.reversed() {
            let r = try reader(entry)
            // A segment whose latest run starts before the page's last one has nothing for it
            // (segments are in arrival order, not start order, so the older ones are still read).
            if found.count >= limit {
                guard let latest = try r.latestFirstStart(), latest >= kth else { continue }
            }
            // A run starts no later than where it first appears, so only rows at or after the
            // page's last start can still make it.
            // Erased tenants are left out by the query, erased runs by asking for as many more.
            for p in try r.firstRuns(
                since: max(lower, kth), until: upper, tenants: tenants, excluding: hiddenTenants,
                limit: limit > Int.max - hiddenRuns ? Int.max : limit + hiddenRuns)
            {
                let key = RunKey(run: p.summary.runID, tenant: p.summary.tenant ?? "")
                guard found[key] == nil, erasures?.hides(tenant: key.tenant, run: key.run) != true,
                    let s = try merged(p, in: all), s.startNanos >= lower, s.startNanos < upper
                else { continue }
                found[key] = s
            }
            if found.count >= limit { kth = found.values.map(\.startNanos).sorted(by: >)[limit - 1] }
        }
        return Array(
            found.values.sorted {
                ($0.startNanos, $1.runID, $1.tenant ?? "") > ($1.startNanos, $0.runID, $0.tenant ?? "")
            }
            .prefix(limit))
    }

    struct RunKey: Hashable {
        var run: String
        var tenant: String
    }

    /// The runs named `id` within `scope`, one per tenant, ordered by tenant. A provisional run
    /// whose trace has since been named is not listed: its spans count in the named run.
    package func runs(_ id: String, scope: TenantScope) throws(SQLiteError) -> [RunSummary] {
        let all = entries
        var tenants: [String] = []
        var first: [String: SegmentIndexReader.Partial] = [:]
        for r in try candidates(IndexKey.run(id), in: all) {
            for p in try r.runs(id) {
                let tenant = p.summary.tenant ?? ""
                guard scope.contains(tenant), first[tenant] == nil, erasures?.hides(tenant: tenant, run: id) != true
                else { continue }
                first[tenant] = p
                tenants.append(tenant)
            }
        }
        var out: [RunSummary] = []
        for t in tenants.sorted() {
            if let s = try merged(first[t]!, in: all) { out.append(s) }
        }
        return out
    }

    /// One run's summary over every segment, from one of its partials; nil when it is a
    /// provisional run whose trace has since been named.
    private func merged(
        _ p: SegmentIndexReader.Partial, in all: [SegmentCatalog.Entry]
    ) throws(SQLiteError)
        -> RunSummary?
    {
        let run = p.summary.runID
        let tenant = p.summary.tenant ?? ""
        let trace = TraceID(hex: run)
        if let trace, p.summary.provisional, try !namedRuns(trace, in: all).filter({ $0.tenant == tenant }).isEmpty {
            return nil
        }
        let key = IndexKey.run(run)
        var parts: [(SegmentIndexReader, SegmentIndexReader.Partial)] = []
        for r in try candidates(key, in: all) {
            if r.segment == p.segment {
                parts.append((r, p))
            } else if let q = try r.run(run, tenant: tenant) {
                parts.append((r, q))
            }
        }
        guard var s = parts.first?.1.summary else { return p.summary }
        for (_, q) in parts.dropFirst() {
            s.startNanos = min(s.startNanos, q.summary.startNanos)
            s.endNanos = max(s.endNanos, q.summary.endNanos)
            s.spanCount += q.summary.spanCount
            s.errorCount += q.summary.errorCount
            s.agent = s.agent ?? q.summary.agent
        }
        if parts.count > 1 || parts.contains(where: { $0.1.folds }) {
            var traces: [TraceID] = []
            var seen: Set<TraceID> = []
            for (r, _) in parts {
                for t in try r.traces(ofRun: run, tenant: tenant) where seen.insert(t).inserted { traces.append(t) }
            }
            s.traceCount = Int64(traces.count)
            if parts.contains(where: { $0.1.folds }) {
                // Spans an older segment counted under a trace's provisional run, before the
                // trace named this run.
                for t in traces where try namedRuns(t, in: all).first(where: { $0.tenant == tenant })?.run == run {
                    for r in try candidates(IndexKey.run(t.hex), in: all) {
                        guard let q = try r.run(t.hex, tenant: tenant) else { continue }
                        s.startNanos = min(s.startNanos, q.summary.startNanos)
                        s.endNanos = max(s.endNanos, q.summary.endNanos)
                        s.spanCount += q.summary.spanCount
                        s.errorCount += q.summary.errorCount
                    }
                }
            }
        }
        s.provisional = trace != nil && p.summary.provisional
        return s
    }

    /// (tenant, run) for each tenant whose earliest naming segment names the trace's run.
    private func namedRuns(
        _ trace: TraceID, in all: [SegmentCatalog.Entry]
    ) throws(SQLiteError)
        -> [(tenant: String, run: String)]
    {
        var out: [(String, String)] = []
        var seen: Set<String> = []
        for r in try candidates(IndexKey.trace(trace.bytes), in: all) {
            for (tenant, run) in try r.namedRuns(trace) where seen.insert(tenant).inserted { out.append((tenant, run)) }
        }
        return out.sorted { $0.0 < $1.0 }
    }

    /// The runs that `trace`'s unnamed spans belong to, per tenant within `scope`.
    package func runs(ofTrace trace: TraceID, scope: TenantScope) throws(SQLiteError) -> [(tenant: String, run: String)]
    {
        try namedRuns(trace, in: entries).filter {
            scope.contains($0.tenant) && erasures?.hides(tenant: $0.tenant, trace: trace) != true
        }
    }

    package func traces(ofRun run: String, tenant: String) throws(SQLiteError) -> [TraceID] {
        var out: [TraceID] = []
        var seen: Set<TraceID> = []
        for r in try candidates(IndexKey.run(run), in: entries) {
            for t in try r.traces(ofRun: run, tenant: tenant) where seen.insert(t).inserted { out.append(t) }
        }
        return out
    }

    // MARK: Traces and attributes

    /// Traces (with their tenant) in which some span carries `key = value`, with the earliest
    /// start the index saw for the trace.
    package func traces(
        withAttribute key: String, value: String, scope: TenantScope, limit: Int
    ) throws(SQLiteError) -> [(tenant: String, trace: TraceID, start: Int64)] {
        let hash = IndexedAttribute.hash(key: key, value: value)
        var found: [RunKeyTrace: Int64] = [:]
        var order: [RunKeyTrace] = []
        // A sealed segment's attribute filter answers "not here" for most; the rest read their
        // sorted attribute pages with two index probes.
        for e in entries where try mayHoldAttribute(hash, e) {
            let r = try reader(e)
            for (tenant, trace, start) in try r.traces(withAttributeHash: hash)
            where scope.contains(tenant) && erasures?.hides(tenant: tenant, trace: trace) != true {
                let k = RunKeyTrace(tenant: tenant, trace: trace)
                if let old = found[k] {
                    found[k] = min(old, start)
                } else {
                    found[k] = start
                    order.append(k)
                }
            }
        }
        return order.sorted { $0.tenant < $1.tenant }.prefix(limit).map { ($0.tenant, $0.trace, found[$0]!) }
    }

    /// The segments holding spans of `tenant`, and the runs that start in them.
    package func tenantExtent(_ tenant: String) throws(SQLiteError) -> (segments: [Int64], runs: Int) {
        var segments: [Int64] = []
        var runs = 0
        for e in entries {
            guard let n = try reader(e).runCount(tenant: tenant) else { continue }
            segments.append(e.id)
            runs += n
        }
        return (segments, runs)
    }

    /// The segments to search, newest first.
    package func segmentsNewestFirst() -> [Int64] { entries.reversed().map(\.id) }

    /// Traces of one segment within `scope` that carry all of `pairs`, newest first.
    package func traces(
        withAll pairs: [(key: String, value: String)], inSegment segment: Int64, scope: TenantScope, since: Int64?,
        until: Int64?
    ) throws(SQLiteError) -> [(tenant: String, trace: TraceID, start: Int64)] {
        guard let entry = entries.first(where: { $0.id == segment }) else { return [] }
        return try reader(entry).traces(
            withAll: pairs.map { IndexedAttribute.hash(key: $0.key, value: $0.value) }, since: since ?? .min,
            until: until ?? .max
        ).filter { scope.contains($0.tenant) && erasures?.hides(tenant: $0.tenant, trace: $0.trace) != true }
    }

    struct RunKeyTrace: Hashable {
        var tenant: String
        var trace: TraceID
    }

    package func blocks(ofTrace trace: TraceID) throws(SQLiteError) -> [BlockRef] {
        var out: [BlockRef] = []
        for r in try candidates(IndexKey.trace(trace.bytes), in: entries) { out += try r.blocks(ofTrace: trace) }
        return out
    }

    /// The runs with spans in the blocks of `segment` that overlap `offset..<offset+length`
    /// (a damaged region); empty when the segment has no readable index.
    package func runs(
        inSegment segment: Int64, overlapping offset: Int, length: Int
    ) throws(SQLiteError) -> [(tenant: String, run: String)] {
        guard let entry = entries.first(where: { $0.id == segment }) else { return [] }
        return try reader(entry).runs(inBlocksOverlapping: offset, offset + max(1, length))
    }

    // MARK: Cross-segment facts for the indexer

    /// Row counts summed over every segment, for tests and `flightrec reindex` reports.
    package func counts() throws(SQLiteError) -> [String: Int64] {
        var out: [String: Int64] = ["segments": 0]
        for e in entries {
            out["segments", default: 0] += 1
            for (table, n) in try reader(e).counts() {
                out[table == "attrs" ? "attr_index" : table, default: 0] += n
            }
        }
        return out
    }
}

/// A lookup of the indexer's that skipped a segment whose index was being rebuilt, and what
/// it answered without it (none, false).
package enum SkippedLookup: Hashable, Sendable {
    case namedRun(trace: TraceID, tenant: String)
    case holdsRun(run: String, tenant: String)
}

extension IndexReader: OlderSegments {
    func namedRun(trace: TraceID, tenant: String) throws(SQLiteError) -> String? {
        skipped = false
        let run = try namedRuns(trace, in: entries).first { $0.tenant == tenant }?.run
        if skipped && run == nil { skippedLookups.insert(.namedRun(trace: trace, tenant: tenant)) }
        return run
    }

    func holdsRun(_ run: String, tenant: String) throws(SQLiteError) -> Bool {
        skipped = false
        for r in try candidates(IndexKey.run(run), in: entries) where try r.run(run, tenant: tenant) != nil {
            return true
        }
        if skipped { skippedLookups.insert(.holdsRun(run: run, tenant: tenant)) }
        return false
    }

    /// Asks the lookups that skipped a segment being rebuilt again, once none is: how many
    /// would have found something (a run or trace that continues from that segment, whose
    /// totals in the newer segment were then counted apart). Nil while a segment is still
    /// being rebuilt or nothing was skipped.
    package func recheckSkipped() throws(SQLiteError) -> (checked: Int, found: Int)? {
        guard unavailable.isEmpty, !skippedLookups.isEmpty else { return nil }
        var found = 0
        for lookup in skippedLookups {
            switch lookup {
            case .namedRun(let trace, let tenant): if try namedRun(trace: trace, tenant: tenant) != nil { found += 1 }
            case .holdsRun(let run, let tenant): if try holdsRun(run, tenant: tenant) { found += 1 }
            }
        }
        let checked = skippedLookups.count
        skippedLookups.removeAll()
        return (checked, found)
    }
}
