/// The SQLite index schema. The segments are the source of truth; every row here can be
/// rebuilt from them (`flightrec reindex`).
enum IndexSchema {
    static let version = "1"

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
        -- Span IDs as signed 64-bit integers (their bit pattern); a retried export may store a span twice.
        CREATE TABLE IF NOT EXISTS spans(
            span_id INTEGER NOT NULL, block_id INTEGER NOT NULL, PRIMARY KEY(span_id, block_id)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS trace_blocks(
            trace_id BLOB NOT NULL, block_id INTEGER NOT NULL, PRIMARY KEY(trace_id, block_id)) WITHOUT ROWID;
        -- The run a trace's unnamed spans belong to: the first run any of its spans named.
        CREATE TABLE IF NOT EXISTS traces(trace_id BLOB PRIMARY KEY, run_id TEXT NOT NULL) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS run_traces(
            run_id TEXT NOT NULL, trace_id BLOB NOT NULL, span_count INTEGER NOT NULL,
            error_count INTEGER NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,
            agent TEXT, tenant TEXT, PRIMARY KEY(run_id, trace_id)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS runs(
            run_id TEXT PRIMARY KEY, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,
            span_count INTEGER NOT NULL, error_count INTEGER NOT NULL, trace_count INTEGER NOT NULL,
            agent TEXT, tenant TEXT, provisional INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX IF NOT EXISTS runs_by_start ON runs(start_ns);
        """
}
