import FlightRecorderOTLP
import FlightRecorderSQLite

#if canImport(Glibc)
import Glibc
#endif

/// The schema of one segment's index, `segments/segment-N.idx` (SQLite). Every segment has
/// its own: its B-trees hold only that segment's keys, so they stay in cache while it is
/// written and inserting costs the same at 50 million spans as at the first. Sealed
/// segments' indexes are never written again; a Bloom filter of their trace and run keys,
/// stored in `meta`, lets a lookup skip the segments that cannot hold its key. The segments are the
/// source of truth; every row here can be rebuilt from them (`flightrec reindex`).
///
/// Traces are numbered within the segment (`traces.id`), so the per-block, per-run and
/// per-attribute rows carry a small integer instead of a 16-byte ID, and tenants are
/// numbered too (`tenants`).
enum IndexSchema {
    static let version = "seg-4"

    /// The active segment's writer. Durability comes from the segments: after a crash the
    /// active segment's index is caught up (or rebuilt) from its file, so its writes need no
    /// fsync; a sealed index is checkpointed and synced once, when its segment seals.
    static let writerPragmas = """
        PRAGMA journal_mode=WAL;
        PRAGMA synchronous=OFF;
        PRAGMA temp_store=MEMORY;
        PRAGMA cache_size=-65536;
        PRAGMA foreign_keys=OFF;
        """

    /// Read connections: small caches (the page cache holds sealed indexes), one per segment.
    static let readerPragmas = "PRAGMA cache_size=-256;"

    static let tables = """
        CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value);
        CREATE TABLE IF NOT EXISTS tenants(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
        CREATE TABLE IF NOT EXISTS blocks(
            id INTEGER PRIMARY KEY, offset INTEGER NOT NULL, length INTEGER NOT NULL, span_count INTEGER NOT NULL);
        -- A trace within one tenant, as this segment holds it: its first span's start, and the
        -- run its spans named first, when that happened in this segment (the earliest segment
        -- that names one decides the run of the trace's unnamed spans).
        CREATE TABLE IF NOT EXISTS traces(
            id INTEGER PRIMARY KEY, trace_id BLOB NOT NULL, tenant INTEGER NOT NULL, start_ns INTEGER NOT NULL,
            named_run TEXT);
        CREATE UNIQUE INDEX IF NOT EXISTS traces_by_id ON traces(trace_id, tenant);
        CREATE TABLE IF NOT EXISTS trace_blocks(
            trace INTEGER NOT NULL, block INTEGER NOT NULL, PRIMARY KEY(trace, block)) WITHOUT ROWID;
        -- Runs and traces are keyed by tenant too: one tenant's spans can never join, rename or
        -- reveal another tenant's run, even with the same run or trace ID.
        CREATE TABLE IF NOT EXISTS run_traces(
            run_id TEXT NOT NULL, tenant INTEGER NOT NULL, trace INTEGER NOT NULL, span_count INTEGER NOT NULL,
            error_count INTEGER NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, agent TEXT,
            PRIMARY KEY(run_id, tenant, trace)) WITHOUT ROWID;
        -- A run's totals over this segment's spans. `continued`: an earlier segment holds the
        -- run too (the run list reads each run from the segment it started in). `folds`: a
        -- trace of the run was named here while an older segment still counts some of its
        -- spans under the trace's provisional run; readers add those in.
        CREATE TABLE IF NOT EXISTS runs(
            run_id TEXT NOT NULL, tenant INTEGER NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,
            span_count INTEGER NOT NULL, error_count INTEGER NOT NULL, trace_count INTEGER NOT NULL,
            agent TEXT, provisional INTEGER NOT NULL, continued INTEGER NOT NULL, folds INTEGER NOT NULL,
            PRIMARY KEY(run_id, tenant)) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS runs_by_start ON runs(continued, start_ns);
        -- The agent metrics this segment's spans add (`MetricDeltas`), one row per series: a
        -- counter's total in `value`, a histogram's bucket counts and sum in `histogram`. Written
        -- in the round's transaction, so they count exactly the spans indexed.
        CREATE TABLE IF NOT EXISTS metrics(
            family INTEGER NOT NULL, labels TEXT NOT NULL, value REAL NOT NULL, histogram BLOB,
            PRIMARY KEY(family, labels)) WITHOUT ROWID;
        """

    /// Traces by indexed attribute values (external IDs, searchable attributes), keyed by
    /// `IndexedAttribute.hash(key, value)`: the most numerous rows, one per trace per value.
    /// While the segment is active they are in memory (`ActiveAttributes`) and in its
    /// attribute log; when it seals they are written as sorted pages of fixed 8-byte entries,
    /// the high 32 bits of the hash and the trace number. Readers check the real values in the
    /// spans anyway.
    static let attributePages = """
        CREATE TABLE attr_pages(page INTEGER PRIMARY KEY, first_hash INTEGER NOT NULL, entries BLOB NOT NULL);
        CREATE INDEX attr_pages_by_hash ON attr_pages(first_hash);
        """

    /// Entries per attribute page: a page stays within one 4 KiB SQLite page.
    static let entriesPerPage = 480

    static func shortHash(_ hash: Int64) -> UInt32 { UInt32(truncatingIfNeeded: UInt64(bitPattern: hash) >> 32) }

    static func path(_ directory: String, _ segment: Int64) -> String {
        SegmentFile.path(directory, segment).dropLast(4) + ".idx"
    }

    /// The segment an index file belongs to (`segment-N.idx`), from its path.
    static func segment(ofPath path: String) -> Int64? {
        guard let name = path.split(separator: "/").last, name.hasPrefix("segment-"), name.hasSuffix(".idx") else {
            return nil
        }
        return Int64(name.dropFirst(8).dropLast(4))
    }

    /// The active segment's attribute log: 12-byte rows, the hash (Int64) then the trace
    /// number (UInt32), little-endian; `meta.attr_log_bytes` says how much of it is committed.
    static func attributesPath(_ indexPath: String) -> String { indexPath.dropLast(4) + ".attrs" }

    /// A sealed segment's filter of its attribute values (`AttributeFilterFile`).
    static func attributeFilterPath(_ indexPath: String) -> String { indexPath.dropLast(4) + ".attrfilter" }

    /// Moves a damaged index aside (kept for diagnosis, next to it as
    /// `segment-N.idx.damaged-<unix time>`) so a new one can be built; returns the new name.
    @discardableResult
    static func quarantine(_ path: String, now: Int = Int(time(nil))) -> String {
        let aside = path + ".damaged-\(now)"
        if rename(path, aside) != 0 { unlink(path) }
        for suffix in ["-wal", "-shm"] { if rename(path + suffix, aside + suffix) != 0 { unlink(path + suffix) } }
        unlink(attributesPath(path))
        unlink(attributeFilterPath(path))
        return aside
    }

    /// Whether the index at `path` is damaged (SQLite's `quick_check` of its file, or an
    /// answer that it is not a database); the reason when it is. A missing file, or one that
    /// cannot be read for another reason (an I/O error, a full disk), is not called damaged:
    /// only damage is moved aside.
    static func check(_ path: String) -> String? {
        guard access(path, F_OK) == 0 else { return nil }
        do throws(SQLiteError) {
            // Read through its WAL (an active index is rarely checkpointed); an error that is not
            // damage (no room for the -shm file on a full disk) is not reported as damage.
            let db = try SQLiteDatabase(path: path, readOnly: true)
            let q = try db.prepare("PRAGMA quick_check")
            guard try q.step() else { return "quick_check answered nothing" }
            let answer = q.text(0) ?? ""
            return answer == "ok" ? nil : answer.split(separator: "\n").joined(separator: "; ")
        } catch {
            return error.isDamaged ? error.message : nil
        }
    }

    /// The metric rows of an index (`metrics`); none for an index written before the table
    /// existed (`flightrec reindex` derives them).
    static func metrics(_ db: SQLiteDatabase) throws(SQLiteError) -> MetricDeltas {
        var out = MetricDeltas()
        let q: SQLiteStatement
        do throws(SQLiteError) {
            q = try db.prepare("SELECT family, labels, value, histogram FROM metrics")
        } catch  where error.message.contains("no such table") {
            return out
        }
        while try q.step() {
            out.setStored(
                family: Int(q.int64(0)), joinedLabels: q.text(1) ?? "", value: q.double(2), histogram: q.blob(3))
        }
        return out
    }

    static func remove(_ path: String) {
        for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }
        unlink(attributesPath(path))
        unlink(attributeFilterPath(path))
    }
}
