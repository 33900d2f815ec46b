/// A failure of SQLite or of the data directory's lock, with a message an operator can act
/// on. The store and the sidecar wrap it in their own errors.
public struct SQLiteError: Error, CustomStringConvertible, Sendable {
    private enum Code: Sendable { case sqlite, locked, io }

    private let code: Code
    public let message: String
    /// SQLite's primary result code (`SQLITE_CORRUPT`, `SQLITE_FULL`, ...); 0 when the error
    /// did not come from SQLite.
    package let resultCode: Int32
    /// The database file the error came from, when known (to move a damaged one aside).
    package let path: String?

    public var description: String { message }

    /// Another process holds the directory's lock.
    public var isLocked: Bool { code == .locked }

    /// The database file is damaged or is not a database: derived data to move aside and rebuild.
    public var isDamaged: Bool { resultCode == 11 || resultCode == 26 }  // SQLITE_CORRUPT, SQLITE_NOTADB

    package init(_ message: String, resultCode: Int32 = 0, path: String? = nil) {
        self.code = .sqlite
        self.message = message
        self.resultCode = resultCode & 0xff
        self.path = path
    }

    private init(code: Code, message: String) {
        self.code = code
        self.message = message
        self.resultCode = 0
        self.path = nil
    }

    static func locked(_ directory: String) -> SQLiteError {
        SQLiteError(code: .locked, message: "data directory \(directory) is in use by another flightrec process")
    }

    static func io(_ what: String, errno e: Int32) -> SQLiteError {
        SQLiteError(code: .io, message: "\(what): \(String(cString: strerror(e)))")
    }
}

#if canImport(Glibc)
import Glibc
#endif
