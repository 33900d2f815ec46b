import FlightRecorderGuardPolicy
import FlightRecorderSQLite
import Foundation

/// One execute request, keyed by tenant and idempotency key: what was decided, and what
/// the backend answered. Only redacted results are stored.
public struct ExecutionRecord: Sendable, Codable, Equatable {
    public enum Status: String, Sendable, Codable {
        case awaitingApproval = "awaiting_approval"
        case blocked
        /// The backend call is in flight. Found at start-up, it becomes `unknown`: the sidecar
        /// stopped mid-call and cannot know whether the write happened.
        case executing
        case succeeded, failed
        case timedOut = "timed_out"
        case unknown

        /// Final: the stored answer is replayed and the call never runs again.
        public var isFinal: Bool { [.succeeded, .failed, .timedOut, .unknown].contains(self) }
        /// The write may or may not have happened; listed at `/v1/uncertain`.
        public var isUncertain: Bool { self == .timedOut || self == .unknown }
    }

    public var tenant: String
    public var idempotencyKey: String
    public var runID: String
    public var actor: String
    public var tool: String
    public var tier: String
    /// Tool and canonical arguments, hashed: a key reused for another call is refused.
    public var digest: String
    public var status: Status
    public var reason: String
    public var rule: String
    public var ticket: String?
    public var operationID: String?
    public var backendStatus: Int?
    /// The backend's answer after redaction (JSON text).
    public var result: String?
    public var startedNanos: UInt64
    public var finishedNanos: UInt64?
    public var traceID: String?
    public var spanID: String?
    /// Set when an operator recorded the real outcome of an uncertain write.
    public var reconciledBy: String?
}

/// An approval ticket: who asked for what, and who granted or denied it.
public struct ApprovalRecord: Sendable, Codable, Equatable {
    public enum Status: String, Sendable, Codable {
        case pending, granted, denied
        /// Granted, then used by one execution: it never lets a second one through.
        case consumed
    }

    public var ticket: String
    public var tenant: String
    public var runID: String
    public var requester: String
    public var tool: String
    public var tier: String
    public var digest: String
    /// The arguments after redaction, so the approver sees what they approve.
    public var arguments: String
    public var rule: String
    public var reason: String
    public var status: Status
    public var approver: String?
    public var note: String?
    public var requestedNanos: UInt64
    public var decidedNanos: UInt64?
    /// The `approval.requested` span, which the grant or denial links to.
    public var requestTraceID: String
    public var requestSpanID: String
    public var decisionTraceID: String?
    public var decisionSpanID: String?
    public var consumedBy: String?
}

/// The sidecar's durable state in `<data_dir>/guard.db` (SQLite, WAL, `synchronous=FULL`):
/// executions by idempotency key, approvals by ticket, and run state. Every write is a
/// transaction that is on disk before the answer it backs is sent, so a restart never
/// forgets an approval and never runs an idempotency key twice.
///
/// Not thread-safe: owned by `GuardService`, an actor.
final class GuardStore {
    let db: SQLiteDatabase
    private let lock: DirectoryLock
    private let encoder = JSONEncoder()
    private let decoder = JSONDecoder()
    private var runCache: [String: RunState] = [:]

    private let getExecution: SQLiteStatement
    private let putExecution: SQLiteStatement
    private let getApproval: SQLiteStatement
    private let putApproval: SQLiteStatement
    private let getRun: SQLiteStatement
    private let putRun: SQLiteStatement
    private let putOutbox: SQLiteStatement
    private let pagesInUse: SQLiteStatement
    /// The database file, which the exporter reads the outbox from on a connection of its own.
    let path: String

    /// Opens (creating) the store; executions caught in flight by a crash become `unknown`.
    /// Throws when the directory cannot be created, is locked by another sidecar, or the
    /// database cannot be opened.
    init(directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        lock = try DirectoryLock(directory: directory)
        db = try SQLiteDatabase(path: directory + "/guard.db")
        try db.execute(
            """
            PRAGMA journal_mode=WAL;
            PRAGMA synchronous=FULL;
            CREATE TABLE IF NOT EXISTS executions(
                tenant TEXT NOT NULL, key TEXT NOT NULL, status TEXT NOT NULL, doc TEXT NOT NULL,
                PRIMARY KEY(tenant, key)) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS executions_status ON executions(status);
            CREATE TABLE IF NOT EXISTS approvals(
                ticket TEXT PRIMARY KEY, tenant TEXT NOT NULL, status TEXT NOT NULL, doc TEXT NOT NULL) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS runs(
                tenant TEXT NOT NULL, run_id TEXT NOT NULL, doc TEXT NOT NULL,
                PRIMARY KEY(tenant, run_id)) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS outbox(
                id INTEGER PRIMARY KEY AUTOINCREMENT, spans INTEGER NOT NULL, body BLOB NOT NULL);
            """)
        getExecution = try db.prepare("SELECT doc FROM executions WHERE tenant = ?1 AND key = ?2")
        putExecution = try db.prepare(
            "INSERT OR REPLACE INTO executions(tenant, key, status, doc) VALUES(?1, ?2, ?3, ?4)")
        getApproval = try db.prepare("SELECT doc FROM approvals WHERE ticket = ?1")
        putApproval = try db.prepare(
            "INSERT OR REPLACE INTO approvals(ticket, tenant, status, doc) VALUES(?1, ?2, ?3, ?4)")
        getRun = try db.prepare("SELECT doc FROM runs WHERE tenant = ?1 AND run_id = ?2")
        putRun = try db.prepare("INSERT OR REPLACE INTO runs(tenant, run_id, doc) VALUES(?1, ?2, ?3)")
        putOutbox = try db.prepare("INSERT INTO outbox(spans, body) VALUES(?1, ?2)")
        pagesInUse = try db.prepare(
            "SELECT (p.page_count - f.freelist_count) * s.page_size FROM pragma_page_count() p, "
                + "pragma_freelist_count() f, pragma_page_size() s")
        path = directory + "/guard.db"
        encoder.outputFormatting = [.sortedKeys]
    }

    /// Marks executions left `executing` by a crash as `unknown`; returns how many.
    func recoverInFlight() throws -> Int {
        let stmt = try db.prepare("SELECT doc FROM executions WHERE status = 'executing'")
        var stuck: [ExecutionRecord] = []
        while try stmt.step() {
            if let doc = stmt.text(0), let r = try? decoder.decode(ExecutionRecord.self, from: Data(doc.utf8)) {
                stuck.append(r)
            }
        }
        stmt.reset()
        try transaction {
            for var r in stuck {
                r.status = .unknown
                r.reason =
                    "the sidecar stopped while the backend call was in flight; the write may or may not have happened"
                try put(r)
            }
        }
        return stuck.count
    }

    func transaction<T>(_ body: () throws -> T) throws -> T {
        try db.execute("BEGIN IMMEDIATE")
        do {
            let value = try body()
            try db.execute("COMMIT")
            return value
        } catch {
            try? db.execute("ROLLBACK")
            runCache.removeAll()  // may hold state the rollback undid
            throw error
        }
    }

    // MARK: Outbox

    /// Adds spans to the outbox, inside the caller's transaction: they are durable exactly when
    /// the state they describe is. `SpanExporter` sends them and deletes them once the
    /// collector acknowledged them.
    func enqueue(_ spans: [GuardSpan]) throws {
        try putOutbox.bind(1, Int64(spans.count)).bind(2, blob: GuardSpanEncoder.request(spans)).run()
    }

    /// Bytes the store's content takes (pages in use, not pages freed by exported spans, and
    /// not the write-ahead log's preallocated size).
    var diskBytes: Int64 {
        defer { pagesInUse.reset() }
        return (try? pagesInUse.step()) == true ? pagesInUse.int64(0) : 0
    }

    // MARK: Executions

    func execution(tenant: String, key: String) throws -> ExecutionRecord? {
        try fetch(getExecution, [tenant, key])
    }

    func put(_ r: ExecutionRecord) throws {
        try putExecution.bind(1, r.tenant).bind(2, r.idempotencyKey).bind(3, r.status.rawValue)
            .bind(4, String(decoding: try encoder.encode(r), as: UTF8.self)).run()
    }

    /// Uncertain writes (timed out or unknown, not yet reconciled), oldest first.
    func uncertain(tenants: Set<String>?) throws -> [ExecutionRecord] {
        let stmt = try db.prepare("SELECT doc FROM executions WHERE status IN ('timed_out', 'unknown')")
        var out: [ExecutionRecord] = []
        while try stmt.step() {
            guard let doc = stmt.text(0), let r = try? decoder.decode(ExecutionRecord.self, from: Data(doc.utf8)) else {
                continue
            }
            if r.tier != "read" && (tenants?.contains(r.tenant) ?? true) { out.append(r) }
        }
        stmt.reset()
        return out.sorted { ($0.startedNanos, $0.idempotencyKey) < ($1.startedNanos, $1.idempotencyKey) }
    }

    // MARK: Approvals

    func approval(_ ticket: String) throws -> ApprovalRecord? {
        try fetch(getApproval, [ticket])
    }

    func put(_ a: ApprovalRecord) throws {
        try putApproval.bind(1, a.ticket).bind(2, a.tenant).bind(3, a.status.rawValue)
            .bind(4, String(decoding: try encoder.encode(a), as: UTF8.self)).run()
    }

    func approvals(status: ApprovalRecord.Status?, tenants: Set<String>?) throws -> [ApprovalRecord] {
        let stmt = try db.prepare("SELECT doc FROM approvals" + (status == nil ? "" : " WHERE status = ?1"))
        if let status { stmt.bind(1, status.rawValue) }
        var out: [ApprovalRecord] = []
        while try stmt.step() {
            guard let doc = stmt.text(0), let a = try? decoder.decode(ApprovalRecord.self, from: Data(doc.utf8)) else {
                continue
            }
            if tenants?.contains(a.tenant) ?? true { out.append(a) }
        }
        stmt.reset()
        return out.sorted { ($0.requestedNanos, $0.ticket) < ($1.requestedNanos, $1.ticket) }
    }

    // MARK: Runs

    func runState(tenant: String, run: String) throws -> RunState {
        let id = tenant + "\u{0}" + run
        if let cached = runCache[id] { return cached }
        let state: RunState = try fetch(getRun, [tenant, run]) ?? RunState()
        if runCache.count > 10_000 { runCache.removeAll(keepingCapacity: true) }
        runCache[id] = state
        return state
    }

    func put(_ state: RunState, tenant: String, run: String) throws {
        try putRun.bind(1, tenant).bind(2, run).bind(3, String(decoding: try encoder.encode(state), as: UTF8.self))
            .run()
        runCache[tenant + "\u{0}" + run] = state
    }

    private func fetch<T: Decodable>(_ stmt: SQLiteStatement, _ args: [String]) throws -> T? {
        defer { stmt.reset() }
        for (i, a) in args.enumerated() { stmt.bind(Int32(i + 1), a) }
        guard try stmt.step(), let doc = stmt.text(0) else { return nil }
        return try decoder.decode(T.self, from: Data(doc.utf8))
    }
}
