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
    static func locked(_ path: String) -> StorageError {
        StorageError(code: .locked, message: "data directory \(path) is in use by another flightrec process")
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
