import FlightRecorderOTLP
import FlightRecorderQuery
import FlightRecorderTesting
import Foundation
import Testing

@testable import FlightRecorderStorage

/// Damaged bytes in segments and indexes, made while the store is closed: each is found,
/// reported once (log, `DamageLog`, `health`), contained (the intact spans answer), and never
/// turns an acknowledged run into "no such run".
extension SpanStoreTests {
    func multiSegment(_ dir: TemporaryDirectory) -> StoreConfiguration {
        var c = configuration(dir)
        c.segmentBytes = 2048
        c.blockBytes = 512
        return c
    }

    func flip(_ path: String, at offset: Int) throws {
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[offset] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// Every page of an index but the first (which names the file a database) overwritten, as
    /// a failing disk might: it opens, and its first real read fails.
    func overwritePagesAfterTheFirst(of path: String) throws {
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        for i in 4096..<bytes.count { bytes[i] = 0x41 }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    func fill(_ store: SpanStore, runs: ClosedRange<UInt8>) async throws {
        for t in runs { try await store.append(batch(trace: t, spans: 1...20, run: "run-\(t)", runOn: 1)) }
    }

    @Test func aFlippedByteInASealedSegmentIsReportedOnceAndTheRunAnswersWithAWarning() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = multiSegment(dir)
        var store = try SpanStore(configuration: config, logger: logger)
        try await fill(store, runs: 1...12)
        await store.close()
        let first = try #require(dir.segmentFiles(config.directory).first)
        try flip(first, at: SegmentFile.headerSize + 60)  // inside the first block: run-1's spans
        store = try SpanStore(configuration: config, logger: logger)
        // The run is known: its intact spans (none here) and a warning naming the damage.
        let detail = try #require(try await store.run("run-1"))
        #expect(detail.spans.isEmpty)
        #expect(detail.warnings.contains { $0.contains("segment 1") && $0.contains("byte 16") })
        #expect(detail.summary.damaged)
        let id = try #require(RequestBuilder.traceID(1).withUnsafeBytes { TraceID(bytes: $0) })
        let trace = try await store.trace(id)
        #expect(trace.spans.isEmpty && !trace.warnings.isEmpty)
        // Reported once however often it is read, and flagged in the run list.
        _ = try await store.run("run-1")
        #expect(store.damage.count == 1)
        #expect(store.health.damagedRegions.map(\.segment) == [1])
        let runs = try await store.listRuns(limit: 100)
        #expect(runs.filter(\.damaged).map(\.runID) == ["run-1"])
        for t in UInt8(2)...12 { #expect(try await store.run("run-\(t)")?.spans.count == 20) }
        await store.close()
        // A restart remembers the region and flags the run again.
        store = try SpanStore(configuration: config, logger: logger)
        #expect(store.damage.count == 1)
        #expect(try await store.listRuns(limit: 100).filter(\.damaged).map(\.runID) == ["run-1"])
        await store.close()
    }

    @Test func checkReportsEachDamagedRegionOfflineAndNothingOnAHealthyStore() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = multiSegment(dir)
        let store = try SpanStore(configuration: config, logger: logger)
        try await fill(store, runs: 1...12)
        await store.close()
        let clean = try StoreCheck.run(configuration: config)
        #expect(clean.findings.isEmpty)
        #expect(clean.segments > 2 && clean.blocks > 10)
        let files = dir.segmentFiles(config.directory)
        try flip(files[0], at: SegmentFile.headerSize + 60)
        try flip(files[1], at: 2)
        let size = try FileManager.default.attributesOfItem(atPath: files[2])[.size] as! Int
        #expect(truncate(files[2], off_t(size - 30)) == 0)
        let found = try StoreCheck.run(configuration: config).findings.map(\.description)
        #expect(found.count == 4, "\(found)")
        #expect(found.contains { $0.hasPrefix("segments/segment-000000000001.frs at byte 16") })
        #expect(found.contains { $0.contains("segment-000000000002.frs at byte 0") && $0.contains("header") })
        #expect(found.contains { $0.contains("segment-000000000003.frs") && $0.contains("truncated") })
    }

    @Test func aTruncatedActiveSegmentIsFoundAtStartUpAndAppendsResumeOnABlockBoundary() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var config = configuration(dir)
        config.blockBytes = 512
        var store = try SpanStore(configuration: config, logger: logger)
        try await fill(store, runs: 1...6)
        #expect(try await store.run("run-6")?.spans.count == 20)
        await store.close()
        let segment = try #require(dir.segmentFiles(config.directory).last)
        let size = try FileManager.default.attributesOfItem(atPath: segment)[.size] as! Int
        #expect(truncate(segment, off_t(size - 100)) == 0)  // mid-block: the last run loses its block
        store = try SpanStore(configuration: config, logger: logger)
        #expect(store.damage.regions.contains { $0.reason.contains("shorter than its index") })
        let lost = try #require(try await store.run("run-6"))
        #expect(lost.summary.damaged && !lost.warnings.isEmpty)
        for t in UInt8(1)...5 { #expect(try await store.run("run-\(t)")?.spans.count == 20) }
        try await store.append(batch(trace: 9, spans: 1...5, run: "run-9", runOn: 1))
        #expect(try await store.run("run-9")?.spans.count == 5)
        await store.close()
        store = try SpanStore(configuration: config, logger: logger)
        #expect(store.recoveryReport.corruptBytes == 0)
        #expect(try await store.run("run-9")?.spans.count == 5)
        for t in UInt8(1)...5 { #expect(try await store.run("run-\(t)")?.spans.count == 20) }
        await store.close()
    }

    @Test func aTruncatedSealedSegmentIsFoundAtStartUpAndItsIndexRebuilt() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = multiSegment(dir)
        var store = try SpanStore(configuration: config, logger: logger)
        try await fill(store, runs: 1...12)
        await store.close()
        let first = try #require(dir.segmentFiles(config.directory).first)
        let size = try FileManager.default.attributesOfItem(atPath: first)[.size] as! Int
        #expect(truncate(first, off_t(size - 50)) == 0)
        store = try SpanStore(configuration: config, logger: logger)
        let region = try #require(store.damage.regions.first)
        #expect(region.segment == 1 && region.offset == size - 50 && region.length == 50)
        let runs = try await store.listRuns(limit: 100)
        #expect(runs.count == 12)
        let lost = runs.filter(\.damaged)
        #expect(lost.count == 1)
        // The run is known, with a warning for the lost block; the others read whole.
        for run in runs {
            let detail = try #require(try await store.run(run.runID))
            #expect(detail.warnings.isEmpty == !run.damaged)
            if !run.damaged { #expect(detail.spans.count == 20) }
        }
        await store.close()
    }

    @Test func aDamagedSegmentHeaderIsReportedAndItsBlocksStillRead() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = multiSegment(dir)
        var store = try SpanStore(configuration: config, logger: logger)
        try await fill(store, runs: 1...12)
        await store.close()
        let first = try #require(dir.segmentFiles(config.directory).first)
        try flip(first, at: 3)
        store = try SpanStore(configuration: config, logger: logger)
        // Sealed segments are verified on a thread of their own after start-up.
        let deadline = ContinuousClock.now + .seconds(10)
        while store.damage.count == 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(store.damage.regions.map(\.reason) == ["segment header damaged"])
        for t in UInt8(1)...12 { #expect(try await store.run("run-\(t)")?.spans.count == 20) }
        await store.close()
    }

    @Test(arguments: ["header", "pages"])
    func aDamagedIndexIsMovedAsideAndRebuiltFromItsSegment(_ damage: String) async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = multiSegment(dir)
        var store = try SpanStore(configuration: config, logger: logger)
        try await fill(store, runs: 1...12)
        let counts = try await store.indexCounts()
        await store.close()
        let segments = config.segmentDirectory
        let indexes = try FileManager.default.contentsOfDirectory(atPath: segments).filter { $0.hasSuffix(".idx") }
            .sorted()
        // The last (active) segment's index, and a sealed one.
        for name in [indexes.last!, indexes.first!] {
            let path = segments + "/" + name
            var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
            if damage == "header" {
                for i in 0..<100 { bytes[i] = 0x41 }
            } else {
                for i in 4096..<min(bytes.count, 4096 * 3) { bytes[i] = 0x41 }
            }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
        }
        store = try SpanStore(configuration: config, logger: logger)
        // The sealed one is rebuilt once the store is up (queries answer indexBehind until then).
        for t in UInt8(1)...12 { #expect(try await eventually { try await store.run("run-\(t)") }?.spans.count == 20) }
        #expect(try await store.indexCounts() == counts)
        await store.close()
        // Rebuilt for good: a restart reads it as any sealed index.
        store = try SpanStore(configuration: config, logger: logger)
        #expect(store.recoveryReport.deferredRepairs.isEmpty && store.recoveryReport.scannedSegments == 0)
        #expect(try await store.indexCounts() == counts)
        func stem(_ name: String) -> String { String(name.prefix { $0 != "." }) }
        let aside = try FileManager.default.contentsOfDirectory(atPath: segments).filter { $0.contains(".damaged-") }
        let expected: Set<String> = [stem(indexes.first!), stem(indexes.last!)]
        #expect(Set(aside.map(stem)) == expected)
        await store.close()
    }

    @Test func aSealedIndexDamagedWhileRunningIsRebuiltOnlineAndIngestGoesOn() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = multiSegment(dir)
        var store = try SpanStore(configuration: config, logger: logger)
        try await fill(store, runs: 1...12)
        let counts = try await store.indexCounts()
        await store.close()
        store = try SpanStore(configuration: config, logger: logger)
        // Every page but the first of segment 1's index, overwritten under the running store.
        try overwritePagesAfterTheFirst(of: IndexSchema.path(config.segmentDirectory, 1))
        var answered503 = false
        do {
            _ = try await store.listRuns(limit: 100)
        } catch let e as StorageError {
            #expect(e.isIndexBehind && e.message.contains("segment 1"))
            answered503 = true
        }
        #expect(answered503)
        try await store.append(batch(trace: 40, spans: 1...5, run: "run-40", runOn: 1))
        #expect(try await eventually { try await store.run("run-1") }?.spans.count == 20)
        #expect(try await store.listRuns(limit: 100).count == 13)
        for t in UInt8(1)...12 { #expect(try await store.run("run-\(t)")?.spans.count == 20) }
        let aside = try FileManager.default.contentsOfDirectory(atPath: config.segmentDirectory)
        #expect(aside.contains { $0.hasPrefix("segment-000000000001.idx.damaged-") })
        await store.close()
        store = try SpanStore(configuration: config, logger: logger)
        var after = try await store.indexCounts()
        after["traces"]! -= 1  // run-40's trace
        #expect(after["traces"] == counts["traces"])
        #expect(try await store.run("run-40")?.spans.count == 5)
        await store.close()
    }

    @Test func aFlippedByteInTheActiveSegmentIsReportedAndAppendsGoOn() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var config = configuration(dir)
        config.blockBytes = 512
        var store = try SpanStore(configuration: config, logger: logger)
        try await fill(store, runs: 1...6)
        await store.close()
        let segment = try #require(dir.segmentFiles(config.directory).last)
        #expect(dir.segmentFiles(config.directory).count == 1)
        try flip(segment, at: SegmentFile.headerSize + 60)  // run-1's block, in the active segment
        store = try SpanStore(configuration: config, logger: logger)
        let detail = try #require(try await store.run("run-1"))
        #expect(detail.summary.damaged && !detail.warnings.isEmpty)
        try await store.append(batch(trace: 9, spans: 1...5, run: "run-9", runOn: 1))
        #expect(try await store.run("run-9")?.spans.count == 5)
        for t in UInt8(2)...6 { #expect(try await store.run("run-\(t)")?.spans.count == 20) }
        #expect(store.damage.count == 1)
        await store.close()
    }

    @Test func theIndexerGoesOnWhileAnOlderIndexItNeedsIsRebuilt() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = multiSegment(dir)
        var store = try SpanStore(configuration: config, logger: logger)
        try await fill(store, runs: 1...12)
        await store.close()
        store = try SpanStore(configuration: config, logger: logger)
        try overwritePagesAfterTheFirst(of: IndexSchema.path(config.segmentDirectory, 1))
        // run-1 continues in a new trace: indexing it asks segment 1's damaged index.
        try await store.append(batch(trace: 50, spans: 1...5, run: "run-1"))
        for t in UInt8(51)...55 { try await store.append(batch(trace: t, spans: 1...5, run: "run-\(t)", runOn: 1)) }
        let run = try #require(try await eventually { try await store.run("run-1") })
        #expect(run.spans.count == 25)
        for t in UInt8(51)...55 { #expect(try await store.run("run-\(t)")?.spans.count == 5) }
        await store.close()
        store = try SpanStore(configuration: config, logger: logger)
        #expect(try await store.run("run-1")?.spans.count == 25)
        await store.close()
    }
}
