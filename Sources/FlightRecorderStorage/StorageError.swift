import FlightRecorderSQLite

/// An error from the storage engine, with a message an operator can act on.
public struct StorageError: Error, CustomStringConvertible, Sendable {
    enum Code: Sendable {
        case io, corrupt, sqlite, overloaded, shuttingDown, locked
    }

    let code: Code
    public let message: String

    public var description: String { message }

    /// The store's queue is full; the client should retry later.
    public var isOverload: Bool { code == .overloaded }
    /// The store is draining for shutdown.
    public var isShuttingDown: Bool { code == .shuttingDown }
    /// Another process holds the data directory.
    public var isLocked: Bool { code == .locked }

    static func io(_ what: String, errno e: Int32 = errno) -> StorageError {
        StorageError(code: .io, message: "\(what): \(String(cString: strerror(e)))")
    }
    static func corrupt(_ message: String) -> StorageError { StorageError(code: .corrupt, message: message) }
    static func sqlite(_ message: String) -> StorageError { StorageError(code: .sqlite, message: message) }
    static let overloaded = StorageError(code: .overloaded, message: "ingest queue is full; retry later")
    static let shuttingDown = StorageError(code: .shuttingDown, message: "the daemon is shutting down")
    init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    init(_ error: SQLiteError) {
        self.init(code: error.isLocked ? .locked : .sqlite, message: error.message)
    }
}

/// Runs SQLite work where a `StorageError` is expected.
func sqlite<T>(_ body: () throws(SQLiteError) -> T) throws(StorageError) -> T {
    do {
        return try body()
    } catch {
        throw StorageError(error)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
