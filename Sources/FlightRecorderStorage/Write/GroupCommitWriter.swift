import CoreMetrics
import FlightRecorderCore
import FlightRecorderEvidence
import FlightRecorderOTLP
import Foundation
import Logging

/// The writer thread: takes everything queued, frames it into LZ4 blocks, appends them to the
/// active segment and fsyncs once for the whole group (group commit), then resumes every
/// waiting caller. An acknowledged span is therefore always in a synced block. Seals the
/// segment when it would outgrow `segmentBytes`.
///
/// `@unchecked Sendable`: only its thread touches the active `SegmentWriter` until `run`
/// returns; `close` runs after that, ordered by the queue's lock (`awaitDrained`).
final class GroupCommitWriter: @unchecked Sendable {
    let configuration: StoreConfiguration
    let queue: WriteQueue
    let logger: Logger
    private(set) var segment: SegmentWriter
    /// When the active segment got its first block (or this writer started): with a
    /// retention, it seals `sealAfter` seconds later, so expiry can drop it whole.
    private var segmentOpened = ContinuousClock.now
    /// Told every durable block, in order, and every seal.
    let log: EvidenceLog?
    /// One log line per interval while writes keep failing (a full disk fails every group).
    private let limiter = LogLimiter()

    /// Each group's fsync, through swift-metrics (`StoreConfiguration.metricsFactory`).
    private let fsyncTimer: CoreMetrics.Timer?

    init(
        configuration: StoreConfiguration, queue: WriteQueue, segment: SegmentWriter, log: EvidenceLog?, logger: Logger
    ) {
        self.log = log
        fsyncTimer = configuration.metricsFactory.map {
            CoreMetrics.Timer(label: StoreConfiguration.fsyncTimerLabel, dimensions: [], factory: $0)
        }
        self.configuration = configuration
        self.queue = queue
        self.segment = segment
        self.logger = logger
    }

    /// The thread's body; returns once draining has emptied the queue.
    func run() {
        let ages = configuration.retention != nil
        while let (taken, bytes) = queue.takeGroup(
            idleUntil: ages ? Date(timeIntervalSinceNow: min(60, max(0.05, secondsToSeal))) : nil)
        {
            if queue.takeSealRequest() { sealNow = segment.size > SegmentFile.headerSize }
            if taken.isEmpty {
                // Idle: an aged segment with data seals now, so its spans can expire on time
                // (or one an erasure needs sealed).
                if segment.size > SegmentFile.headerSize && (secondsToSeal <= 0 || sealNow) {
                    do throws(StorageError) {
                        try commit([])
                    } catch {
                        limiter.log(
                            logger, .error, reason: "write", "storage write failed (sealing an aged segment)",
                            metadata: ["error": "\(error)"])
                    }
                }
                continue
            }
            let result: Result<Void, StorageError>
            do throws(StorageError) {
                try commit(taken.map(\.batch))
                result = .success(())
            } catch {
                limiter.log(
                    logger, .error, reason: "write", "storage write failed; requests answered with a retryable error",
                    metadata: ["error": "\(error)"])
                result = .failure(error)
            }
            queue.release(bytes: bytes)
            for p in taken {
                switch result {
                case .success: p.continuation.resume()
                case .failure(let e): p.continuation.resume(throwing: e)
                }
            }
        }
    }

    /// A seal was asked for (`WriteQueue.requestSeal`): the next commit seals.
    private var sealNow = false

    /// Seconds until the active segment is due to seal by age (infinite without a retention,
    /// or while it holds no block).
    private var secondsToSeal: Double {
        guard let sealAfter = configuration.retention?.sealAfter, segment.size > SegmentFile.headerSize else {
            return .infinity
        }
        let elapsed = ContinuousClock.now - segmentOpened
        return sealAfter - Double(elapsed.components.seconds) - Double(elapsed.components.attoseconds) / 1e18
    }

    /// One group commit: frame, append, sync; then hand the blocks to the indexer.
    func commit(_ batches: [IngestBatch]) throws(StorageError) {
        var frames: [UInt8] = []
        var blocks: [DurableBlock] = []
        var raw: [UInt8] = []
        var rawSpans = 0
        var members: [IngestBatch] = []
        // Each block's evidence leaves: the batches' own, or nil to recompute from `raw`; and
        // whether every batch's were computed from its payload's own bytes.
        var leaves: [[TreeHash]?] = []
        var canonical: [Bool] = []
        func flushBlock() {
            guard !members.isEmpty else { return }
            // The spans' salts, stored in the frame: each request's key (ingest hashed its
            // leaves under it), or, when a request's leaves are missing, one fresh key for the
            // block and its leaves hashed here.
            var salts: SpanSalts?
            if log != nil {
                if members.allSatisfy({
                    $0.leafHashes.count == $0.spans.count * TreeHash.size && $0.saltKey.count == SpanSalts.keySize
                }) {
                    var blockLeaves: [TreeHash] = []
                    blockLeaves.reserveCapacity(rawSpans)
                    for b in members {
                        b.leafHashes.withUnsafeBytes { raw in
                            var at = 0
                            while at < raw.count {
                                blockLeaves.append(TreeHash(loading: UnsafeRawBufferPointer(rebasing: raw[at...])))
                                at += TreeHash.size
                            }
                        }
                    }
                    leaves.append(blockLeaves)
                    canonical.append(members.allSatisfy(\.leavesFromPayload))
                    salts = SpanSalts(runs: members.map { .keyed(key: $0.saltKey, count: $0.spans.count) })
                } else {
                    let fresh = SpanSalts.random(count: rawSpans)
                    if let computed = try? BlockLeaves.of(raw: raw, canonical: false, salts: fresh),
                        computed.count == rawSpans
                    {
                        leaves.append(computed)
                        salts = fresh
                    } else {
                        leaves.append(try? BlockLeaves.of(raw: raw, canonical: false, salts: nil))
                    }
                    canonical.append(false)
                }
            }
            let start = frames.count
            raw.withUnsafeBytes {
                BlockCodec.encode(
                    $0, spanCount: rawSpans, codec: configuration.compression, salts: salts, into: &frames)
            }
            blocks.append(
                DurableBlock(
                    segment: 0, offset: start, length: frames.count - start, spanCount: rawSpans, batches: members))
            raw.removeAll(keepingCapacity: true)
            rawSpans = 0
            members.removeAll()
        }
        for batch in batches {
            if !raw.isEmpty && raw.count + batch.payload.count > configuration.blockBytes { flushBlock() }
            raw.append(contentsOf: batch.payload)
            rawSpans += batch.spans.count
            members.append(batch)
        }
        flushBlock()

        var segmentStates: [(id: Int64, indexedBytes: Int, sealed: Bool)] = []
        if segment.size > SegmentFile.headerSize
            && (segment.size + frames.count > configuration.segmentBytes || secondsToSeal <= 0 || sealNow)
        {
            sealNow = false
            // The next segment is created (header written and synced) before this one is
            // closed: when that fails (a full disk) nothing changed, the group is refused with
            // a retryable error, and the next group tries the roll again.
            try segment.sync()
            let next = try SegmentWriter(directory: configuration.segmentDirectory, id: segment.id + 1)
            segment.close()
            segmentStates.append((segment.id, segment.size, true))
            segment = next
            log?.checkpoint(.seal)
            logger.info("sealed segment", metadata: ["segment": "\(segment.id - 1)"])
        }
        let base = segment.size
        if base == SegmentFile.headerSize { segmentOpened = ContinuousClock.now }
        do throws(StorageError) {
            _ = try segment.append(frames)
            if configuration.durability == .fsync {
                let started = ContinuousClock.now
                try segment.sync()
                if let fsyncTimer {
                    let d = ContinuousClock.now - started
                    fsyncTimer.recordNanoseconds(
                        d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000)
                }
            }
        } catch {
            segment.truncate(to: base)
            throw error
        }
        for i in blocks.indices {
            blocks[i].segment = segment.id
            blocks[i].offset += base
        }
        segmentStates.append((segment.id, segment.size, false))
        if let log {
            let checksums = blocks.map { b in
                frames.withUnsafeBytes {
                    BlockCodec.header(UnsafeRawBufferPointer(rebasing: $0[(b.offset - base)...]))?.checksum ?? 0
                }
            }
            log.append(
                blocks.indices.map { i in
                    EvidenceLog.Block(
                        segment: segment.id, offset: blocks[i].offset, frameLength: blocks[i].length,
                        checksum: checksums[i], leaves: leaves[i], canonical: canonical[i])
                })
        }
        // The indexer needs only the span facts, not the payload bytes or the leaves.
        var spans = 0
        for i in blocks.indices {
            spans += blocks[i].spanCount
            for j in blocks[i].batches.indices {
                blocks[i].batches[j].payload = []
                blocks[i].batches[j].leafHashes = []
            }
        }
        queue.publishDurable(blocks: blocks, segments: segmentStates, spans: spans)
    }

    /// After `run` returned: syncs and closes the active segment.
    func close() {
        try? segment.sync()
        segment.close()
    }
}
