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
    /// Seconds since its last write when it expired, and the age it was kept for.
    public var age: Double
    public var maxAge: Double
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
        let now = now ?? Date().timeIntervalSince1970
        guard let retention = configuration.retention else { return [] }
        let directory = configuration.segmentDirectory
        let repairing = repairs.ids.withLock { $0 }
        let inForce = holds.all
        var held: Set<String> = []
        let whereHolds = inForce.filter { $0.kind == .where }
        if !whereHolds.isEmpty {
            guard let runs = configuration.heldRuns?(whereHolds) else {
                logger.warning(
                    "retention: the runs a where hold covers could not all be found; nothing expires this pass")
                return []
            }
            held = Set(runs.map { $0.tenant + "\u{1F}" + $0.run })
        }
        var due: [ExpiredSegment] = []
        for entry in catalog.snapshot where entry.bloom != nil && !repairing.contains(entry.id) {
            var st = stat()
            guard stat(SegmentFile.path(directory, entry.id), &st) == 0 else { continue }
            let age = now - Double(st.st_mtim.tv_sec) - Double(st.st_mtim.tv_nsec) / 1e9
            // The age the segment is kept for: its longest-kept tenant's.
            guard let facts = try? Self.expiryFacts(directory, entry.id) else { continue }
            var keep: Double? = 0
            for tenant in facts.tenants.isEmpty ? [""] : facts.tenants {
                guard
                    let a = tenant.isEmpty
                        ? retention.maxAge.map({ max($0, retention.floor) }) : retention.maxAge(tenant: tenant),
                    let k = keep
                else {
                    keep = nil
                    break
                }
                keep = max(k, a)
            }
            guard let keep, age >= keep else { continue }
            // Held data never expires.
            if let hold = inForce.first(where: { $0.covers(tenants: facts.tenants, runs: facts.runs) }) {
                logger.debug("retention: segment held", metadata: ["segment": "\(entry.id)", "hold": "\(hold.id)"])
                continue
            }
            if !held.isEmpty, facts.runs.contains(where: { held.contains($0.tenant + "\u{1F}" + $0.run) }) { continue }
            due.append(
                ExpiredSegment(
                    segment: entry.id, bytes: Int64(st.st_size), spans: facts.spans, runs: facts.runs, age: age,
                    maxAge: keep))
        }
        var done: [ExpiredSegment] = []
        for segment in due {
            // The receipt is durable before anything is deleted; without it nothing is.
            do throws(StorageError) {
                _ = try evidenceLog?.expire(
                    segment: segment.segment, reason: "max_age \(Int(segment.maxAge))s",
                    now: UInt64(max(0, now)))
            } catch {
                logger.error(
                    "retention: segment not expired: its evidence receipt could not be written",
                    metadata: ["segment": "\(segment.segment)", "error": "\(error)"])
                continue
            }
            readerLock.withLock { backgroundLock.withLock { catalog.remove(segment.segment) } }
            done.append(segment)
        }
        guard !done.isEmpty else { return [] }
        // A run with spans in a segment still stored is not gone.
        for i in done.indices {
            let runs = done[i].runs
            done[i].runs =
                (try? readInBackground { reader, _ in
                    try runs.filter { try reader.runs($0.run, scope: .only([$0.tenant])).isEmpty }
                }) ?? []
        }
        // Reads that took the catalog before the removal finish on the open files.
        if grace > 0 { Thread.sleep(forTimeInterval: grace) }
        for segment in done {
            let index = IndexSchema.path(directory, segment.segment)
            for path in [
                index, index + "-wal", index + "-shm", IndexSchema.attributesPath(index),
                IndexSchema.attributeFilterPath(index), SegmentFile.path(directory, segment.segment),
            ] {
                unlink(path)
            }
            logger.notice(
                "retention: segment expired",
                metadata: [
                    "segment": "\(segment.segment)", "spans": "\(segment.spans)", "bytes": "\(segment.bytes)",
                    "age_seconds": "\(Int(segment.age))", "max_age_seconds": "\(Int(segment.maxAge))",
                ])
        }
        try? SegmentFile.syncDirectory(directory)
        return done
    }

    /// A sealed segment's tenants, span count and runs, from its index.
    static func expiryFacts(
        _ directory: String, _ id: Int64
    ) throws(SQLiteError) -> (
        tenants: [String], spans: Int, runs: [(tenant: String, run: String)]
    ) {
        let db = try SQLiteDatabase(path: IndexSchema.path(directory, id), immutable: true)
        var tenants: [String] = []
        let t = try db.prepare("SELECT name FROM tenants")
        while try t.step() { tenants.append(t.text(0) ?? "") }
        let s = try db.prepare("SELECT coalesce(sum(span_count), 0) FROM blocks")
        _ = try s.step()
        let spans = Int(s.int64(0))
        var runs: [(tenant: String, run: String)] = []
        let r = try db.prepare(
            "SELECT DISTINCT t.name, r.run_id FROM run_traces r JOIN tenants t ON t.id = r.tenant")
        while try r.step() { runs.append((r.text(0) ?? "", r.text(1) ?? "")) }
        return (tenants, spans, runs)
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
