import FlightRecorderSQLite

/// The SQLite index schema. The segments are the source of truth; every row here can be
/// rebuilt from them (`flightrec reindex`).
enum IndexSchema {
    static let version = "6"

    static let pragmas = """
        PRAGMA journal_mode=WAL;
        PRAGMA synchronous=NORMAL;
        PRAGMA temp_store=MEMORY;
        PRAGMA cache_size=-32768;
        PRAGMA foreign_keys=OFF;
        """

    static let tables = """
        CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
        -- How far each segment is indexed; a sealed, fully indexed segment is never scanned at start-up.
        CREATE TABLE IF NOT EXISTS segments(
            id INTEGER PRIMARY KEY, indexed_bytes INTEGER NOT NULL, sealed INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE IF NOT EXISTS blocks(
            id INTEGER PRIMARY KEY, segment_id INTEGER NOT NULL, offset INTEGER NOT NULL,
            length INTEGER NOT NULL, span_count INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS trace_blocks(
            trace_id BLOB NOT NULL, block_id INTEGER NOT NULL, PRIMARY KEY(trace_id, block_id)) WITHOUT ROWID;
        -- Runs and traces are keyed by tenant too: one tenant's spans can never join, rename or
        -- reveal another tenant's run, even with the same run or trace ID.
        -- The run a trace's unnamed spans belong to: the first run any of its spans named.
        CREATE TABLE IF NOT EXISTS traces(
            trace_id BLOB NOT NULL, tenant TEXT NOT NULL, run_id TEXT NOT NULL,
            PRIMARY KEY(trace_id, tenant)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS run_traces(
            run_id TEXT NOT NULL, tenant TEXT NOT NULL, trace_id BLOB NOT NULL, span_count INTEGER NOT NULL,
            error_count INTEGER NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,
            agent TEXT, PRIMARY KEY(run_id, tenant, trace_id)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS runs(
            run_id TEXT NOT NULL, tenant TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,
            span_count INTEGER NOT NULL, error_count INTEGER NOT NULL, trace_count INTEGER NOT NULL,
            agent TEXT, provisional INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(run_id, tenant));
        CREATE INDEX IF NOT EXISTS runs_by_tenant_start ON runs(tenant, start_ns);
        -- Traces by the values of indexed attributes (external IDs, searchable attributes), with
        -- the start of the first span seen carrying the value, so searches read newest first.
        -- Keyed by IndexedAttribute.hash(key, value): integer keys keep rows small and inserts
        -- cheap; readers check the real values in the spans they read.
        CREATE TABLE IF NOT EXISTS attr_index(
            hash INTEGER NOT NULL, tenant TEXT NOT NULL, trace_id BLOB NOT NULL, start_ns INTEGER NOT NULL,
            PRIMARY KEY(hash, tenant, trace_id)) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS runs_by_start ON runs(start_ns);
        """

    /// Every table, dropped when an index of another schema version is found: the index is
    /// derived data, and recovery rebuilds it from the segments.
    static let allTables = [
        "meta", "segments", "blocks", "spans", "trace_blocks", "traces", "run_traces", "runs", "attr_index",
    ]
}
