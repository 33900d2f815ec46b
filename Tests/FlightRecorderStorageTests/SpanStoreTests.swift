import FlightRecorderIngest
import FlightRecorderOTLP
import FlightRecorderQuery
import FlightRecorderSQLite
import FlightRecorderTesting
import Foundation
import Logging
import Testing

@testable import FlightRecorderStorage

@Suite struct SpanStoreTests {
    let logger = Logger(label: "test")
    let decoder = ExportRequestDecoder()

    func configuration(_ dir: TemporaryDirectory) -> StoreConfiguration {
        var c = StoreConfiguration(directory: dir.path + "/data")
        c.segmentBytes = 64 << 10
        c.blockBytes = 8 << 10
        return c
    }

    /// 1 KiB segments of 512-byte blocks: a few appends seal a segment.
    func smallSegments(_ dir: TemporaryDirectory) -> StoreConfiguration {
        var c = configuration(dir)
        c.segmentBytes = 1 << 10
        c.blockBytes = 512
        return c
    }

    func batch(
        trace: UInt8, spans: ClosedRange<UInt8>, run: String? = nil, runOn: UInt8? = nil, parent: UInt8? = nil
    )
        throws -> IngestBatch
    {
        let list = spans.map { n in
            TestSpan(
                trace: RequestBuilder.traceID(trace), span: RequestBuilder.spanID(n, trace),
                parent: parent.map { RequestBuilder.spanID($0, trace) } ?? [], name: "step-\(n)",
                start: UInt64(n) * 1_000, end: UInt64(n) * 1_000 + 500,
                attributes: (run != nil && (runOn == nil || runOn == n)) ? [("agent.run.id", .string(run!))] : [],
                statusCode: n == 3 ? 2 : 0)
        }
        return try decoder.decode(RequestBuilder.request(spans: list))
    }

    @Test func appendThenReadRunBack() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let store = try SpanStore(configuration: configuration(dir), logger: logger)
        try await store.append(batch(trace: 1, spans: 1...5, run: "run-a", runOn: 1))
        let detail = try #require(try await store.run("run-a"))
        #expect(detail.summary.spanCount == 5)
        #expect(detail.summary.errorCount == 1)
        #expect(detail.summary.traceCount == 1)
        #expect(detail.spans.map(\.name) == ["step-1", "step-2", "step-3", "step-4", "step-5"])
        #expect(try await store.run("no-such-run") == nil)
        await store.close()
    }

    @Test func unnamedSpansJoinTheirTraceRunWhateverTheArrivalOrder() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let store = try SpanStore(configuration: configuration(dir), logger: logger)
        // Children first, with no run key: listed under the trace ID.
        try await store.append(batch(trace: 7, spans: 2...4, parent: 1))
        let provisional = RequestBuilder.traceID(7).map { String(format: "%02x", $0) }.joined()
        let before = try await store.listRuns()
        #expect(before.map(\.runID) == [provisional])
        #expect(before.first?.provisional == true)
        // The root arrives last, naming the run: everything moves under it.
        try await store.append(batch(trace: 7, spans: 1...1, run: "run-late"))
        let after = try await store.listRuns()
        #expect(after.map(\.runID) == ["run-late"])
        #expect(after.first?.spanCount == 4)
        #expect(after.first?.provisional == false)
        let detail = try #require(try await store.run("run-late"))
        #expect(detail.spans.count == 4)
        // The old trace-ID name still resolves, to the named run.
        #expect(try await store.run(provisional)?.summary.runID == "run-late")
        await store.close()
    }

    /// Runs whose spans land in several segments read back whole: totals summed over the
    /// segments, a trace named only after its first segment sealed moves under the named run
    /// (and its provisional name disappears from the list), and a restart and a reindex
    /// agree with the live index.
    @Test(arguments: [64, 2]) func runsAcrossSealedSegmentsReadBackWhole(openIndexes: Int) async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var config = smallSegments(dir)
        config.maxOpenSegmentIndexes = openIndexes  // 2: connections are closed and reopened
        var store = try SpanStore(configuration: config, logger: logger)
        // Trace 9's children arrive first, unnamed; the root naming the run comes segments later.
        try await store.append(batch(trace: 9, spans: 2...6, parent: 1))
        for round in 0..<6 {
            for t in UInt8(1)...4 {
                let first = UInt8(round * 10 + 1)
                try await store.append(batch(trace: t, spans: first...(first + 9), run: "run-\(t)", runOn: first))
            }
        }
        try await store.append(batch(trace: 9, spans: 1...1, run: "run-late"))
        let segments = SegmentFile.list(config.segmentDirectory)
        #expect(segments.count > 3)
        func check(_ store: SpanStore) async throws {
            let runs = try await store.listRuns(limit: 100)
            #expect(Set(runs.map(\.runID)) == ["run-1", "run-2", "run-3", "run-4", "run-late"])
            for t in 1...4 {
                let r = try #require(try await store.run("run-\(t)"))
                #expect(r.summary.spanCount == 60 && r.summary.traceCount == 1 && r.spans.count == 60)
                #expect(r.summary.errorCount == 1)
            }
            let late = try #require(try await store.run("run-late"))
            #expect(late.summary.spanCount == 6 && late.spans.count == 6 && !late.summary.provisional)
            let provisional = RequestBuilder.traceID(9).map { String(format: "%02x", $0) }.joined()
            #expect(try await store.run(provisional)?.summary.runID == "run-late")
            #expect(runs.first { $0.runID == "run-late" }?.spanCount == 6)
            // Read in one batch (the run analyser's way, each block decoded once), every run is
            // what reading it alone gives.
            let names = (1...4).map { "run-\($0)" } + ["run-late", "no-such-run"]
            let batched = try await store.runs(names.map { (tenant: ResourceFacts.defaultTenant, run: $0) })
            #expect(batched.count == names.count && batched.last! == nil)
            for (name, detail) in zip(names.dropLast(), batched) {
                let alone = try #require(try await store.run(name))
                #expect(
                    detail?.summary.runID == alone.summary.runID && detail?.summary.spanCount == alone.summary.spanCount
                )
                #expect(detail?.spans.map(\.spanID) == alone.spans.map(\.spanID))
            }
            // Through the background reader (the analyser's low-priority thread), the same.
            let background = try store.runsInBackground(
                names.map { (tenant: ResourceFacts.defaultTenant, run: $0) })
            #expect(background.count == names.count && background.last! == nil)
            for (detail, other) in zip(batched, background) {
                #expect(detail?.spans.map(\.spanID) == other?.spans.map(\.spanID))
            }
            #expect(try store.runInBackground("run-late", scope: .all)?.spans.count == 6)
        }
        try await check(store)
        let live = try await store.indexCounts()
        await store.close()
        store = try SpanStore(configuration: config, logger: logger)
        #expect(store.recoveryReport.scannedSegments == 0)
        try await check(store)
        await store.close()
        _ = try Reindexer.rebuild(configuration: config, logger: logger)
        store = try SpanStore(configuration: config, logger: logger)
        try await check(store)
        #expect(try await store.indexCounts() == live)
        await store.close()
    }

    /// Spans of a trace whose run was named dozens of segments earlier join that run, both
    /// while the indexer extends its key groups and after a restart rebuilds them: a group's
    /// "no" skips its segments, its "maybe" falls back to their own filters.
    @Test func lateSpansFindARunNamedManySegmentsEarlierThroughKeyGroups() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = smallSegments(dir)
        var store = try SpanStore(configuration: config, logger: logger)
        try await store.append(batch(trace: 200, spans: 1...1, run: "run-early"))
        for t in UInt8(1)...150 { try await store.append(batch(trace: t, spans: 1...8, run: "run-\(t)", runOn: 1)) }
        try await store.append(batch(trace: 200, spans: 2...4, parent: 1))
        #expect(try await store.run("run-early")?.summary.spanCount == 4)
        let live = await store.keyGroups()
        #expect(live.count >= 2 && live.allSatisfy { $0.count <= 16 }, "\(live)")
        await store.close()

        store = try SpanStore(configuration: config, logger: logger)
        let rebuilt = await store.keyGroups()
        let sealed = Int64(SegmentFile.list(config.segmentDirectory).count - 1)
        #expect(rebuilt.first?.first == 1 && rebuilt.contains { $0.contains(sealed) })
        try await store.append(batch(trace: 200, spans: 5...6, parent: 1))
        for t in UInt8(1)...150 { try await store.append(batch(trace: t, spans: 9...10, parent: 1)) }
        let early = try #require(try await store.run("run-early"))
        #expect(early.summary.spanCount == 6 && early.spans.count == 6)
        for t in [1, 75, 150] { #expect(try await store.run("run-\(t)")?.summary.spanCount == 10) }
        #expect(try await store.listRuns(limit: 200).count == 151)
        await store.close()
    }

    /// Indexed values are found in sealed segments (whose values are rewritten as pages) and
    /// in the active one alike: lookups by an external ID, and searches on two values.
    @Test func indexedValuesAreFoundInSealedAndActiveSegments() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = smallSegments(dir)
        let store = try SpanStore(configuration: config, logger: logger)
        for t in UInt8(1)...40 {
            let spans = (UInt8(1)...3).map { n in
                TestSpan(
                    trace: RequestBuilder.traceID(t), span: RequestBuilder.spanID(n, t), parent: [], name: "step-\(n)",
                    start: UInt64(t) * 10_000 + UInt64(n), end: UInt64(t) * 10_000 + 100,
                    attributes: [
                        ("agent.run.id", .string("run-\(t)")), ("operation.id", .string("op-\(t)-\(n)")),
                        ("gen_ai.tool.name", .string(t % 2 == 0 ? "even" : "odd")),
                        ("policy.outcome", .string(t % 5 == 0 ? "blocked" : "allowed")),
                    ], statusCode: 0)
            }
            try await store.append(decoder.decode(RequestBuilder.request(spans: spans)))
        }
        #expect(SegmentFile.list(config.segmentDirectory).count > 3)
        for t in [1, 17, 40] {
            let found = try await store.lookup(key: "operation.id", value: "op-\(t)-2", scope: .all)
            #expect(found.map(\.runID) == ["run-\(t)"] && found.first?.span.name == "step-2")
        }
        #expect(try await store.lookup(key: "operation.id", value: "op-99-1", scope: .all).isEmpty)
        let hits = try await store.search(
            narrow: [("gen_ai.tool.name", "even"), ("policy.outcome", "blocked")], scope: .all, since: nil, until: nil,
            limit: 100, filter: nil)
        #expect(Set(hits.hits.map(\.run.runID)) == ["run-10", "run-20", "run-30", "run-40"])
        #expect(hits.complete)
        await store.close()
    }

    /// Each sealed segment gets an attribute filter; a lookup finds the same spans with the
    /// filters, and with one damaged and one missing, which are rebuilt from their pages.
    @Test func lookupsAreTheSameWithDamagedOrMissingAttributeFilters() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = smallSegments(dir)
        var store = try SpanStore(configuration: config, logger: logger)
        for t in UInt8(1)...30 {
            let spans = (UInt8(1)...2).map { n in
                TestSpan(
                    trace: RequestBuilder.traceID(t), span: RequestBuilder.spanID(n, t), name: "step-\(n)",
                    start: UInt64(t) * 10_000 + UInt64(n), end: UInt64(t) * 10_000 + 100,
                    attributes: [("agent.run.id", .string("run-\(t)")), ("operation.id", .string("op-\(t)-\(n)"))])
            }
            try await store.append(decoder.decode(RequestBuilder.request(spans: spans)))
        }
        func found() async throws -> [String] {
            var out: [String] = []
            for t in 1...30 {
                out += try await store.lookup(key: "operation.id", value: "op-\(t)-2", scope: .all).map(\.runID)
            }
            #expect(try await store.lookup(key: "operation.id", value: "op-31-1", scope: .all).isEmpty)
            return out
        }
        let expected = (1...30).map { "run-\($0)" }
        #expect(try await found() == expected)
        await store.close()
        let segments = SegmentFile.list(config.segmentDirectory)
        let filters = segments.dropLast().map {
            IndexSchema.attributeFilterPath(IndexSchema.path(config.segmentDirectory, $0))
        }
        #expect(filters.count > 3)
        #expect(filters.allSatisfy { access($0, R_OK) == 0 })
        #expect(filters.allSatisfy { AttributeFilterFile(path: $0) != nil })

        let damaged = filters[1]
        var bytes = try Data(contentsOf: URL(fileURLWithPath: damaged))
        bytes[bytes.count - 1] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: damaged))
        unlink(filters[2])
        store = try SpanStore(configuration: config, logger: logger)
        #expect(try await found() == expected)
        // Both were rebuilt from their segments' pages.
        #expect(filters.allSatisfy { AttributeFilterFile(path: $0) != nil })
        await store.close()
    }

    /// The active segment's attribute rows live in memory and in its attribute log: a restart
    /// reloads them, and a log that was lost or cut short has the index rebuilt from the segment.
    @Test func activeSegmentValuesSurviveARestartAndALostAttributeLog() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = configuration(dir)
        func fill(_ store: SpanStore, _ traces: ClosedRange<UInt8>) async throws {
            for t in traces {
                let spans = (UInt8(1)...2).map { n in
                    TestSpan(
                        trace: RequestBuilder.traceID(t), span: RequestBuilder.spanID(n, t), name: "step-\(n)",
                        start: UInt64(t) * 10_000 + UInt64(n), end: UInt64(t) * 10_000 + 100,
                        attributes: [("agent.run.id", .string("run-\(t)")), ("operation.id", .string("op-\(t)-\(n)"))])
                }
                try await store.append(decoder.decode(RequestBuilder.request(spans: spans)))
            }
        }
        func found(_ store: SpanStore, _ t: Int) async throws -> [String] {
            try await store.lookup(key: "operation.id", value: "op-\(t)-2", scope: .all).map(\.runID)
        }
        var store = try SpanStore(configuration: config, logger: logger)
        try await fill(store, 1...10)
        #expect(try await found(store, 3) == ["run-3"])
        await store.close()
        let segments = SegmentFile.list(config.segmentDirectory)
        #expect(segments.count == 1)
        let log = IndexSchema.attributesPath(IndexSchema.path(config.segmentDirectory, segments[0]))
        #expect(SegmentFile.fileSize(path: log) > 0)

        store = try SpanStore(configuration: config, logger: logger)
        #expect(try await found(store, 3) == ["run-3"])
        try await fill(store, 11...12)
        #expect(try await found(store, 12) == ["run-12"])
        await store.close()

        // Cut short: more committed than the log holds.
        #expect(truncate(log, off_t(SegmentFile.fileSize(path: log) - 5)) == 0)
        store = try SpanStore(configuration: config, logger: logger)
        #expect(store.recoveryReport.scannedSegments == 1)
        for t in [1, 7, 12] { #expect(try await found(store, t) == ["run-\(t)"]) }
        await store.close()

        unlink(log)
        store = try SpanStore(configuration: config, logger: logger)
        for t in [1, 7, 12] { #expect(try await found(store, t) == ["run-\(t)"]) }
        #expect(try await found(store, 99).isEmpty)
        await store.close()
    }

    /// A value hundreds of traces share is read with one pass over the traces table; the
    /// answer is the same as with a probe per trace.
    @Test func aCommonValueInTheActiveSegmentFindsEveryTrace() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let store = try SpanStore(configuration: configuration(dir), logger: logger)
        for t in 1...600 {
            let spans = [
                TestSpan(
                    trace: RequestBuilder.traceID(UInt8(t % 256), UInt8(t / 256 + 1)), span: RequestBuilder.spanID(1),
                    name: "step", start: UInt64(t) * 1_000, end: UInt64(t) * 1_000 + 10,
                    attributes: [
                        ("agent.run.id", .string("run-\(t)")),
                        ("gen_ai.tool.name", .string(t % 3 == 0 ? "three" : "other")),
                        ("policy.outcome", .string(t % 5 == 0 ? "blocked" : "allowed")),
                    ])
            ]
            try await store.append(decoder.decode(RequestBuilder.request(spans: spans)))
        }
        let hits = try await store.search(
            narrow: [("policy.outcome", "allowed")], scope: .all, since: nil, until: nil, limit: 1_000, filter: nil)
        let expected = Set((1...600).filter { $0 % 5 != 0 }.map { "run-\($0)" })
        #expect(expected.count > 256)
        #expect(Set(hits.hits.map(\.run.runID)) == expected && hits.complete)
        let both = try await store.search(
            narrow: [("gen_ai.tool.name", "three"), ("policy.outcome", "blocked")], scope: .all, since: nil,
            until: nil, limit: 1_000, filter: nil)
        #expect(Set(both.hits.map(\.run.runID)) == Set((1...600).filter { $0 % 15 == 0 }.map { "run-\($0)" }))
        await store.close()
    }

    /// The run list pages newest first across segments, whatever order the runs arrived in,
    /// and a window by start applies to the run's start.
    @Test func runListPagesNewestFirstAcrossSegments() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var config = configuration(dir)
        config.segmentBytes = 256
        config.blockBytes = 512
        let store = try SpanStore(configuration: config, logger: logger)
        // Starts in a shuffled order, so newer segments do not always hold newer runs.
        let order = [7, 2, 9, 4, 1, 8, 3, 10, 6, 5, 12, 11]
        for (i, t) in order.enumerated() {
            let spans = (UInt8(1)...3).map { n in
                TestSpan(
                    trace: RequestBuilder.traceID(UInt8(i + 1)), span: RequestBuilder.spanID(n, UInt8(i + 1)),
                    parent: [],
                    name: "s", start: UInt64(t) * 1_000_000 + UInt64(n), end: UInt64(t) * 1_000_000 + 10,
                    attributes: [("agent.run.id", .string("run-\(t)"))], statusCode: 0)
            }
            try await store.append(decoder.decode(RequestBuilder.request(spans: spans)))
        }
        #expect(SegmentFile.list(config.segmentDirectory).count > 3)
        #expect(try await store.listRuns(limit: 4).map(\.runID) == ["run-12", "run-11", "run-10", "run-9"])
        #expect(try await store.listRuns(limit: 100).count == 12)
        let window = try await store.listRuns(since: 3_000_000, until: 6_000_000, limit: 2)
        #expect(window.map(\.runID) == ["run-5", "run-4"])
        await store.close()
    }

    @Test func oneRunAcrossTwoTraces() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let store = try SpanStore(configuration: configuration(dir), logger: logger)
        try await store.append(batch(trace: 1, spans: 1...3, run: "run-x", runOn: 1))
        try await store.append(batch(trace: 2, spans: 1...2, run: "run-x", runOn: 1))
        let runs = try await store.listRuns()
        #expect(runs.count == 1)
        #expect(runs.first?.traceCount == 2 && runs.first?.spanCount == 5)
        let detail = try #require(try await store.run("run-x"))
        #expect(Set(detail.spans.map(\.traceID.hex)).count == 2)
        await store.close()
    }

    @Test func restartKeepsEverythingAndSkipsSealedSegments() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var config = configuration(dir)
        config.segmentBytes = 2048
        var store = try SpanStore(configuration: config, logger: logger)
        for t in UInt8(1)...40 { try await store.append(batch(trace: t, spans: 1...20, run: "run-\(t)", runOn: 1)) }
        let countsBefore = try await store.indexCounts()
        await store.close()
        #expect(dir.segmentFiles(config.directory).count > 2)
        let segments = dir.segmentFiles(config.directory).count
        store = try SpanStore(configuration: config, logger: logger)
        #expect(store.recoveryReport.scannedSegments == 0)
        #expect(store.recoveryReport.skippedSegments == segments)
        #expect(try await store.indexCounts() == countsBefore)
        #expect(try await store.listRuns(limit: 1000).count == 40)
        await store.close()
    }

    @Test func tornTailIsTruncatedAndCountedAndEverythingAcknowledgedSurvives() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var config = configuration(dir)
        config.segmentBytes = 1 << 30
        var store = try SpanStore(configuration: config, logger: logger)
        for t in UInt8(1)...5 { try await store.append(batch(trace: t, spans: 1...10, run: "run-\(t)", runOn: 1)) }
        await store.close()
        // Simulate a crash mid-append: half a block at the tail, and an index that lags.
        let segment = try #require(dir.segmentFiles(config.directory).last)
        let handle = try #require(FileHandle(forWritingAtPath: segment))
        handle.seekToEndOfFile()
        handle.write(Data("FRB1".utf8) + Data(repeating: 0x5A, count: 300))
        try handle.close()
        let damagedSize = try FileManager.default.attributesOfItem(atPath: segment)[.size] as! Int
        // A restart re-reads only the unindexed tail of the last segment: here, the torn bytes.
        store = try SpanStore(configuration: config, logger: logger)
        #expect(store.recoveryReport.scannedSegments == 1)
        #expect(store.recoveryReport.truncatedBytes == 304)
        await store.close()
        handle2: do {
            let h = try #require(FileHandle(forWritingAtPath: segment))
            h.seekToEndOfFile()
            h.write(Data("FRB1".utf8) + Data(repeating: 0x5A, count: 300))
            try h.close()
        }
        let reindexed = try Reindexer.rebuild(configuration: config, logger: logger)
        #expect(reindexed.truncatedBytes == 304)
        #expect(reindexed.spans == 50)
        let size = try FileManager.default.attributesOfItem(atPath: segment)[.size] as! Int
        #expect(size == damagedSize - 304)
        store = try SpanStore(configuration: config, logger: logger)
        #expect(try await store.listRuns().count == 5)
        // Appending continues on a block boundary after the truncation.
        try await store.append(batch(trace: 9, spans: 1...3, run: "run-9", runOn: 1))
        #expect(try await store.run("run-9")?.spans.count == 3)
        await store.close()
    }

    /// Salted blocks (evidence log on: "FRS" frames) and plain ones alike: the scan finds the
    /// next block after the damage.
    @Test(arguments: [false, true]) func flippedByteInsideSegmentIsSkippedNotTruncated(salted: Bool) async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var config = configuration(dir)
        config.segmentBytes = 1 << 30
        config.blockBytes = 1024
        if salted { config.evidence = .init(signer: Self.signer) }
        var store = try SpanStore(configuration: config, logger: logger)
        for t in UInt8(1)...6 { try await store.append(batch(trace: t, spans: 1...10, run: "run-\(t)", runOn: 1)) }
        await store.close()
        let segment = try #require(dir.segmentFiles(config.directory).last)
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: segment)))
        let originalSize = bytes.count
        #expect(bytes[SegmentFile.headerSize + 2] == (salted ? UInt8(ascii: "S") : UInt8(ascii: "B")))
        bytes[SegmentFile.headerSize + 40] ^= 0xFF  // inside the first block
        config.evidence = nil  // the segment scan alone (the log's own damage checks are its tests')
        try Data(bytes).write(to: URL(fileURLWithPath: segment))
        let summary = try Reindexer.rebuild(configuration: config, logger: logger)
        #expect(summary.truncatedBytes == 0)
        #expect(summary.corruptBytes > 0)
        #expect(summary.spans == 50)  // the first request's 10 spans are lost to the damage, no more
        #expect(try FileManager.default.attributesOfItem(atPath: segment)[.size] as! Int == originalSize)
        store = try SpanStore(configuration: config, logger: logger)
        #expect(try await store.run("run-1") == nil)
        #expect(try await store.run("run-2")?.spans.count == 10)
        await store.close()
    }

    @Test func reindexMatchesTheLiveIndex() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var config = configuration(dir)
        config.segmentBytes = 4096
        var store = try SpanStore(configuration: config, logger: logger)
        for t in UInt8(1)...30 {
            try await store.append(batch(trace: t, spans: 2...6, parent: 1))
            try await store.append(batch(trace: t, spans: 1...1, run: "run-\(t % 7)"))
        }
        let runs = try await store.listRuns(limit: 1000)
        let counts = try await store.indexCounts()
        await store.close()
        _ = try Reindexer.rebuild(configuration: config, logger: logger)
        // Every sealed segment has its attribute filter again, moved in from the scratch directory.
        let sealed = SegmentFile.list(config.segmentDirectory).dropLast()
        #expect(!sealed.isEmpty)
        for id in sealed {
            let path = IndexSchema.attributeFilterPath(IndexSchema.path(config.segmentDirectory, id))
            #expect(AttributeFilterFile(path: path) != nil)
        }
        #expect(access(config.directory + "/reindex.tmp", F_OK) != 0)
        store = try SpanStore(configuration: config, logger: logger)
        #expect(try await store.listRuns(limit: 1000) == runs)
        var rebuilt = try await store.indexCounts()
        var live = counts
        // Block boundaries may differ after a rebuild (one block per stored frame); the rest must match.
        rebuilt["blocks"] = nil
        live["blocks"] = nil
        #expect(rebuilt == live)
        await store.close()
    }

    @Test func tenantsNeverShareRunsOrTraces() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let store = try SpanStore(configuration: configuration(dir), logger: logger)
        func tenantBatch(_ tenant: String, trace: UInt8, spans: ClosedRange<UInt8>, run: String?) throws -> IngestBatch
        {
            let list = spans.map { n in
                TestSpan(
                    trace: RequestBuilder.traceID(trace), span: RequestBuilder.spanID(n, UInt8(tenant.count)),
                    attributes: run.map { [("agent.run.id", .string($0))] } ?? [])
            }
            return try decoder.decode(RequestBuilder.request(spans: list), tenant: tenant)
        }
        // Same run ID and even the same trace ID in two tenants; globex's unnamed spans arrive first.
        try await store.append(tenantBatch("globex", trace: 1, spans: 5...6, run: nil))
        try await store.append(tenantBatch("acme", trace: 1, spans: 1...3, run: "run-x"))
        try await store.append(tenantBatch("globex", trace: 1, spans: 7...7, run: "run-x"))
        let acme = try #require(try await store.run("run-x", scope: .only(["acme"])))
        #expect(acme.summary.tenant == "acme" && acme.summary.spanCount == 3 && acme.spans.count == 3)
        #expect(acme.spans.allSatisfy { $0.tenant == "acme" })
        let globex = try #require(try await store.run("run-x", scope: .only(["globex"])))
        #expect(globex.summary.spanCount == 3 && globex.spans.allSatisfy { $0.tenant == "globex" })
        #expect(try await store.run("run-x", scope: .only(["initech"])) == nil)
        // Read together (the run analyser's batches), each keeps its own tenant's spans of the
        // trace they share.
        let batched = try await store.runs([
            (tenant: "acme", run: "run-x"), (tenant: "globex", run: "run-x"), (tenant: "initech", run: "run-x"),
        ])
        #expect(batched.count == 3 && batched[2] == nil)
        #expect(batched[0]?.spans.map(\.spanID) == acme.spans.map(\.spanID))
        #expect(batched[1]?.spans.map(\.spanID) == globex.spans.map(\.spanID))
        #expect(batched[1]?.spans.allSatisfy { $0.tenant == "globex" } == true)
        #expect(try await store.listRuns(scope: .only(["acme"])).map(\.tenant) == ["acme"])
        #expect(try await store.listRuns(scope: .all).count == 2)
        let trace = TraceID(high: 0xAB00_0000_0000_0000, low: 1)
        #expect(try await store.trace(trace, scope: .only(["acme"])).spans.count == 3)
        #expect(try await store.trace(trace, scope: .only(["initech"])).spans.isEmpty)
        // Across tenants, a shared run ID answers the first tenant and says so.
        let both = try #require(try await store.run("run-x", scope: .all))
        #expect(
            both.summary.tenant == "acme" && both.warnings.contains { $0.contains("also exists in tenant(s) globex") })
        await store.close()
    }

    @Test func anIndexOfAnOlderSchemaIsRebuiltFromTheSegments() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = configuration(dir)
        var store = try SpanStore(configuration: config, logger: logger)
        try await store.append(batch(trace: 1, spans: 1...4, run: "run-old", runOn: 1))
        await store.close()
        let db = try SQLiteDatabase(path: IndexSchema.path(config.segmentDirectory, 1))
        try db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        try db.execute("DROP TABLE runs")
        try db.execute("CREATE TABLE runs(run_id TEXT PRIMARY KEY)")
        store = try SpanStore(configuration: config, logger: logger)
        #expect(store.recoveryReport.indexedSpans == 4)
        #expect(try await store.run("run-old")?.summary.spanCount == 4)
        await store.close()
    }

    /// A store written with one index for the whole store (before per-segment indexes)
    /// opens: the old index is removed and every segment's index built from the segments.
    @Test func aWholeStoreIndexFromBeforePerSegmentIndexesIsReplaced() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let config = configuration(dir)
        var store = try SpanStore(configuration: config, logger: logger)
        try await store.append(batch(trace: 1, spans: 1...4, run: "run-old", runOn: 1))
        await store.close()
        IndexSchema.remove(IndexSchema.path(config.segmentDirectory, 1))
        #expect(FileManager.default.createFile(atPath: config.legacyIndexPath, contents: Data("old".utf8)))
        store = try SpanStore(configuration: config, logger: logger)
        #expect(!FileManager.default.fileExists(atPath: config.legacyIndexPath))
        #expect(store.recoveryReport.indexedSpans == 4)
        #expect(try await store.run("run-old")?.summary.spanCount == 4)
        await store.close()
    }

    @Test func secondProcessCannotOpenTheSameDirectory() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let store = try SpanStore(configuration: configuration(dir), logger: logger)
        #expect {
            _ = try SpanStore(configuration: configuration(dir), logger: logger)
        } throws: { ($0 as? StorageError)?.isLocked == true }
        await store.close()
    }

    @Test func fullQueueRefusesWithARetryableErrorAndKeepsWhatItAcknowledged() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var config = configuration(dir)
        config.maxQueueBytes = 4096
        let store = try SpanStore(configuration: config, logger: logger)
        let batches = try (UInt8(1)...60).map { try batch(trace: $0, spans: 1...10, run: "run-\($0)", runOn: 1) }
        let outcomes = await withTaskGroup(of: (String, Bool).self) { group in
            for (i, b) in batches.enumerated() {
                group.addTask {
                    do {
                        try await store.append(b)
                        return ("run-\(i + 1)", true)
                    } catch {
                        #expect((error as? StorageError)?.isOverload == true)
                        return ("run-\(i + 1)", false)
                    }
                }
            }
            var out: [(String, Bool)] = []
            for await o in group { out.append(o) }
            return out
        }
        let acknowledged = Set(outcomes.filter(\.1).map(\.0))
        #expect(acknowledged.count < 60, "a 4 KiB queue must refuse some of 60 concurrent batches")
        #expect(!acknowledged.isEmpty)
        let stored = Set(try await store.listRuns(limit: 1000).map(\.runID))
        #expect(stored == acknowledged)
        await store.close()
    }
}

/// A reader that read a segment while it was active lets go of its in-memory attribute rows
/// once the segment seals, even if it never reads that segment again (the run analyser's
/// reader moves on to newer runs; it held every segment's rows, tens of MiB each).
@Suite struct ActiveRowsReleasedTests {
    @Test func aReaderLetsGoOfASealedSegmentsActiveRows() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let t = SpanStoreTests()
        let c = t.smallSegments(dir)
        let store = try SpanStore(configuration: c, logger: t.logger)
        try await store.append(t.batch(trace: 1, spans: 1...2, run: "run-a", runOn: 1))
        try await store.awaitIndexed()
        weak var rows: ActiveAttributes?
        rows = store.catalog.snapshot.last?.attributes
        #expect(rows != nil)
        _ = try store.runInBackground("run-a", scope: .all)
        // More runs: the segment seals, and later ones follow.
        for trace in UInt8(2)...12 {
            try await store.append(t.batch(trace: trace, spans: 1...4, run: "run-\(trace)", runOn: 1))
        }
        try await store.awaitIndexed()
        #expect(store.catalog.snapshot.count > 2)
        _ = try store.runInBackground("run-12", scope: .all)
        #expect(rows == nil)
        await store.close()
    }
}
