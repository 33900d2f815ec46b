import FlightRecorderOTLP
import Foundation

/// The state the store's two threads and its callers share, under one lock: requests waiting
/// for the writer, durable groups waiting for the indexer, and the sequence numbers that let
/// a query wait for everything acknowledged before it.
///
/// `@unchecked Sendable`: every field is read and written only under `lock`.
final class WriteQueue: @unchecked Sendable {
    struct Pending {
        var batch: IngestBatch
        var continuation: CheckedContinuation<Void, any Error>
    }

    /// One group commit, durable, waiting for the indexer.
    struct DurableGroup {
        var seq: Int64
        var blocks: [DurableBlock]
        var segments: [(id: Int64, indexedBytes: Int, sealed: Bool)]
        var spans: Int
    }

    enum State { case running, draining, closed }

    /// Most spans the indexer may lag by before the writer waits for it. It is also what a
    /// crash can leave to re-index at start-up (the durable spans not yet indexed), so it
    /// bounds recovery time: at 150,000 about a second.
    static let defaultMaxIndexBacklogSpans = 150_000
    let maxIndexBacklogSpans: Int

    let lock = NSCondition()
    private(set) var state = State.running
    private var pending: [Pending] = []
    private var queuedBytes = 0
    private var backlog: [DurableGroup] = []
    private(set) var backlogSpans = 0
    private var durableSeq: Int64 = 0
    private var indexedSeq: Int64 = 0
    private var indexWaiters: [(seq: Int64, continuation: CheckedContinuation<Void, any Error>)] = []
    private var closeWaiters: [CheckedContinuation<Void, Never>] = []
    private var writerDone = false
    private var indexerDone = false
    /// Why the indexer's last round failed, while it retries; nil once a round succeeds.
    /// Queries answer `indexBehind` with it instead of reading an index that lacks
    /// acknowledged spans.
    private(set) var indexFailure: StorageError?
    /// A query found the active segment's index damaged: the indexer rebuilds it.
    private var activeRebuildRequested: Int64?
    let maxQueueBytes: Int

    init(maxQueueBytes: Int, maxIndexBacklogSpans: Int = defaultMaxIndexBacklogSpans) {
        self.maxQueueBytes = maxQueueBytes
        self.maxIndexBacklogSpans = maxIndexBacklogSpans
    }

    // MARK: Callers

    /// Queues `batch`; its continuation is resumed once the batch is durable. Refuses while
    /// draining, and when the queue is full (unless it is empty: one request always fits).
    func enqueue(_ batch: IngestBatch, _ continuation: CheckedContinuation<Void, any Error>) {
        lock.lock()
        defer { lock.unlock() }
        guard state == .running else { return continuation.resume(throwing: StorageError.shuttingDown) }
        guard queuedBytes + batch.payload.count <= maxQueueBytes || queuedBytes == 0 else {
            return continuation.resume(throwing: StorageError.overloaded)
        }
        // The index is failing and its backlog is full: nothing queued now could be written
        // before the index recovers, so the request is refused at once (retryable).
        if let indexFailure, backlogSpans > maxIndexBacklogSpans {
            return continuation.resume(throwing: indexFailure)
        }
        queuedBytes += batch.payload.count
        pending.append(Pending(batch: batch, continuation: continuation))
        // Broadcast: the writer and the indexer wait on the same condition.
        lock.broadcast()
    }

    /// Resumes `continuation` once everything durable at the time of the call is indexed, or
    /// with `indexBehind` while the indexer is failing (the segments hold the spans; the index
    /// does not yet).
    func awaitIndexed(_ continuation: CheckedContinuation<Void, any Error>) {
        lock.lock()
        let target = durableSeq
        if let indexFailure, !indexerDone {
            lock.unlock()
            return continuation.resume(throwing: indexFailure)
        }
        if indexedSeq >= target || indexerDone {
            lock.unlock()
            return continuation.resume()
        }
        indexWaiters.append((target, continuation))
        lock.broadcast()
        lock.unlock()
    }

    /// Stops taking requests; false when already draining or closed.
    func beginDraining() -> Bool {
        lock.withLock {
            guard state == .running else { return false }
            state = .draining
            lock.broadcast()
            return true
        }
    }

    /// Resumes `continuation` once the writer and the indexer have finished everything queued.
    func awaitDrained(_ continuation: CheckedContinuation<Void, Never>) {
        lock.lock()
        if writerDone && indexerDone {
            lock.unlock()
            return continuation.resume()
        }
        closeWaiters.append(continuation)
        lock.unlock()
    }

    func markClosed() { lock.withLock { state = .closed } }

    /// Asks the writer to seal the active segment (if it holds any block) at its next group,
    /// or at once when idle: an erasure rewrites only sealed segments.
    func requestSeal() {
        lock.lock()
        sealRequested = true
        lock.broadcast()
        lock.unlock()
    }

    /// Whether a seal was asked for since the last call.
    func takeSealRequest() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        let asked = sealRequested
        sealRequested = false
        return asked
    }
    private var sealRequested = false

    // MARK: The writer thread

    /// The next group for the writer: everything queued, up to 32 MiB; nil once draining has
    /// emptied the queue. Waits while the indexer is too far behind (back-pressure).
    /// With `idleUntil`, an empty group at that time if nothing was queued (the writer seals
    /// an aged segment while idle).
    func takeGroup(idleUntil: Date? = nil) -> (batches: [Pending], bytes: Int)? {
        lock.lock()
        defer { lock.unlock() }
        while true {
            while pending.isEmpty && state == .running {
                if sealRequested { return ([], 0) }
                if let idleUntil {
                    if !lock.wait(until: idleUntil) && pending.isEmpty && state == .running { return ([], 0) }
                } else {
                    lock.wait()
                }
            }
            if pending.isEmpty {
                writerDone = true
                finishIfDrained()
                lock.broadcast()
                return nil
            }
            // While the indexer lags the writer waits here and the queue fills (clients are
            // refused with a retryable error). While it fails, the requests waiting are refused
            // at once: they would wait until it recovers, and hold up a graceful shutdown.
            guard backlogSpans > maxIndexBacklogSpans && !indexerDone else { break }
            if let indexFailure {
                let refused = pending
                pending.removeAll()
                queuedBytes -= refused.reduce(0) { $0 + $1.batch.payload.count }
                lock.unlock()
                for p in refused { p.continuation.resume(throwing: indexFailure) }
                lock.lock()
            } else {
                lock.wait()
            }
        }
        var taken: [Pending] = []
        var bytes = 0
        while let first = pending.first, taken.isEmpty || bytes + first.batch.payload.count <= 32 << 20 {
            bytes += first.batch.payload.count
            taken.append(pending.removeFirst())
        }
        return (taken, bytes)
    }

    /// A group is durable: the indexer may take it.
    func publishDurable(blocks: [DurableBlock], segments: [(id: Int64, indexedBytes: Int, sealed: Bool)], spans: Int) {
        lock.withLock {
            durableSeq += 1
            backlog.append(DurableGroup(seq: durableSeq, blocks: blocks, segments: segments, spans: spans))
            backlogSpans += spans
            lock.broadcast()
        }
    }

    func release(bytes: Int) { lock.withLock { queuedBytes -= bytes } }

    // MARK: The indexer thread

    /// Durable groups for the indexer: at once when someone waits, the store drains or the
    /// backlog is large, else after gathering for `interval` seconds since the last commit;
    /// nil once the writer is done and nothing is left. With `retryAt` (the indexer holds a
    /// failed round to retry) it returns at that time, or at once when the store drains, with
    /// whatever is queued, possibly nothing.
    func takeBacklog(lastCommit: Date, interval: Double, retryAt: Date? = nil) -> [DurableGroup]? {
        lock.lock()
        defer { lock.unlock() }
        if let retryAt {
            while state == .running && Date() < retryAt { _ = lock.wait(until: retryAt) }
            defer { backlog.removeAll() }
            return backlog
        }
        while true {
            if activeRebuildRequested != nil { break }
            let urgent = !indexWaiters.isEmpty || state != .running || backlogSpans > maxIndexBacklogSpans / 4
            if !backlog.isEmpty && (urgent || Date().timeIntervalSince(lastCommit) >= interval) { break }
            if backlog.isEmpty && writerDone {
                indexerDone = true
                finishIfDrained()
                lock.broadcast()
                return nil
            }
            if backlog.isEmpty {
                lock.wait()
            } else {
                _ = lock.wait(until: lastCommit.addingTimeInterval(interval))
            }
        }
        defer { backlog.removeAll() }
        return backlog
    }

    /// The indexer finished `groups`; resumes the queries that waited for them.
    func markIndexed(_ groups: [DurableGroup]) {
        lock.lock()
        indexFailure = nil
        backlogSpans -= groups.reduce(0) { $0 + $1.spans }
        indexedSeq = groups.last?.seq ?? indexedSeq
        let ready = indexWaiters.filter { $0.seq <= indexedSeq }
        indexWaiters.removeAll { $0.seq <= indexedSeq }
        lock.broadcast()
        lock.unlock()
        for w in ready { w.continuation.resume() }
    }

    /// The indexer failed on a round it keeps and retries: the queries waiting for it, and
    /// every query until a round succeeds, answer `failure`.
    func markIndexFailing(_ failure: StorageError) {
        lock.lock()
        indexFailure = failure
        let waiting = indexWaiters
        indexWaiters.removeAll()
        lock.broadcast()
        lock.unlock()
        for w in waiting { w.continuation.resume(throwing: failure) }
    }

    /// The indexer stopped while draining with groups it could not index: the segments keep
    /// them and the next start-up indexes them (the index never recorded them).
    func markIndexerStopped() {
        lock.lock()
        indexerDone = true
        let waiting = indexWaiters
        indexWaiters.removeAll()
        finishIfDrained()
        lock.broadcast()
        lock.unlock()
        for w in waiting {
            if let indexFailure { w.continuation.resume(throwing: indexFailure) } else { w.continuation.resume() }
        }
    }

    /// Asks the indexer to rebuild the active segment's index (a query found it damaged).
    func requestActiveRebuild(segment: Int64) {
        lock.withLock {
            activeRebuildRequested = segment
            lock.broadcast()
        }
    }

    /// The segment whose active index a query asked to rebuild, if any (clearing the request).
    func takeActiveRebuildRequest() -> Int64? {
        lock.withLock {
            defer { activeRebuildRequested = nil }
            return activeRebuildRequested
        }
    }

    /// The indexer's current failure, while it retries.
    var currentIndexFailure: StorageError? { lock.withLock { indexFailure } }

    /// Durable spans the indexer has not indexed yet.
    var unindexedSpans: Int { lock.withLock { backlogSpans } }
    /// Request bytes waiting for the writer.
    var bytesQueued: Int { lock.withLock { queuedBytes } }

    /// Whether the store is draining for shutdown.
    var isDraining: Bool { lock.withLock { state != .running } }

    /// Called under `lock`.
    private func finishIfDrained() {
        guard writerDone && indexerDone else { return }
        let waiters = closeWaiters
        closeWaiters.removeAll()
        for w in waiters { w.resume() }
    }
}
