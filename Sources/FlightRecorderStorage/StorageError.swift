import FlightRecorderSQLite

/// An error from the storage engine, with a message an operator can act on.
public struct StorageError: Error, CustomStringConvertible, Sendable {
    enum Code: Sendable {
        case io, corrupt, sqlite, overloaded, shuttingDown, locked, indexBehind, atCapacity
    }

    let code: Code
    public let message: String

    public var description: String { message }

    /// The store's queue is full; the client should retry later.
    public var isOverload: Bool { code == .overloaded }
    /// The store is at `retention.max_bytes` with nothing more allowed to expire; `message`
    /// says so. Retry once space is made.
    public var isAtCapacity: Bool { code == .atCapacity }
    /// The store is draining for shutdown.
    public var isShuttingDown: Bool { code == .shuttingDown }
    /// Another process holds the data directory.
    public var isLocked: Bool { code == .locked }
    /// The index cannot take the acknowledged spans yet (it is failing and retrying, or being
    /// rebuilt): the segments hold them, and a retry later sees them.
    public var isIndexBehind: Bool { code == .indexBehind }
    /// Stored bytes are damaged (a failed checksum, a block that does not decode, a file
    /// shorter than its index).
    public var isCorrupt: Bool { code == .corrupt }
    /// Whether retrying later may succeed: the failure is the store's state (a full disk, a
    /// failing device, an index catching up), not the request.
    public var isRetryable: Bool { code != .corrupt && code != .locked }

    static func io(_ what: String, errno e: Int32 = errno) -> StorageError {
        StorageError(code: .io, message: "\(what): \(String(cString: strerror(e)))")
    }
    /// The data directory, or a file it needs, cannot be created or opened; `message` says which and why.
    public static func cannotOpen(_ message: String) -> StorageError { StorageError(code: .io, message: message) }
    static func indexBehind(_ message: String) -> StorageError { StorageError(code: .indexBehind, message: message) }
    static func indexRebuilding(_ segment: Int64) -> StorageError {
        indexBehind("the index of segment \(segment) was damaged and is being rebuilt from the segment; retry shortly")
    }
    static func corrupt(_ message: String) -> StorageError { StorageError(code: .corrupt, message: message) }
    static func sqlite(_ message: String) -> StorageError { StorageError(code: .sqlite, message: message) }
    static let overloaded = StorageError(code: .overloaded, message: "ingest queue is full; retry later")
    static let shuttingDown = StorageError(code: .shuttingDown, message: "the daemon is shutting down")
    init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    /// The index file a damaged-index error came from (to rebuild it).
    var damagedIndexPath: String? = nil

    init(_ error: SQLiteError) {
        self.init(code: error.isLocked ? .locked : .sqlite, message: error.message)
        if error.isDamaged { damagedIndexPath = error.path }
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
