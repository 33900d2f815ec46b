import CSQLite

/// A thin wrapper over the SQLite C API.
///
/// Hand-written rather than GRDB or sqlite-nio because the index writer binds ~150,000 rows
/// a second on the ingest path: those libraries box every argument into an array or enum per
/// row, and this wrapper binds straight into reused prepared statements with no allocation.
/// Not thread-safe: each connection is owned by one thread or guarded by its owner's lock.
package final class SQLiteDatabase {
    package let handle: OpaquePointer
    package let path: String

    /// `immutable`: the file never changes while it is open (a sealed segment's index), so
    /// SQLite takes no file locks and keeps its page cache from one query to the next instead
    /// of re-reading the header to see whether another connection wrote. Read-only.
    package init(path: String, readOnly: Bool = false, immutable: Bool = false) throws(SQLiteError) {
        var db: OpaquePointer?
        var flags =
            (readOnly || immutable ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE))
            | SQLITE_OPEN_NOMUTEX
        var name = path
        if immutable {
            flags |= SQLITE_OPEN_URI
            name = "file:" + Self.uriEscaped(path) + "?immutable=1"
        }
        let rc = sqlite3_open_v2(name, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let db { sqlite3_close_v2(db) }
            throw SQLiteError("open index \(path): \(message)", resultCode: rc, path: path)
        }
        self.handle = db
        self.path = path
        sqlite3_busy_timeout(db, 5000)
    }

    deinit { sqlite3_close_v2(handle) }

    /// A path as the path of a `file:` URI: every byte but unreserved ones and `/` escaped.
    static func uriEscaped(_ path: String) -> String {
        var out = ""
        for b in path.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"), UInt8(ascii: "/"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                let hex = Array("0123456789ABCDEF".utf8)
                out += "%" + String(decoding: [hex[Int(b >> 4)], hex[Int(b & 15)]], as: UTF8.self)
            }
        }
        return out
    }

    package var lastError: String { String(cString: sqlite3_errmsg(handle)) }

    package func execute(_ sql: String) throws(SQLiteError) {
        var err: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &err)
        guard rc == SQLITE_OK else {
            let message = err.map { String(cString: $0) } ?? lastError
            sqlite3_free(err)
            throw SQLiteError("index: \(message)", resultCode: rc, path: path)
        }
    }

    package func prepare(_ sql: String) throws(SQLiteError) -> SQLiteStatement {
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil) == SQLITE_OK,
            let stmt
        else {
            throw SQLiteError(
                "index: cannot prepare statement: \(lastError)", resultCode: sqlite3_errcode(handle), path: path)
        }
        return SQLiteStatement(stmt, db: self)
    }

    package var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }
}

/// A prepared statement, reset after each use.
package final class SQLiteStatement {
    package let stmt: OpaquePointer
    package unowned let db: SQLiteDatabase
    // SQLITE_TRANSIENT is a C macro casting -1; it tells SQLite to copy bound buffers.
    private static let transient = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)

    init(_ stmt: OpaquePointer, db: SQLiteDatabase) {
        self.stmt = stmt
        self.db = db
    }

    deinit { sqlite3_finalize(stmt) }

    @discardableResult
    package func bind(_ index: Int32, _ value: Int64) -> SQLiteStatement {
        sqlite3_bind_int64(stmt, index, value)
        return self
    }

    @discardableResult
    package func bind(_ index: Int32, _ value: String?) -> SQLiteStatement {
        if let value {
            sqlite3_bind_text(stmt, index, value, -1, Self.transient)
        } else {
            sqlite3_bind_null(stmt, index)
        }
        return self
    }

    @discardableResult
    package func bind(_ index: Int32, double value: Double) -> SQLiteStatement {
        sqlite3_bind_double(stmt, index, value)
        return self
    }

    @discardableResult
    package func bindNull(_ index: Int32) -> SQLiteStatement {
        sqlite3_bind_null(stmt, index)
        return self
    }

    @discardableResult
    package func bind(_ index: Int32, blob value: [UInt8]) -> SQLiteStatement {
        value.withUnsafeBytes { b in
            _ = sqlite3_bind_blob(stmt, index, b.baseAddress, Int32(b.count), Self.transient)
        }
        return self
    }

    /// Steps once: true if a row is available.
    package func step() throws(SQLiteError) -> Bool {
        let rc = sqlite3_step(stmt)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default:
            let message = db.lastError
            sqlite3_reset(stmt)
            throw SQLiteError("index: \(message)", resultCode: rc, path: db.path)
        }
    }

    /// Runs a statement that returns no rows, then resets it.
    package func run() throws(SQLiteError) {
        defer { reset() }
        _ = try step()
    }

    package func reset() {
        sqlite3_reset(stmt)
        sqlite3_clear_bindings(stmt)
    }

    package func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(stmt, column) }

    package func double(_ column: Int32) -> Double { sqlite3_column_double(stmt, column) }

    package func text(_ column: Int32) -> String? {
        guard let p = sqlite3_column_text(stmt, column) else { return nil }
        return String(cString: p)
    }

    package func blob(_ column: Int32) -> [UInt8] {
        let n = Int(sqlite3_column_bytes(stmt, column))
        guard n > 0, let p = sqlite3_column_blob(stmt, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: n))
    }

    package func isNull(_ column: Int32) -> Bool { sqlite3_column_type(stmt, column) == SQLITE_NULL }
}
