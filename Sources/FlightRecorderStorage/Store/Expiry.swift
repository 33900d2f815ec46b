import FlightRecorderSQLite
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A sealed segment `SpanStore.expire` deleted: its spans, bytes and runs (tenant, run ID),
/// for the layers above to forget what they derived from it (the run statistics).
public struct ExpiredSegment: Sendable {
    public var segment: Int64
    public var bytes: Int64
    public var spans: Int
    /// The runs (tenant, run ID) it held that no stored segment holds any more.
    public var runs: [(tenant: String, run: String)]
    /// Every trace (tenant, trace ID in lowercase hex) it held of the tenants that expired:
    /// a span's exemplar names its trace while no span of it has named the run.
    public var traces: [(tenant: String, trace: String)] = []
    /// Seconds since its last write when it expired, and the age it was kept for.
    public var age: Double
    public var maxAge: Double
    /// `max_age <seconds>s` or `max_bytes <bytes>`.
    public var reason: String
    /// Not deleted but rewritten without the spans of tenants past their age (others keep it).
    public var rewritten = false
}

extension SpanStore {
    /// Deletes every sealed segment all of whose tenants' spans are past their retention age
    /// (`StoreConfiguration.Retention`) at `now` (Unix seconds, default the clock's), ages
    /// counted from the segment's last write: the
    /// evidence log first records a signed receipt (the leaves the segment held, so the tree
    /// and every checkpoint still verify), then the segment leaves the catalog (queries stop
    /// seeing it at once), then its index files and the segment file are deleted, after
    /// `grace` seconds for reads that began before. A segment under repair waits for the
    /// next pass. A crash midway leaves at worst a segment whose index is rebuilt at start-up
    /// and which the next pass expires again.
    ///
    /// Segments hold every tenant's spans in arrival order, so a segment with a tenant kept
    /// longer stays whole until that tenant's spans expire too; so does a segment with any
    /// span a legal hold covers (`HoldStore`).
    public func expire(now: Double? = nil, grace: Double = 5) -> [ExpiredSegment] {
        maintenance.lock()
        defer { maintenance.unlock() }
        let now = now ?? Date().timeIntervalSince1970
        guard let retention = configuration.retention else { return [] }
        let directory = configuration.segmentDirectory
        let repairing = repairs.ids.withLock { $0 }
        // A segment younger than every age (and than the floor, for max_bytes) is not looked
        // into: a pass costs a stat per segment, and an index read only for the old ones.
        let ages = ([retention.maxAge] + retention.tenantMaxAge.values.map { Optional($0) }).compactMap { $0 }
        let youngest = ages.min().map { max($0, retention.floor) }
        struct Candidate {
            var segment: ExpiredSegment
            var tenants: [String]
            /// The age its longest-kept tenant is kept for; nil: forever.
            var keep: Double?
        }
        var candidates: [Candidate] = []
        for entry in catalog.snapshot where entry.bloom != nil && !repairing.contains(entry.id) {
            var st = stat()
            guard stat(SegmentFile.path(directory, entry.id), &st) == 0 else { continue }
            let age = now - Double(st.st_mtim.tv_sec) - Double(st.st_mtim.tv_nsec) / 1e9
            let byAge = youngest.map { age >= $0 } ?? false
            let bySize = retention.maxBytes != nil && age >= retention.floor
            guard byAge || bySize, let facts = try? Self.expiryFacts(directory, entry.id, runs: false) else { continue }
            let tenantAges = (facts.tenants.isEmpty ? [""] : facts.tenants).map { retention.maxAge(tenant: $0) }
            let keep = tenantAges.contains(nil) ? nil : tenantAges.compactMap { $0 }.max()
            candidates.append(
                Candidate(
                    segment: ExpiredSegment(
                        segment: entry.id, bytes: Self.filesBytes(directory, entry.id), spans: facts.spans, runs: [],
                        age: age, maxAge: keep ?? .infinity, reason: "max_age \(Int(keep ?? 0))s"),
                    tenants: facts.tenants, keep: keep))
        }

        // Held data never expires. The runs a candidate holds are read, and the where holds
        // resolved (a search), only when some segment would otherwise go.
        let inForce = holds.all
        let whereHolds = inForce.filter { $0.kind == .where }
        /// The where holds' runs: resolved at the first segment that needs them; nil inside
        /// when the search could not find them all.
        var whereHeld: Set<String>??
        /// Whether a hold covers the segment; nil when that cannot be told (expiry waits).
        func held(_ c: inout Candidate) -> Bool? {
            guard let facts = try? Self.expiryFacts(directory, c.segment.segment, runs: true) else { return true }
            c.segment.runs = facts.runs
            c.segment.traces = facts.traces
            if let hold = inForce.first(where: { $0.covers(tenants: c.tenants, runs: facts.runs) }) {
                logger.debug(
                    "retention: segment held", metadata: ["segment": "\(c.segment.segment)", "hold": "\(hold.id)"])
                return true
            }
            guard !whereHolds.isEmpty else { return false }
            guard let runs = whereHeldRuns() else { return nil }
            return facts.runs.contains { runs.contains($0.tenant + "\u{1F}" + $0.run) }
        }
        /// The where holds' runs ("tenant\u{1F}run"), resolved once, at the first segment that
        /// needs them; nil when the search could not find them all.
        func whereHeldRuns() -> Set<String>? {
            if whereHeld == nil {
                whereHeld = .some(
                    configuration.heldRuns?(whereHolds).map { Set($0.map { $0.tenant + "\u{1F}" + $0.run }) })
            }
            return whereHeld ?? nil
        }
        var unresolved = false
        var due: [ExpiredSegment] = []
        var chosen: Set<Int64> = []
        for i in candidates.indices {
            guard let keep = candidates[i].keep, candidates[i].segment.age >= keep else { continue }
            guard let isHeld = held(&candidates[i]) else {
                unresolved = true
                break
            }
            if isHeld { continue }
            due.append(candidates[i].segment)
            chosen.insert(candidates[i].segment.segment)
        }
        // Over max_bytes: the oldest segments past the floor go too; when none is left to go,
        // ingest is refused (retryably) until space is made, never data under the floor deleted.
        if let maxBytes = retention.maxBytes, !unresolved {
            var total = gauges.bytes - due.reduce(0) { $0 + $1.bytes }
            for i in candidates.indices where total > maxBytes && !chosen.contains(candidates[i].segment.segment) {
                guard candidates[i].segment.age >= retention.floor else { continue }
                guard let isHeld = held(&candidates[i]) else {
                    unresolved = true
                    break
                }
                if isHeld { continue }
                var s = candidates[i].segment
                s.reason = "max_bytes \(maxBytes)"
                due.append(s)
                total -= s.bytes
            }
            let refusal =
                total > maxBytes
                ? "the store holds \(total) bytes, over retention.max_bytes (\(maxBytes)), and nothing more may "
                    + "expire (retention.floor or legal holds); retry later" : nil
            if refusal != nil && capacityRefusal.withLock({ $0 }) == nil {
                logger.error(
                    "retention: over max_bytes with nothing old enough to expire; refusing ingest",
                    metadata: ["bytes": "\(total)", "max_bytes": "\(maxBytes)"])
            }
            capacityRefusal.withLock { $0 = refusal }
        }
        if unresolved {
            logger.warning("retention: the runs a where hold covers could not all be found; nothing expires this pass")
            return []
        }
        // A segment shared with a tenant kept longer: the tenants past their age leave it by a
        // rewrite (as an erasure's), the rest stays.
        var rewritten: [ExpiredSegment] = []
        for i in candidates.indices where !chosen.contains(candidates[i].segment.segment) && !stopRebuild.isSet {
            let c = candidates[i]
            var past = Set(c.tenants.filter { t in retention.maxAge(tenant: t).map { c.segment.age >= $0 } ?? false })
            guard !past.isEmpty, past.count < c.tenants.count else { continue }
            // A tenant any hold covers (itself, or one of its runs here) stays.
            guard let facts = try? Self.expiryFacts(directory, c.segment.segment, runs: true) else { continue }
            for hold in inForce {
                switch hold.kind {
                case .tenant: past.remove(hold.value)
                case .run:
                    for r in facts.runs where r.run == hold.value && (hold.tenant == nil || hold.tenant == r.tenant) {
                        past.remove(r.tenant)
                    }
                case .where: break
                }
            }
            if !whereHolds.isEmpty && !past.isEmpty {
                guard let held = whereHeldRuns() else { continue }
                for r in facts.runs where held.contains(r.tenant + "\u{1F}" + r.run) { past.remove(r.tenant) }
            }
            guard !past.isEmpty else { continue }
            if let r = expireTenants(past, of: c.segment, now: now) { rewritten.append(r) }
        }
        var done: [ExpiredSegment] = []
        for segment in due {
            // The receipt is durable before anything is deleted; without it nothing is.
            do throws(StorageError) {
                _ = try evidenceLog?.expire(segment: segment.segment, reason: segment.reason, now: UInt64(max(0, now)))
            } catch {
                logger.error(
                    "retention: segment not expired: its evidence receipt could not be written",
                    metadata: ["segment": "\(segment.segment)", "error": "\(error)"])
                continue
            }
            readerLock.withLock { backgroundLock.withLock { catalog.remove(segment.segment) } }
            done.append(segment)
        }
        guard !done.isEmpty else { return rewritten }
        // A run with spans in a segment still stored is not gone.
        for i in done.indices {
            let runs = done[i].runs
            done[i].runs =
                (try? readInBackground { reader, _ in
                    try runs.filter { try reader.runs($0.run, scope: .only([$0.tenant])).isEmpty }
                }) ?? []
        }
        // Reads that took the catalog before the removal finish on the open files. A store
        // closing meanwhile leaves the files: the next start-up reads them again and the next
        // pass, finding the receipt written, deletes them.
        // Audit exports read blocks outside the readers' lock: none may be running.
        if grace > 0 { Thread.sleep(forTimeInterval: grace) }
        var waited = 0.0
        while (evidenceLog?.snapshotsInUse ?? 0) > 0 && !stopRebuild.isSet && waited < 3600 {
            Thread.sleep(forTimeInterval: 0.1)
            waited += 0.1
        }
        for segment in done where !stopRebuild.isSet {
            // The index files first: a crash between leaves a segment start-up indexes again.
            for path in Self.files(directory, segment.segment).reversed() { unlink(path) }
            logger.notice(
                "retention: segment expired",
                metadata: [
                    "segment": "\(segment.segment)", "spans": "\(segment.spans)", "bytes": "\(segment.bytes)",
                    "age_seconds": "\(Int(segment.age))", "reason": "\(segment.reason)",
                ])
        }
        try? SegmentFile.syncDirectory(directory)
        expiredTotals.withLock {
            $0.segments += done.count
            $0.spans += done.reduce(0) { $0 + $1.spans }
            $0.bytes += done.reduce(0) { $0 + $1.bytes }
        }
        return rewritten + done
    }

    /// Rewrites `segment` without the spans of `tenants` (past their age, while another
    /// tenant's keep the segment), as an erasure rewrites one: the evidence log signs the
    /// rewrite (the removed leaves' hashes) first. What it removed, as an `ExpiredSegment`
    /// (`rewritten`), or nil when nothing was removed or the rewrite failed (the next pass
    /// tries again).
    private func expireTenants(_ tenants: Set<String>, of segment: ExpiredSegment, now: Double) -> ExpiredSegment? {
        let directory = configuration.segmentDirectory
        let id = segment.segment
        let facts = try? Self.expiryFacts(directory, id, runs: true)
        let runs = facts?.runs.filter { tenants.contains($0.tenant) } ?? []
        let before = Self.filesBytes(directory, id)
        let removed: Int?
        do {
            removed = try rewriteSegment(
                id, hides: { tenant, _ in tenants.contains(tenant) }, erasures: ["retention"], blocks: nil)
        } catch {
            logger.error(
                "retention: could not rewrite a segment without the tenants past their age; retried at the next pass",
                metadata: ["segment": "\(id)", "error": "\(error)"])
            return nil
        }
        guard let removed else { return nil }
        var out = segment
        out.rewritten = true
        out.spans = removed
        out.bytes = max(0, before - Self.filesBytes(directory, id))
        out.reason = "max_age (tenants \(tenants.sorted().joined(separator: ", ")))"
        out.traces = facts?.traces.filter { tenants.contains($0.tenant) } ?? []
        out.runs =
            (try? readInBackground { reader, _ in
                try runs.filter { try reader.runs($0.run, scope: .only([$0.tenant])).isEmpty }
            }) ?? []
        expiredTotals.withLock {
            $0.spans += removed
            $0.bytes += out.bytes
        }
        logger.notice(
            "retention: tenants past their age removed from a shared segment",
            metadata: ["segment": "\(id)", "spans": "\(removed)", "tenants": "\(tenants.count)"])
        return out
    }

    /// A segment's file, then its index's files.
    static func files(_ directory: String, _ id: Int64) -> [String] {
        let index = IndexSchema.path(directory, id)
        return [
            SegmentFile.path(directory, id), index, index + "-wal", index + "-shm", IndexSchema.attributesPath(index),
            IndexSchema.attributeFilterPath(index),
        ]
    }

    /// The bytes of a segment and its index files.
    static func filesBytes(_ directory: String, _ id: Int64) -> Int64 {
        var total: Int64 = 0
        for path in files(directory, id) {
            var st = stat()
            if stat(path, &st) == 0 { total += Int64(st.st_size) }
        }
        return total
    }

    /// A sealed segment's tenants, span count and (with `runs`) runs and traces, from its index.
    static func expiryFacts(
        _ directory: String, _ id: Int64, runs withRuns: Bool
    ) throws(SQLiteError) -> (
        tenants: [String], spans: Int, runs: [(tenant: String, run: String)],
        traces: [(tenant: String, trace: String)]
    ) {
        let db = try SQLiteDatabase(path: IndexSchema.path(directory, id), immutable: true)
        var tenants: [String] = []
        let t = try db.prepare("SELECT name FROM tenants")
        while try t.step() { tenants.append(t.text(0) ?? "") }
        let s = try db.prepare("SELECT coalesce(sum(span_count), 0) FROM blocks")
        _ = try s.step()
        let spans = Int(s.int64(0))
        var runs: [(tenant: String, run: String)] = []
        var traces: [(tenant: String, trace: String)] = []
        guard withRuns else { return (tenants, spans, runs, traces) }
        let r = try db.prepare(
            "SELECT DISTINCT t.name, r.run_id FROM run_traces r JOIN tenants t ON t.id = r.tenant")
        while try r.step() { runs.append((r.text(0) ?? "", r.text(1) ?? "")) }
        let x = try db.prepare(
            "SELECT t.name, lower(hex(x.trace_id)) FROM traces x JOIN tenants t ON t.id = x.tenant")
        while try x.step() { traces.append((x.text(0) ?? "", x.text(1) ?? "")) }
        return (tenants, spans, runs, traces)
    }

    /// Runs `expire` every `checkInterval` seconds until the store closes; `onExpired` is
    /// told what each pass deleted.
    func startExpiry(onExpired: (@Sendable ([ExpiredSegment]) -> Void)?) {
        guard let interval = configuration.retention?.checkInterval else { return }
        let thread = Thread { [weak self] in
            while true {
                var waited = 0.0
                while waited < interval {
                    guard let self, !self.stopRebuild.isSet else { return }
                    Thread.sleep(forTimeInterval: min(0.5, interval - waited))
                    waited += 0.5
                }
                guard let self, !self.stopRebuild.isSet else { return }
                let expired = self.expire()
                if !expired.isEmpty { onExpired?(expired) }
            }
        }
        thread.name = "flightrec-expiry"
        thread.start()
    }
}
