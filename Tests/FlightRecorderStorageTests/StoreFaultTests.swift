import FlightRecorderQuery
import FlightRecorderTesting
import Foundation
import Testing

@testable import FlightRecorderStorage

#if canImport(Glibc)
import Glibc
#endif

/// Faults injected into the store's file operations (`FaultInjection`), each under its own
/// test's directory: a full disk or an I/O error while indexing, rolling or sealing a segment.
/// Every test asserts that each acknowledged span is readable, live and after a restart.
extension SpanStoreTests {
    /// Retries `body` while the store answers that the index is behind; fails on anything else.
    func eventually<T>(_ body: () async throws -> T) async throws -> T {
        let deadline = ContinuousClock.now + .seconds(20)
        while true {
            do {
                return try await body()
            } catch let e as StorageError where e.isIndexBehind && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    @Test func aFailingIndexAnswersIndexBehindThenCatchesUpWithoutSkippingABlock() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = configuration(dir)
        var store = try SpanStore(configuration: config, logger: logger)
        try await store.append(batch(trace: 1, spans: 1...5, run: "run-1", runOn: 1))
        #expect(try await store.run("run-1")?.spans.count == 5)
        FaultInjection.arm(.indexCommit, errno: ENOSPC, times: 4, under: config.directory)
        defer { FaultInjection.disarm(under: config.directory) }
        try await store.append(batch(trace: 2, spans: 1...5, run: "run-2", runOn: 1))
        // The spans are acknowledged; while the index fails, a query says so instead of
        // answering without them.
        var sawBehind = false
        do {
            _ = try await store.run("run-2")
        } catch let e as StorageError {
            #expect(e.isIndexBehind)
            #expect(e.message.contains("not indexed yet"))
            sawBehind = true
        }
        #expect(sawBehind)
        try await store.append(batch(trace: 3, spans: 1...5, run: "run-3", runOn: 1))
        for n in 1...3 { #expect(try await eventually { try await store.run("run-\(n)") }?.spans.count == 5) }
        await store.close()
        store = try SpanStore(configuration: config, logger: logger)
        for n in 1...3 { #expect(try await store.run("run-\(n)")?.spans.count == 5) }
        #expect(try await store.listRuns().count == 3)
        await store.close()
    }

    @Test func spansAcknowledgedWhileTheIndexStillFailsAtShutdownAreIndexedAtTheNextStart() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = configuration(dir)
        var store = try SpanStore(configuration: config, logger: logger)
        try await store.append(batch(trace: 1, spans: 1...5, run: "run-1", runOn: 1))
        #expect(try await store.run("run-1")?.spans.count == 5)
        FaultInjection.arm(.indexCommit, errno: ENOSPC, under: config.directory)
        for t in UInt8(2)...4 { try await store.append(batch(trace: t, spans: 1...5, run: "run-\(t)", runOn: 1)) }
        await store.close()
        FaultInjection.disarm(under: config.directory)
        store = try SpanStore(configuration: config, logger: logger)
        #expect(store.recoveryReport.indexedSpans == 15)
        for n in 1...4 { #expect(try await store.run("run-\(n)")?.spans.count == 5) }
        await store.close()
    }

    @Test func aRestartOnAStillFullDiskServesAndCatchesTheIndexUpOnceItCan() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = configuration(dir)
        var store = try SpanStore(configuration: config, logger: logger)
        try await store.append(batch(trace: 1, spans: 1...5, run: "run-1", runOn: 1))
        #expect(try await store.run("run-1")?.spans.count == 5)
        FaultInjection.arm(.indexCommit, errno: ENOSPC, under: config.directory)
        defer { FaultInjection.disarm(under: config.directory) }
        for t in UInt8(2)...3 { try await store.append(batch(trace: t, spans: 1...5, run: "run-\(t)", runOn: 1)) }
        await store.close()
        // The index still cannot be written: the store opens anyway and says what is missing.
        store = try SpanStore(configuration: config, logger: logger)
        #expect(store.recoveryReport.pendingSegments == [1])
        await #expect(throws: StorageError.self) { _ = try await store.run("run-2") }
        try await store.append(batch(trace: 4, spans: 1...5, run: "run-4", runOn: 1))
        FaultInjection.disarm(under: config.directory)
        for t in 1...4 { #expect(try await eventually { try await store.run("run-\(t)") }?.spans.count == 5) }
        await store.close()
        store = try SpanStore(configuration: config, logger: logger)
        #expect(store.recoveryReport.scannedSegments == 0)
        for t in 1...4 { #expect(try await store.run("run-\(t)")?.spans.count == 5) }
        await store.close()
    }

    @Test func aFullBacklogWhileTheIndexFailsRefusesRequestsAndShutdownDoesNotHang() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var config = configuration(dir)
        config.maxIndexBacklogSpans = 30
        var store = try SpanStore(configuration: config, logger: logger)
        FaultInjection.arm(.indexCommit, errno: ENOSPC, under: config.directory)
        defer { FaultInjection.disarm(under: config.directory) }
        var acknowledged: [UInt8] = []
        var refused = 0
        for t in UInt8(1)...12 {
            do {
                try await store.append(batch(trace: t, spans: 1...10, run: "run-\(t)", runOn: 1))
                acknowledged.append(t)
            } catch let e as StorageError {
                #expect(e.isRetryable)
                refused += 1
            }
        }
        #expect(refused > 0 && acknowledged.count >= 3)
        // A request that arrives while the writer waits for the failing index is answered at
        // once, not held until the index recovers (a listener's graceful shutdown waits for
        // it, and the store would never be asked to drain).
        let started = ContinuousClock.now
        await #expect(throws: StorageError.self) {
            try await store.append(self.batch(trace: 40, spans: 1...10, run: "run-40", runOn: 1))
        }
        #expect(ContinuousClock.now - started < .seconds(5))
        await store.close()
        FaultInjection.disarm(under: config.directory)
        store = try SpanStore(configuration: config, logger: logger)
        for t in acknowledged { #expect(try await store.run("run-\(t)")?.spans.count == 10) }
        await store.close()
    }

    @Test func aSegmentRollThatCannotCreateTheNextFileChangesNothingAndIsRetried() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = smallSegments(dir)
        var store = try SpanStore(configuration: config, logger: logger)
        try await store.append(batch(trace: 1, spans: 1...10, run: "run-1", runOn: 1))
        let before = dir.segmentFiles(config.directory)
        FaultInjection.arm(.segmentCreate, errno: ENOSPC, times: 2, under: config.directory)
        defer { FaultInjection.disarm(under: config.directory) }
        var refused = 0
        var acknowledged: [UInt8] = [1]
        for t in UInt8(2)...12 {
            do {
                try await store.append(batch(trace: t, spans: 1...10, run: "run-\(t)", runOn: 1))
                acknowledged.append(t)
            } catch let e as StorageError {
                #expect(e.isRetryable)
                #expect(e.message.contains("No space left on device"))
                refused += 1
                // Nothing new on disk: no empty or half-made segment file.
                #expect(dir.segmentFiles(config.directory) == before)
            }
        }
        #expect(refused == 2)
        #expect(acknowledged.count == 10)
        for path in dir.segmentFiles(config.directory) {
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
            #expect(Array(bytes.prefix(8)) == Array("FRSEG001".utf8), "\(path) has no segment header")
        }
        for t in acknowledged { #expect(try await store.run("run-\(t)")?.spans.count == 10) }
        await store.close()
        store = try SpanStore(configuration: config, logger: logger)
        for t in acknowledged { #expect(try await store.run("run-\(t)")?.spans.count == 10) }
        await store.close()
    }

    @Test func aSealThatFailsAfterItsCommitIsFinishedOnRetry() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = smallSegments(dir)
        FaultInjection.arm(.indexSeal, errno: ENOSPC, times: 3, under: config.directory)
        defer { FaultInjection.disarm(under: config.directory) }
        var store = try SpanStore(configuration: config, logger: logger)
        for t in UInt8(1)...12 { try await store.append(batch(trace: t, spans: 1...10, run: "run-\(t)", runOn: 1)) }
        for t in UInt8(1)...12 { #expect(try await eventually { try await store.run("run-\(t)") }?.spans.count == 10) }
        let counts = try await store.indexCounts()
        await store.close()
        store = try SpanStore(configuration: config, logger: logger)
        #expect(try await store.indexCounts() == counts)
        for t in UInt8(1)...12 { #expect(try await store.run("run-\(t)")?.spans.count == 10) }
        await store.close()
    }

    @Test func aFailedFsyncIsRefusedAndTheNextGroupIsReadable() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = configuration(dir)
        let store = try SpanStore(configuration: config, logger: logger)
        FaultInjection.arm(.segmentSync, errno: EIO, times: 1, under: config.directory)
        await #expect(throws: StorageError.self) {
            try await store.append(batch(trace: 1, spans: 1...5, run: "run-1", runOn: 1))
        }
        try await store.append(batch(trace: 2, spans: 1...5, run: "run-2", runOn: 1))
        #expect(try await store.run("run-2")?.spans.count == 5)
        await store.close()
    }
}
