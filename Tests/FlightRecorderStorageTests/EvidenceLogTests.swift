import FlightRecorderEvidence
import FlightRecorderIngest
import FlightRecorderOTLP
import FlightRecorderTesting
import Foundation
import Testing

@testable import FlightRecorderStorage

#if canImport(Glibc)
import Glibc
#endif

/// The evidence log over a real store: what it signs matches the segments, start-up
/// recomputes what it lacks, and `EvidenceVerifier` reports each kind of tampering.
extension SpanStoreTests {
    static let signer = try! NoteSigner.generate(name: "flightrec.test/evidence")

    func evidenceConfiguration(_ dir: TemporaryDirectory) -> StoreConfiguration {
        var c = configuration(dir)
        c.segmentBytes = 3 << 10  // several segments
        c.blockBytes = 1 << 10
        c.evidence = .init(signer: Self.signer)
        return c
    }

    /// A batch of `n` spans of trace `trace`, with the leaves ingest computes.
    func evidenceBatch(trace: UInt8, spans n: Int) throws -> IngestBatch {
        let spans = (1...n).map { i in
            TestSpan(
                trace: RequestBuilder.traceID(trace), span: RequestBuilder.spanID(UInt8(i), trace),
                parent: i == 1 ? [] : RequestBuilder.spanID(1, trace), name: "step \(i)",
                attributes: [
                    ("agent.run.id", .string("run-\(trace)")),
                    ("detail", .string(String(repeating: "d", count: 40 + i))),
                ])
        }
        // Odd traces have values over the length limit; ingest re-encodes every request and
        // hashes its spans from that encoding (the block is logged canonical). Every third
        // trace's leaves are left to the writer, which unpacks the block to hash them (as for
        // a store written before the log, or by an older version): logged not canonical.
        var decoder = ExportRequestDecoder()
        decoder.limits.maxAttributeValueBytes = trace % 2 == 1 ? 44 : 1 << 20
        decoder.evidenceLeaves = trace % 3 != 0
        let batch = try decoder.decode(RequestBuilder.request(spans: spans))
        #expect(batch.leafHashes.count == (decoder.evidenceLeaves ? n * TreeHash.size : 0))
        #expect(batch.leavesFromPayload == decoder.evidenceLeaves)
        return batch
    }

    /// Appends traces `traces` (`t % 7 + minSpans` spans each) to a store made with
    /// `configuration` (default `evidenceConfiguration`), then closes it; the spans appended.
    func fillEvidenceStore(
        _ dir: TemporaryDirectory, traces: ClosedRange<UInt8> = 1...40, minSpans: Int = 3,
        configuration: StoreConfiguration? = nil
    ) async throws -> Int {
        let store = try SpanStore(configuration: configuration ?? evidenceConfiguration(dir), logger: logger)
        var spans = 0
        for t in traces {
            let n = Int(t % 7) + minSpans
            try await store.append(evidenceBatch(trace: t, spans: n))
            spans += n
        }
        await store.close()
        return spans
    }

    func verify(_ dir: TemporaryDirectory) -> EvidenceVerifier.Report {
        EvidenceVerifier.verify(dataDirectory: dir.path + "/data", key: Self.signer.verifier)
    }

    @Test func evidenceLogCoversEveryStoredSpanAndVerifies() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let spans = try await fillEvidenceStore(dir)
        let report = verify(dir)
        #expect(report.ok, "\(report.problems)")
        #expect(report.leaves == UInt64(spans))
        #expect(report.checkpoints >= 3)  // start-up, seals, shutdown
        #expect(SegmentFile.list(dir.path + "/data/segments").count > 2)
        // Both kinds of block were logged, and each kind's leaves recompute as logged (above).
        let records = EvidenceLog.readRecords(EvidenceLog.readFile(dir.path + "/data/log/blocks")).records
        #expect(records.contains { $0.canonical } && records.contains { !$0.canonical })
        for r in records {
            let frame = try SegmentReader.readFrame(
                path: SegmentFile.path(dir.path + "/data/segments", r.segment), offset: r.offset,
                length: r.frameLength)
            // A canonical block's leaves are the same read either way.
            if r.canonical {
                #expect(
                    try BlockLeaves.of(frame: frame, canonical: false) == BlockLeaves.of(frame: frame, canonical: true))
            }
        }
        // The last checkpoint signs every span, and its root is the segments' tree.
        let last = try #require(report.latest)
        #expect(try Checkpoint(text: last.text).size == UInt64(spans))
    }

    @Test func startUpRecomputesWhatTheLogLacks() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let spans = try await fillEvidenceStore(dir)
        let root = try Checkpoint(text: #require(verify(dir).latest).text).root
        // A crash that lost the tail of the block records and the tiles; then no log at all
        // (a store written before the log existed).
        for cut in [(blocks: 3 * 32 + 5, tiles: 32 + 7), (blocks: Int.max, tiles: Int.max)] {
            for (file, bytes) in [("blocks", cut.blocks), ("tiles", cut.tiles)] {
                let path = dir.path + "/data/log/" + file
                var st = stat()
                #expect(stat(path, &st) == 0)
                let size = Int(st.st_size)
                #expect(truncate(path, off_t(max(0, size - bytes))) == 0)
            }
            let store = try SpanStore(configuration: evidenceConfiguration(dir), logger: logger)
            await store.close()
            let report = verify(dir)
            #expect(report.ok, "\(report.problems)")
            #expect(report.leaves == UInt64(spans))
            #expect(try Checkpoint(text: #require(report.latest).text).root == root)
        }
        // And the log goes on from there.
        let more = try await fillEvidenceStore(dir, traces: 41...50)
        let report = verify(dir)
        #expect(report.ok, "\(report.problems)")
        #expect(report.leaves == UInt64(spans + more))
    }

    /// A damaged block in the last, partial tile (whose nodes start-up computes from the
    /// blocks) does not keep the store from opening: the log goes on from the frontier saved
    /// with the last checkpoint, ingest goes on, and `verify` names the block.
    @Test func aDamagedBlockInTheLastTileLeavesTheStoreServing() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var config = evidenceConfiguration(dir)
        config.segmentBytes = 1 << 30
        var store = try SpanStore(configuration: config, logger: logger)
        for t in UInt8(1)...6 { try await store.append(evidenceBatch(trace: t, spans: 10)) }
        await store.close()
        #expect(access(dir.path + "/data/log/frontier", F_OK) == 0)
        let segment = try #require(dir.segmentFiles(config.directory).last)
        let first = try #require(
            try SegmentScanner(path: segment).scan(from: SegmentFile.headerSize).blocks.first)
        try flip(segment, at: first.offset + 40)

        store = try SpanStore(configuration: config, logger: logger)
        #expect(try await runExists(store, "run-2"))
        try await store.append(evidenceBatch(trace: 7, spans: 5))
        #expect(try await runExists(store, "run-7"))
        await store.close()
        let report = verify(dir)
        #expect(!report.ok)
        #expect(report.problems.contains { $0.segment != nil && $0.offset == first.offset }, "\(report.problems)")
        // A saved frontier no checkpoint vouches for is not taken: the block is needed again.
        try Data("size 1\n0 \(TreeHash.empty.base64)\n".utf8).write(
            to: URL(fileURLWithPath: dir.path + "/data/log/frontier"))
        #expect(throws: StorageError.self) { _ = try SpanStore(configuration: config, logger: logger) }
    }

    /// Each kind of tampering is reported with where it is.
    @Test func tamperingWithTheSegmentsIsReported() async throws {
        let pristine = TemporaryDirectory()
        defer { pristine.remove() }
        _ = try await fillEvidenceStore(pristine)
        let segments = SegmentFile.list(pristine.path + "/data/segments")
        let target = segments[1]
        let scan = try SegmentScanner(path: SegmentFile.path(pristine.path + "/data/segments", target)).scan(from: 0)
        #expect(scan.blocks.count >= 3)
        let second = scan.blocks[1]
        let third = scan.blocks[2]

        func tampered(_ change: (String) throws -> Void) throws -> EvidenceVerifier.Report {
            let dir = TemporaryDirectory()
            defer { dir.remove() }
            try FileManager.default.removeItem(atPath: dir.path)
            try FileManager.default.copyItem(atPath: pristine.path, toPath: dir.path)
            try change(SegmentFile.path(dir.path + "/data/segments", target))
            return verify(dir)
        }
        func bytes(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }
        func write(_ path: String, _ b: [UInt8]) throws { try Data(b).write(to: URL(fileURLWithPath: path)) }

        // A flipped byte inside a block's payload.
        let flipped = try tampered { path in
            var b = try bytes(path)
            b[second.offset + BlockCodec.headerSize + 10] ^= 0x20
            try write(path, b)
        }
        #expect(flipped.problems.contains { $0.segment == target && $0.offset == second.offset })
        // The same flip with the block's checksum recomputed: only the tree can tell.
        let reframed = try tampered { path in
            var b = try bytes(path)
            let frame = Array(b[second.offset..<(second.offset + second.header.frameLength)])
            var raw = try frame.withUnsafeBytes { try BlockCodec.decode(frame: $0) }
            let at = raw.firstIndex(of: UInt8(ascii: "d"))!
            raw[at] = UInt8(ascii: "D")
            var out: [UInt8] = []
            raw.withUnsafeBytes {
                BlockCodec.encode($0, spanCount: second.header.spanCount, codec: second.header.codec, into: &out)
            }
            b.replaceSubrange(second.offset..<(second.offset + second.header.frameLength), with: out)
            try write(path, b)
        }
        #expect(!reframed.ok)
        #expect(reframed.problems.contains { $0.checkpoint != nil })
        #expect(reframed.problems.contains { $0.segment == target && $0.offset == second.offset })
        // A deleted block.
        let deleted = try tampered { path in
            var b = try bytes(path)
            b.removeSubrange(second.offset..<(second.offset + second.header.frameLength))
            try write(path, b)
        }
        #expect(
            deleted.problems.contains {
                $0.segment == target && $0.offset == second.offset && $0.message.contains("missing")
            })
        // Two blocks swapped.
        let reordered = try tampered { path in
            var b = try bytes(path)
            let x = Array(b[second.offset..<(second.offset + second.header.frameLength)])
            let y = Array(b[third.offset..<(third.offset + third.header.frameLength)])
            b.replaceSubrange(second.offset..<(third.offset + third.header.frameLength), with: y + x)
            try write(path, b)
        }
        #expect(reordered.problems.contains { $0.segment == target })
        #expect(reordered.problems.contains { $0.checkpoint != nil })
        // Truncated after the first block and re-appended with other spans.
        let rewritten = try tampered { path in
            var b = Array(try bytes(path)[0..<second.offset])
            var raw = RequestBuilder.request(spans: [
                TestSpan(trace: RequestBuilder.traceID(99), span: RequestBuilder.spanID(1, 99), name: "forged")
            ])
            var out: [UInt8] = []
            raw.withUnsafeBytes { BlockCodec.encode($0, spanCount: 1, into: &out) }
            raw.removeAll()
            b += out
            try write(path, b)
        }
        #expect(rewritten.problems.contains { $0.segment == target && $0.offset == second.offset })
        #expect(rewritten.problems.contains { $0.checkpoint != nil })
        // A whole segment removed.
        let removed = try tampered { path in try FileManager.default.removeItem(atPath: path) }
        #expect(removed.problems.contains { $0.segment == target && $0.message.contains("missing") })
        // The untouched copy still verifies (the checks above did not pass for other reasons).
        #expect(try tampered { _ in }.ok)
    }

    @Test func checkpointsSignedByAnotherKeyOrEditedAreReported() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        _ = try await fillEvidenceStore(dir)
        let other = try NoteSigner.generate(name: Self.signer.name)
        let foreign = EvidenceVerifier.verify(dataDirectory: dir.path + "/data", key: other.verifier)
        #expect(!foreign.ok)
        #expect(foreign.problems.allSatisfy { $0.checkpoint != nil || $0.message.contains("no checkpoint") })
        // A checkpoint's size edited: its signature no longer verifies.
        let path = dir.path + "/data/log/checkpoints"
        var text = try String(contentsOfFile: path, encoding: .utf8)
        let checkpoint = try #require(verify(dir).latest)
        let size = try Checkpoint(text: checkpoint.text).size
        text = text.replacingOccurrences(of: "\n\(size)\n", with: "\n\(size + 1)\n")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let edited = verify(dir)
        #expect(edited.problems.contains { $0.checkpoint != nil && $0.message.contains("does not verify") })
    }
}
