import Foundation

/// The active segment's indexed attribute values, in memory: for each value hash, the
/// segment's trace numbers that carry it. Kept out of SQLite because these are most of the
/// index's rows (about 1.3 per span in agent traffic) and inserting them into a B-tree was the
/// indexer's largest cost; when the segment seals they become its sorted attribute pages
/// (`IndexSchema.attributePages`). The writer appends each round's rows to the segment's
/// attribute log (`IndexSchema.attributesPath`) in the round's transaction, so a restart
/// reloads them; like the rest of the active index, a crash may lose only what the segment
/// still holds and recovery re-indexes.
///
/// `@unchecked Sendable`: the indexer thread adds, query threads read; all under `lock`.
final class ActiveAttributes: @unchecked Sendable {
    /// Guards everything below; while a log is loaded in the background, callers wait on it.
    private let lock = NSCondition()
    private var loading = false
    /// Guarded by `lock`: the first entry of each hash, and the entries chained from it.
    private var heads: [Int64: Int32] = [:]
    private var entries: [(trace: UInt32, next: Int32)] = []
    /// The traces of values that many traces carry (a tool name, a policy outcome), so that
    /// adding one more checks a set instead of walking a long chain. Most values (external
    /// IDs) belong to one trace and never get one.
    private var common: [Int64: Set<UInt32>] = [:]
    static let commonAfter = 32

    /// Adds one row; false when it was there already.
    @discardableResult
    func add(hash: Int64, trace: UInt32) -> Bool {
        locked { insert(hash: hash, trace: trace) }
    }

    func add(_ rows: [(hash: Int64, trace: UInt32)]) {
        locked { for r in rows { _ = insert(hash: r.hash, trace: r.trace) } }
    }

    /// Adds the rows of an attribute log (`IndexSchema.attributesPath`) on a thread of its
    /// own, so that start-up does not wait for a full segment's rows (a second for a million);
    /// everything else that touches the rows waits until they are in.
    func load(log: [UInt8]) {
        lock.withLock { loading = true }
        let thread = Thread { [self] in
            lock.withLock {
                let n = log.count / 12
                heads.reserveCapacity(n)
                entries.reserveCapacity(n)
                log.withUnsafeBytes { b in
                    for i in 0..<n {
                        _ = insert(
                            hash: Int64(littleEndian: b.loadUnaligned(fromByteOffset: i * 12, as: Int64.self)),
                            trace: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: i * 12 + 8, as: UInt32.self)))
                    }
                }
                loading = false
                lock.broadcast()
            }
        }
        thread.name = "flightrec-attributes"
        thread.start()
    }

    private func locked<R>(_ body: () -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        while loading { lock.wait() }
        return body()
    }

    /// Calls `body` with each trace in `hash`'s chain, newest first, while it returns true.
    private func walk(_ hash: Int64, _ body: (UInt32) -> Bool) {
        var i = heads[hash] ?? -1
        while i >= 0, body(entries[Int(i)].trace) { i = entries[Int(i)].next }
    }

    private func chain(_ hash: Int64) -> [UInt32] {
        var out: [UInt32] = []
        walk(hash) {
            out.append($0)
            return true
        }
        return out
    }

    private func insert(hash: Int64, trace: UInt32) -> Bool {
        if common[hash] != nil {
            guard common[hash]!.insert(trace).inserted else { return false }
        } else {
            var length = 0
            var found = false
            walk(hash) { t in
                found = t == trace
                length += 1
                return !found
            }
            if found { return false }
            if length >= Self.commonAfter {
                var set = Set(chain(hash))
                set.insert(trace)
                common[hash] = set
            }
        }
        entries.append((trace, heads[hash] ?? -1))
        heads[hash] = Int32(entries.count - 1)
        return true
    }

    /// The trace numbers that carry `hash`.
    func traces(_ hash: Int64) -> [Int64] {
        locked { chain(hash).map { Int64($0) } }
    }

    /// The trace numbers that carry every one of `hashes`: the rarest value's traces, kept
    /// where the others' sets (or short chains) hold them too.
    func traces(withAll hashes: [Int64]) -> [Int64] {
        locked {
            // Sizes: a common value's set, else its chain (at most `commonAfter` long).
            var sized: [(hash: Int64, size: Int)] = []
            for h in Set(hashes) {
                guard heads[h] != nil else { return [] }
                sized.append((h, common[h]?.count ?? Self.commonAfter))
            }
            sized.sort { $0.size < $1.size }
            guard let rarest = sized.first else { return [] }
            var candidates = common[rarest.hash].map(Array.init) ?? chain(rarest.hash)
            for other in sized.dropFirst() {
                if let set = common[other.hash] {
                    candidates = candidates.filter { set.contains($0) }
                } else {
                    let members = Set(chain(other.hash))
                    candidates = candidates.filter { members.contains($0) }
                }
                if candidates.isEmpty { return [] }
            }
            return candidates.map { Int64($0) }
        }
    }

    var count: Int { locked { entries.count } }
}
