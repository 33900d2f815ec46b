import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A legal hold: data it covers is never expired (and, once erasure exists, never erased).
public struct Hold: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        /// Every span of a tenant.
        case tenant
        /// Every span of a run, in any tenant (or `tenant`'s only).
        case run
        /// Every run with a span matching a `where` expression (`SpanFilter`).
        case `where`
    }

    public var id: String
    public var kind: Kind
    public var value: String
    /// For a run hold: the run's tenant, when given.
    public var tenant: String?
    public var reason: String
    /// The token's name that placed it (never the token).
    public var createdBy: String
    /// Unix seconds.
    public var createdAt: Int64
    /// Set once released (the hold is kept, for the record, but no longer in force).
    public var releasedBy: String?
    public var releasedAt: Int64?

    public init(
        id: String, kind: Kind, value: String, tenant: String? = nil, reason: String, createdBy: String,
        createdAt: Int64
    ) {
        self.id = id
        self.kind = kind
        self.value = value
        self.tenant = tenant
        self.reason = reason
        self.createdBy = createdBy
        self.createdAt = createdAt
    }

    /// Whether the hold covers a segment holding `tenants` and `runs`, `heldRuns` being the
    /// runs (tenant, run ID) the `where` holds match.
    func covers(tenants: [String], runs: [(tenant: String, run: String)]) -> Bool {
        switch kind {
        case .tenant: tenants.contains(value)
        case .run: runs.contains { $0.run == value && (tenant == nil || $0.tenant == tenant) }
        case .where: false
        }
    }
}

/// The legal holds (`DATA/holds.json`), in force and released (kept for the record, IDs
/// never reused): replaced whole on every change (a new file, fsynced, renamed over the old,
/// the directory fsynced), so a crash leaves the old list or the new one. A hold is durable
/// before the call that placed or released it returns.
public final class HoldStore: Sendable {
    public let path: String
    private let holds: Mutex<[Hold]>

    /// Loads the holds; a file that does not parse stops start-up rather than lose a hold.
    public init(directory: String) throws(StorageError) {
        path = directory + "/holds.json"
        holds = Mutex(try SegmentFile.readJSON([Hold].self, at: path, why: "a hold must never be lost") ?? [])
    }

    /// The holds in force.
    public var all: [Hold] { holds.withLock { $0.filter { $0.releasedAt == nil } } }

    /// Every hold ever placed, released ones included, oldest first.
    public var history: [Hold] { holds.withLock { $0 } }

    /// Places a hold, durable before it returns.
    public func add(
        kind: Hold.Kind, value: String, tenant: String? = nil, reason: String, by: String, now: Int64? = nil
    ) throws(StorageError) -> Hold {
        let now = now ?? Int64(time(nil))
        let result: Result<Hold, StorageError> = holds.withLock { list in
            let n = list.count + 1  // released holds stay listed: numbers are never reused
            let hold = Hold(
                id: "hold-\(n)", kind: kind, value: value, tenant: tenant, reason: reason, createdBy: by,
                createdAt: now)
            do throws(StorageError) {
                try write(list + [hold])
            } catch {
                return .failure(error)
            }
            list.append(hold)
            return .success(hold)
        }
        return try result.get()
    }

    /// Releases hold `id`; nil when no such hold is in force.
    public func release(_ id: String, by: String, now: Int64? = nil) throws(StorageError) -> Hold? {
        let now = now ?? Int64(time(nil))
        let result: Result<Hold?, StorageError> = holds.withLock { list in
            guard let i = list.firstIndex(where: { $0.id == id && $0.releasedAt == nil }) else { return .success(nil) }
            var kept = list
            kept[i].releasedBy = by
            kept[i].releasedAt = now
            let hold = kept[i]
            do throws(StorageError) {
                try write(kept)
            } catch {
                return .failure(error)
            }
            list = kept
            return .success(hold)
        }
        return try result.get()
    }

    private func write(_ list: [Hold]) throws(StorageError) {
        try SegmentFile.replaceDurably(path, json: list, what: "holds")
    }
}
