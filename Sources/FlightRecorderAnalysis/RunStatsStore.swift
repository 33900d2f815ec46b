public import FlightRecorderOTLP
import FlightRecorderSQLite
import Foundation
import Synchronization

/// The settled runs' aggregates (`DATA/stats.db`): one row per run, and hourly and daily
/// rollups per (tenant, agent, version, task type) that windowed statistics read instead of
/// the runs, so `GET /api/v1/stats` costs the same over a million runs as over a thousand (and
/// a week reads 7 daily rollups a group, not 168 hourly ones).
///
/// Derived data: a lost or damaged file is started afresh, and the run analyser observes
/// recent runs again.
public final class RunStatsStore: Sendable {
    private let db: Mutex<SQLiteDatabase>
    /// The `names` table in memory; used only under `db`'s lock.
    private let names: NameTable
    public let path: String

    static let schema = """
        PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA secure_delete=ON;
        CREATE TABLE IF NOT EXISTS run_stats(
            tenant TEXT NOT NULL, run_id TEXT NOT NULL, start_ns INTEGER NOT NULL, span_count INTEGER NOT NULL,
            data BLOB NOT NULL, PRIMARY KEY(tenant, run_id)) WITHOUT ROWID;
        -- Nothing reads runs by start any more (rollups answer windows): the index an earlier
        -- version kept is dropped.
        DROP INDEX IF EXISTS run_stats_by_start;
        CREATE TABLE IF NOT EXISTS rollups(
            hour INTEGER NOT NULL, tenant TEXT NOT NULL, agent TEXT NOT NULL, version TEXT NOT NULL,
            task_type TEXT NOT NULL, data BLOB NOT NULL,
            PRIMARY KEY(hour, tenant, agent, version, task_type)) WITHOUT ROWID;
        -- The same per UTC day (`hour` is the day's number here), kept in step with the hourly
        -- ones: a window's whole days read these, its ends the hourly ones. meta
        -- `daily_rollups` = 1 once they are (a store from before builds them at start-up).
        CREATE TABLE IF NOT EXISTS rollups_daily(
            hour INTEGER NOT NULL, tenant TEXT NOT NULL, agent TEXT NOT NULL, version TEXT NOT NULL,
            task_type TEXT NOT NULL, data BLOB NOT NULL,
            PRIMARY KEY(hour, tenant, agent, version, task_type)) WITHOUT ROWID;
        -- The run families' totals over every stored aggregate (`MetricDeltas`, as the index's
        -- `metrics` rows), kept with each batch: start-up reads these instead of decoding every
        -- aggregate. meta `metric_totals` = 1 once they are kept.
        CREATE TABLE IF NOT EXISTS metric_totals(
            family INTEGER NOT NULL, labels TEXT NOT NULL, value REAL NOT NULL, histogram BLOB,
            PRIMARY KEY(family, labels)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
        -- The names run_stats rows refer to by number (`RunAggregate.stored`): bounded label
        -- values (agents, versions, task types, tools, finding kinds).
        CREATE TABLE IF NOT EXISTS names(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
        """

    public init(path: String) throws {
        self.path = path
        func open() throws(SQLiteError) -> SQLiteDatabase {
            let db = try SQLiteDatabase(path: path)
            try db.execute(Self.schema)
            try Self.keepDailyRollups(db)
            return db
        }
        let opened: SQLiteDatabase
        do throws(SQLiteError) {
            opened = try open()
        } catch {
            // Derived data: a damaged file is started afresh.
            for suffix in ["", "-wal", "-shm"] { unlink(path + suffix) }
            opened = try open()
        }
        // A store without aggregates keeps its totals from the first batch; an older store
        // with aggregates gets them once at start-up (`storeMetricTotals`).
        let q = try opened.prepare("SELECT 1 FROM run_stats LIMIT 1")
        if try !q.step() {
            q.reset()
            try opened.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('metric_totals', '1')")
        }
        names = try NameTable(opened)
        db = Mutex(opened)
    }

    /// Builds `rollups_daily` from the hourly rollups once, in a store written before it was
    /// kept (`meta` `daily_rollups`).
    static func keepDailyRollups(_ db: SQLiteDatabase) throws(SQLiteError) {
        let m = try db.prepare("SELECT value FROM meta WHERE key = 'daily_rollups'")
        if try m.step(), m.text(0) == "1" { return }
        m.reset()
        try db.execute("BEGIN IMMEDIATE")
        do throws(SQLiteError) {
            try db.execute("DELETE FROM rollups_daily")
            // A day at a time (the hourly rollups in hour order), so a long history is not
            // held in memory at once.
            var day: [RollupKey: GroupStats] = [:]
            let q = try db.prepare("SELECT hour, tenant, agent, version, task_type, data FROM rollups ORDER BY hour")
            while try q.step() {
                guard let g = GroupStats(stored: q.blob(5)) else { continue }
                let k = RollupKey(hour: q.int64(0) / 24, d: dimensions(q, from: 1))
                if let other = day.keys.first, other.hour != k.hour {
                    for (k, g) in day { try roll(db, k, add: g, subtract: nil, table: "rollups_daily") }
                    day = [:]
                }
                day[k, default: GroupStats()].add(g)
            }
            q.reset()
            for (k, g) in day { try roll(db, k, add: g, subtract: nil, table: "rollups_daily") }
            try db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('daily_rollups', '1')")
            try db.execute("COMMIT")
        } catch {
            try? db.execute("ROLLBACK")
            throw error
        }
    }

    /// A rollup row's tenant, agent, version and task type, in columns `from` to `from + 3`.
    static func dimensions(_ q: SQLiteStatement, from c: Int32) -> Dimensions {
        Dimensions(
            tenant: q.text(c) ?? "", agent: q.text(c + 1) ?? "", version: q.text(c + 2) ?? "",
            taskType: q.text(c + 3) ?? "")
    }

    /// The `names` table, read at start-up and added to as rows name new values.
    // @unchecked: used only under the store's database lock.
    final class NameTable: @unchecked Sendable {
        var ids: [String: UInt64] = [:]
        var byID: [UInt64: String] = [:]
        /// Added within the transaction under way: forgotten if it rolls back.
        var added: [String] = []

        init(_ db: SQLiteDatabase) throws(SQLiteError) {
            let q = try db.prepare("SELECT id, name FROM names")
            while try q.step() {
                let id = UInt64(q.int64(0))
                let name = q.text(1) ?? ""
                ids[name] = id
                byID[id] = name
            }
        }

        func id(_ name: String, _ db: SQLiteDatabase) throws(SQLiteError) -> UInt64 {
            if let id = ids[name] { return id }
            let q = try db.prepare("INSERT INTO names(name) VALUES (?1)")
            q.bind(1, name)
            try q.run()
            let id = UInt64(db.lastInsertRowID)
            ids[name] = id
            byID[id] = name
            added.append(name)
            return id
        }

        func rollBack() {
            for name in added {
                if let id = ids.removeValue(forKey: name) { byID[id] = nil }
            }
            added = []
        }

        func aggregate(_ bytes: [UInt8], tenant: String, run: String, spanCounters: Bool = true) -> RunAggregate? {
            RunAggregate(stored: bytes, tenant: tenant, runID: run, spanCounters: spanCounters, name: { self.byID[$0] })
        }
    }

    /// Reads the rows an earlier version wrote as JSON (`RunAggregate.init(stored:...)`).
    static let decoder = JSONDecoder()

    /// One group of a rollup: the dimensions stats can group by.
    public struct Dimensions: Hashable, Sendable {
        public var tenant: String
        public var agent: String
        public var version: String
        public var taskType: String

        public init(tenant: String, agent: String, version: String, taskType: String) {
            self.tenant = tenant
            self.agent = agent
            self.version = version
            self.taskType = taskType
        }
    }

    static func hour(_ nanos: Int64) -> Int64 { nanos / 3_600_000_000_000 }

    /// The stored aggregate of a run, if it was observed.
    public func aggregate(tenant: String, run: String) throws -> RunAggregate? {
        try db.withLock { db throws(SQLiteError) in
            let q = try db.prepare("SELECT data FROM run_stats WHERE tenant = ?1 AND run_id = ?2")
            q.bind(1, tenant).bind(2, run)
            guard try q.step() else { return nil }
            return names.aggregate(q.blob(0), tenant: tenant, run: run)
        }
    }

    struct RollupKey: Hashable {
        var hour: Int64
        var d: Dimensions
    }

    /// Stores a batch of aggregates in one transaction; each rollup the batch moves is read
    /// and written once.
    /// Returns what the batch adds to the run families of the agent metrics (a run seen
    /// before adds its counters' increase only), which the kept totals gain in the same
    /// transaction.
    @discardableResult
    public func save(_ batch: [(new: RunAggregate, old: RunAggregate?)]) throws -> MetricDeltas {
        guard !batch.isEmpty else { return MetricDeltas() }
        var metrics = MetricDeltas()
        for (new, old) in batch {
            metrics.add(old.map { RunAggregate.counterIncrease(from: $0, to: new) } ?? new.metrics)
        }
        var moves: [RollupKey: GroupStats] = [:]
        var removals: [RollupKey: GroupStats] = [:]
        func key(_ r: RunAggregate) -> RollupKey {
            RollupKey(
                hour: Self.hour(r.startNanos),
                d: Dimensions(tenant: r.tenant, agent: r.agent, version: r.version, taskType: r.taskType))
        }
        for (new, old) in batch {
            moves[key(new), default: GroupStats()].add(new)
            if let old { removals[key(old), default: GroupStats()].add(old) }
        }
        try db.withLock { db throws(SQLiteError) in
            try db.execute("BEGIN IMMEDIATE")
            names.added = []
            do throws(SQLiteError) {
                let q = try db.prepare(
                    "INSERT OR REPLACE INTO run_stats(tenant, run_id, start_ns, span_count, data) VALUES (?1, ?2, ?3, ?4, ?5)"
                )
                for (r, _) in batch {
                    var failure: SQLiteError?
                    let data = r.stored { name in
                        do throws(SQLiteError) { return try names.id(name, db) } catch {
                            failure = error
                            return 0
                        }
                    }
                    if let failure { throw failure }
                    q.bind(1, r.tenant).bind(2, r.runID).bind(3, r.startNanos).bind(4, Int64(r.spanCount))
                        .bind(5, blob: data)
                    try q.run()
                }
                try Self.roll(db, moves: moves, removals: removals)
                try Self.addTotals(db, metrics)
                try db.execute("COMMIT")
            } catch {
                try? db.execute("ROLLBACK")
                names.rollBack()
                throw error
            }
        }
        return metrics
    }

    /// Forgets runs whose spans expired (`SpanStore.expire`): their rows go, and their hours'
    /// rollups no longer count them, so no statistic names or counts an expired run. The run
    /// families' counter totals keep them (a counter never goes down). Runs not stored here
    /// are ignored. Returns how many were forgotten.
    @discardableResult
    public func forget(_ runs: [(tenant: String, run: String)]) throws -> Int {
        guard !runs.isEmpty else { return 0 }
        let found = try aggregates(runs)
        guard !found.isEmpty else { return 0 }
        var removals: [RollupKey: GroupStats] = [:]
        for r in found {
            let k = RollupKey(
                hour: Self.hour(r.startNanos),
                d: Dimensions(tenant: r.tenant, agent: r.agent, version: r.version, taskType: r.taskType))
            removals[k, default: GroupStats()].add(r)
        }
        try db.withLock { db throws(SQLiteError) in
            try db.execute("BEGIN IMMEDIATE")
            do throws(SQLiteError) {
                let q = try db.prepare("DELETE FROM run_stats WHERE tenant = ?1 AND run_id = ?2")
                for r in found {
                    q.bind(1, r.tenant).bind(2, r.runID)
                    try q.run()
                }
                try Self.roll(db, moves: [:], removals: removals)
                try db.execute("COMMIT")
            } catch {
                try? db.execute("ROLLBACK")
                throw error
            }
        }
        return found.count
    }

    /// Forgets every run of `tenant` (an erased tenant).
    public func forget(tenant: String) throws {
        let runs: [(tenant: String, run: String)] = try db.withLock { db throws(SQLiteError) in
            let q = try db.prepare("SELECT run_id FROM run_stats WHERE tenant = ?1")
            q.bind(1, tenant)
            var out: [(tenant: String, run: String)] = []
            while try q.step() { out.append((tenant, q.text(0) ?? "")) }
            return out
        }
        _ = try forget(runs)
    }

    /// Leaves no copy of deleted rows behind: `secure_delete` zeroes them in the file, and the
    /// write-ahead log, which still holds the old pages, is checkpointed and truncated.
    public func scrub() throws {
        try db.withLock { db throws(SQLiteError) in try db.execute("PRAGMA wal_checkpoint(TRUNCATE)") }
    }

    /// Adds `d` into the `metric_totals` rows (within the caller's transaction).
    private static func addTotals(_ db: SQLiteDatabase, _ d: MetricDeltas) throws(SQLiteError) {
        guard !d.isEmpty else { return }
        let get = try db.prepare("SELECT value, histogram FROM metric_totals WHERE family = ?1 AND labels = ?2")
        let put = try db.prepare(
            "INSERT OR REPLACE INTO metric_totals(family, labels, value, histogram) VALUES (?1, ?2, ?3, ?4)")
        for (key, n) in d.counters {
            let labels = key.joinedLabels
            get.bind(1, Int64(key.family.rawValue)).bind(2, labels)
            let old = try get.step() ? get.double(0) : 0
            get.reset()
            put.bind(1, Int64(key.family.rawValue)).bind(2, labels).bind(3, double: old + n).bindNull(4)
            try put.run()
        }
        for (key, h) in d.histograms {
            guard let bounds = key.family.buckets else { continue }
            let labels = key.joinedLabels
            get.bind(1, Int64(key.family.rawValue)).bind(2, labels)
            var total =
                try get.step()
                ? HistogramDelta(serialized: get.blob(1), buckets: bounds.count) ?? .init(buckets: bounds.count)
                : HistogramDelta(buckets: bounds.count)
            get.reset()
            total.add(h)
            put.bind(1, Int64(key.family.rawValue)).bind(2, labels).bind(3, double: 0)
                .bind(4, blob: total.serialized)
            try put.run()
        }
    }

    /// The run families' totals over every stored aggregate. A store written before it kept
    /// them sums its aggregates once (decoding each) and keeps them from then on.
    public func metricTotals() throws -> MetricDeltas {
        if let kept = try keptMetricTotals() { return kept }
        var d = MetricDeltas()
        try forEach { d.add($0.metrics) }
        try storeMetricTotals(d)
        return d
    }

    /// The kept totals; nil when this store does not keep them yet.
    func keptMetricTotals() throws -> MetricDeltas? {
        try db.withLock { db throws(SQLiteError) -> MetricDeltas? in
            let m = try db.prepare("SELECT value FROM meta WHERE key = 'metric_totals'")
            guard try m.step(), m.text(0) == "1" else { return nil }
            m.reset()
            var out = MetricDeltas()
            let q = try db.prepare("SELECT family, labels, value, histogram FROM metric_totals")
            while try q.step() {
                out.setStored(
                    family: Int(q.int64(0)), joinedLabels: q.text(1) ?? "", value: q.double(2), histogram: q.blob(3))
            }
            return out
        }
    }

    /// Replaces the kept totals with `d` (summed from every stored aggregate) and marks them kept.
    func storeMetricTotals(_ d: MetricDeltas) throws {
        try db.withLock { db throws(SQLiteError) in
            try db.execute("BEGIN IMMEDIATE")
            do throws(SQLiteError) {
                try db.execute("DELETE FROM metric_totals")
                try Self.addTotals(db, d)
                try db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('metric_totals', '1')")
                try db.execute("COMMIT")
            } catch {
                try? db.execute("ROLLBACK")
                throw error
            }
        }
    }

    /// Moves the hourly rollups by `moves` and `removals` (keyed by hour), and the daily ones
    /// by the same summed per day.
    private static func roll(
        _ db: SQLiteDatabase, moves: [RollupKey: GroupStats], removals: [RollupKey: GroupStats]
    ) throws(SQLiteError) {
        var dayMoves: [RollupKey: GroupStats] = [:]
        var dayRemovals: [RollupKey: GroupStats] = [:]
        for (k, g) in moves { dayMoves[RollupKey(hour: k.hour / 24, d: k.d), default: GroupStats()].add(g) }
        for (k, g) in removals { dayRemovals[RollupKey(hour: k.hour / 24, d: k.d), default: GroupStats()].add(g) }
        for k in Set(moves.keys).union(removals.keys) {
            try roll(db, k, add: moves[k], subtract: removals[k], table: "rollups")
        }
        for k in Set(dayMoves.keys).union(dayRemovals.keys) {
            try roll(db, k, add: dayMoves[k], subtract: dayRemovals[k], table: "rollups_daily")
        }
    }

    private static func roll(
        _ db: SQLiteDatabase, _ k: RollupKey, add: GroupStats?, subtract: GroupStats?, table: StaticString
    ) throws(SQLiteError) {
        let get = try db.prepare(
            "SELECT data FROM \(table) WHERE hour = ?1 AND tenant = ?2 AND agent = ?3 AND version = ?4 AND task_type = ?5"
        )
        get.bind(1, k.hour).bind(2, k.d.tenant).bind(3, k.d.agent).bind(4, k.d.version).bind(5, k.d.taskType)
        var g = try get.step() ? GroupStats(stored: get.blob(0)) ?? GroupStats() : GroupStats()
        get.reset()
        if let add { g.add(add) }
        if let subtract { g.subtract(subtract) }
        let put = try db.prepare(
            g.runs <= 0
                ? "DELETE FROM \(table) WHERE hour = ?1 AND tenant = ?2 AND agent = ?3 AND version = ?4 AND task_type = ?5"
                : "INSERT OR REPLACE INTO \(table)(hour, tenant, agent, version, task_type, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
        )
        put.bind(1, k.hour).bind(2, k.d.tenant).bind(3, k.d.agent).bind(4, k.d.version).bind(5, k.d.taskType)
        if g.runs > 0 { put.bind(6, blob: g.binary) }
        try put.run()
    }

    /// The rollups of the hours overlapping [since, until) within `tenants` (nil: all), summed
    /// per `group` of their dimensions. Decoded straight into the sums (`GroupStats.Sum`).
    public func rollups(
        since: Int64, until: Int64, tenants: Set<String>?, group: (Dimensions) -> String
    ) throws -> [String: GroupStats] {
        let first = Self.hour(since)
        let last = Self.hour(max(since, until - 1))
        // The whole UTC days within the hours are read from the daily rollups, the hours
        // before and after them from the hourly ones (at most 46 hours' worth), each range
        // kept within the window. With no whole day the day range is empty and the two hour
        // ranges meet, covering every hour of the window.
        let firstDay = (first + 23) / 24
        let lastDay = (last + 1) / 24 - 1
        return try db.withLock { db throws(SQLiteError) in
            var sums: [String: GroupStats.Sum] = [:]
            let columns = "SELECT tenant, agent, version, task_type, data FROM"
            let days = try db.prepare("\(columns) rollups_daily WHERE hour >= ?1 AND hour <= ?2")
            days.bind(1, firstDay).bind(2, lastDay)
            let hours = try db.prepare(
                "\(columns) rollups WHERE (hour >= ?1 AND hour < ?2) OR (hour > ?3 AND hour <= ?4)")
            hours.bind(1, first).bind(2, min(firstDay * 24, last + 1)).bind(3, max(lastDay * 24 + 23, first - 1))
                .bind(4, last)
            for q in [days, hours] {
                while try q.step() {
                    if let tenants, !tenants.contains(q.text(0) ?? "") { continue }
                    let key = group(Self.dimensions(q, from: 0))
                    let blob = q.blob(4)
                    if !sums[key, default: GroupStats.Sum()].add(blob), let g = GroupStats(stored: blob) {
                        sums[key]!.add(g)
                    }
                }
            }
            // A rollup is stored only with runs: a group without any met only unreadable ones.
            return sums.mapValues(\.stats).filter { $0.value.runs > 0 }
        }
    }

    /// The stored aggregates of `runs` (tenant, run ID); unknown ones are left out. Without
    /// their span families' counters (nil), which only the analyser and the totals read.
    public func aggregates(_ runs: [(tenant: String, run: String)]) throws -> [RunAggregate] {
        try db.withLock { db throws(SQLiteError) in
            let q = try db.prepare("SELECT data FROM run_stats WHERE tenant = ?1 AND run_id = ?2")
            var out: [RunAggregate] = []
            for r in runs {
                q.bind(1, r.tenant).bind(2, r.run)
                if try q.step(), let a = names.aggregate(q.blob(0), tenant: r.tenant, run: r.run, spanCounters: false) {
                    out.append(a)
                }
                q.reset()
            }
            return out
        }
    }

    /// Every stored aggregate, in pages in key order (start-up sums the run families from them).
    public func forEach(_ body: (RunAggregate) -> Void) throws {
        var after = ("", "")
        while true {
            let page: [RunAggregate] = try db.withLock { db throws(SQLiteError) in
                let q = try db.prepare(
                    """
                    SELECT data, tenant, run_id FROM run_stats
                    WHERE (tenant, run_id) > (?1, ?2) ORDER BY tenant, run_id LIMIT 5000
                    """)
                q.bind(1, after.0).bind(2, after.1)
                var out: [RunAggregate] = []
                while try q.step() {
                    after = (q.text(1) ?? "", q.text(2) ?? "")
                    if let a = names.aggregate(q.blob(0), tenant: after.0, run: after.1) { out.append(a) }
                }
                return out
            }
            if page.isEmpty { return }
            page.forEach(body)
        }
    }

    /// Runs stored, and the span counts they were observed with, among `runs`.
    public func spanCounts(_ runs: [(tenant: String, run: String)]) throws -> [String: Int] {
        try db.withLock { db throws(SQLiteError) in
            let q = try db.prepare("SELECT span_count FROM run_stats WHERE tenant = ?1 AND run_id = ?2")
            var out: [String: Int] = [:]
            for r in runs {
                q.bind(1, r.tenant).bind(2, r.run)
                if try q.step() { out[r.tenant + "\u{1F}" + r.run] = Int(q.int64(0)) }
                q.reset()
            }
            return out
        }
    }
}
