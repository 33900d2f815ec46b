/// A failure of SQLite or of the data directory's lock, with a message an operator can act
/// on. The store and the sidecar wrap it in their own errors.
public struct SQLiteError: Error, CustomStringConvertible, Sendable {
    private enum Code: Sendable { case sqlite, locked, io }

    private let code: Code
    public let message: String

    public var description: String { message }

    /// Another process holds the directory's lock.
    public var isLocked: Bool { code == .locked }

    package init(_ message: String) {
        self.code = .sqlite
        self.message = message
    }

    private init(code: Code, message: String) {
        self.code = code
        self.message = message
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
