import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The damaged regions of segments the store has found (a failed checksum, a block that does
/// not decode, a file shorter than its index), and the runs whose spans they held.
///
/// Each region is logged once, with segment, offset and reason, counted, and appended to
/// `DATA/damage.log` (one line per region: segment, offset, length, reason), so a restart
/// still knows it: damage found by a query in a sealed segment is not found again at start-up,
/// which reads only the segments' tails. The runs a region held are worked out by the query
/// side (`resolve`), which has the index.
public final class DamageLog: Sendable {
    public struct Region: Sendable, Hashable {
        public var segment: Int64
        public var offset: Int
        public var length: Int
        public var reason: String

        public init(segment: Int64, offset: Int, length: Int, reason: String) {
            self.segment = segment
            self.offset = offset
            self.length = length
            self.reason = reason
        }
    }

    struct Key: Hashable {
        var segment: Int64
        var offset: Int
    }

    private struct State {
        var regions: [Key: Region] = [:]
        var order: [Key] = []
        /// Regions whose runs are not worked out yet (found at start-up, or read from the file).
        var unresolved: [Region] = []
        /// "tenant \u{1F} run" of every run a region held.
        var runs: Set<String> = []
    }

    let path: String?
    let logger: Logger
    private let state = Mutex(State())

    /// Loads the regions recorded in `path` (nil: kept in memory only).
    init(path: String?, logger: Logger) {
        self.path = path
        self.logger = logger
        guard let path, let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
        state.withLock { s in
            for line in text.split(separator: "\n") {
                let f = line.split(separator: " ", maxSplits: 3)
                guard f.count >= 3, let seg = Int64(f[0]), let off = Int(f[1]), let len = Int(f[2]) else { continue }
                let region = Region(segment: seg, offset: off, length: len, reason: f.count > 3 ? String(f[3]) : "")
                let key = Key(segment: seg, offset: off)
                if s.regions.updateValue(region, forKey: key) == nil { s.order.append(key) }
                s.unresolved.append(region)
            }
        }
    }

    /// Records a damaged region; logs and persists it the first time. Returns whether it was new.
    @discardableResult
    public func report(_ region: Region) -> Bool {
        let new = state.withLock { s in
            let key = Key(segment: region.segment, offset: region.offset)
            guard s.regions[key] == nil else { return false }
            s.regions[key] = region
            s.order.append(key)
            s.unresolved.append(region)
            return true
        }
        guard new else { return false }
        logger.error(
            "damaged segment region: its spans cannot be read",
            metadata: [
                "segment": "\(region.segment)", "offset": "\(region.offset)", "bytes": "\(region.length)",
                "reason": "\(region.reason)",
            ])
        if let path {
            let line = "\(region.segment) \(region.offset) \(region.length) \(region.reason)\n"
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
            if fd >= 0 {
                _ = line.utf8CString.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count - 1) }
                _ = fsync(fd)
                close(fd)
            }
        }
        return true
    }

    /// Every damaged region found so far, in the order found.
    public var regions: [Region] { state.withLock { s in s.order.compactMap { s.regions[$0] } } }

    /// How many damaged regions were found (since the data directory was created).
    public var count: Int { state.withLock { $0.regions.count } }

    /// Regions whose runs are not worked out yet; the caller resolves them and calls
    /// `markRuns`. Taking them clears the list.
    package func takeUnresolved() -> [Region] {
        state.withLock { s in
            defer { s.unresolved.removeAll() }
            return s.unresolved
        }
    }

    package func markRuns(_ runs: [(tenant: String, run: String)]) {
        state.withLock { s in for r in runs { s.runs.insert(r.tenant + "\u{1F}" + r.run) } }
    }

    /// Whether a damaged region held spans of `run` in `tenant`.
    public func holds(run: String, tenant: String) -> Bool {
        state.withLock { s in !s.runs.isEmpty && s.runs.contains(tenant + "\u{1F}" + run) }
    }
}
