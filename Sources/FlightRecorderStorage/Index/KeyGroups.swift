import FlightRecorderSQLite
import Foundation
import Logging
import Synchronization

/// One Bloom filter over the trace and run keys of a range of consecutive sealed segments,
/// so that asking "does any older segment hold this trace?" costs one probe per group of
/// `KeyGroupBuilder.segmentsPerGroup` segments rather than one per segment. The indexer asks
/// that about every new trace and run, so without groups its cost grew with the store's age
/// (measured: 50 probes per new key at 50 million spans, each a cache miss).
///
/// A group holds every key of every sealed segment with an ID in `first...last`; a "no" from
/// it skips those segments, a "maybe" falls back to their own filters. Groups are not stored:
/// the indexer extends one as it seals, and at start-up they are rebuilt in the background
/// from the sealed indexes (`KeyGroupBuilder.rebuild`); until then every segment is probed.
struct KeyGroup: Sendable {
    let first: Int64
    var last: Int64
    var bloom: BloomFilter
    var keys = 0
    var segments = 0
    /// Keys the filter was sized for; a group that would exceed it is closed.
    let capacity: Int
}

struct KeyGroupBuilder {
    static let segmentsPerGroup = 16
    /// Fewer bits than a segment's own filter (20): a false "maybe" here costs only the
    /// segments' own probes. About 1 absent key in 200 answers "maybe".
    static let bitsPerKey = 12
    static let probes = 6

    private(set) var open: KeyGroup?

    /// Adds a sealed segment's key hashes (newer than every segment added before) and
    /// returns the group that now holds them, to publish.
    mutating func add(segment: Int64, keys: [UInt64]) -> KeyGroup {
        if let g = open, g.segments < Self.segmentsPerGroup, g.keys + keys.count <= g.capacity, g.last < segment {
        } else {
            let capacity = max(keys.count, 1024) * Self.segmentsPerGroup * 5 / 4
            open = KeyGroup(
                first: segment, last: segment,
                bloom: BloomFilter(expectedKeys: capacity, bitsPerKey: Self.bitsPerKey, probes: Self.probes),
                capacity: capacity)
        }
        for k in keys { open!.bloom.insert(k) }
        open!.keys += keys.count
        open!.segments += 1
        open!.last = segment
        return open!
    }

    /// Ends the open group: the next segment starts a new one (a segment whose keys could not
    /// be read must not fall inside a group's range).
    mutating func close() { open = nil }

    /// Builds the groups of `segments` (sealed, oldest first) from their indexes, publishing
    /// each as it grows, on its own thread. Stops early when `stop` says so.
    /// Returns a group the thread leaves when done (tests wait on it).
    @discardableResult
    static func rebuild(segments: [Int64], catalog: SegmentCatalog, logger: Logger, stop: StopFlag) -> DispatchGroup {
        let done = DispatchGroup()
        guard !segments.isEmpty else { return done }
        done.enter()
        let thread = Thread {
            defer { done.leave() }
            var builder = KeyGroupBuilder()
            let started = ContinuousClock.now
            for id in segments {
                if stop.isSet { return }
                do throws(SQLiteError) {
                    let db = try SQLiteDatabase(
                        path: IndexSchema.path(catalog.directory, id), readOnly: true, immutable: true)
                    catalog.publish(group: builder.add(segment: id, keys: try SegmentIndexWriter.keyHashes(db)))
                } catch {
                    builder.close()
                    logger.warning(
                        "could not read a sealed index's keys; its segment is probed on its own",
                        metadata: ["segment": "\(id)", "error": "\(error.message)"])
                }
            }
            logger.info(
                "key groups rebuilt",
                metadata: ["segments": "\(segments.count)", "elapsed": "\(ContinuousClock.now - started)"])
        }
        thread.name = "flightrec-keygroups"
        thread.start()
        return done
    }
}

/// Set once, read from any thread.
final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)

    var isSet: Bool { flag.load(ordering: .relaxed) }

    func set() { flag.store(true, ordering: .relaxed) }
}
