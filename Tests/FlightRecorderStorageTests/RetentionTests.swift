import FlightRecorderEvidence
import FlightRecorderTesting
import Foundation
import Testing

@testable import FlightRecorderStorage

#if canImport(Glibc)
import Glibc
#endif

/// Retention: sealed segments past their age are deleted whole, queries stop seeing their
/// runs, and the evidence log still verifies every checkpoint from the signed receipts.
extension SpanStoreTests {
    /// Segments of several 256-leaf tiles each, so an expired one has whole tiles inside it
    /// and partial ones at its edges.
    func retentionConfiguration(_ dir: TemporaryDirectory) -> StoreConfiguration {
        var c = evidenceConfiguration(dir)
        c.segmentBytes = 8 << 10
        c.retention = .init(maxAge: 100)
        return c
    }

    func fillRetentionStore(_ dir: TemporaryDirectory, traces: ClosedRange<UInt8>) async throws -> Int {
        try await fillEvidenceStore(dir, traces: traces, minSpans: 17, configuration: retentionConfiguration(dir))
    }

    /// Sets segment `id`'s last write `seconds` into the past.
    func age(_ dir: TemporaryDirectory, segment id: Int64, by seconds: Int) {
        let path = SegmentFile.path(dir.path + "/data/segments", id)
        var times = [
            timespec(tv_sec: time(nil) - seconds, tv_nsec: 0), timespec(tv_sec: time(nil) - seconds, tv_nsec: 0),
        ]
        #expect(utimensat(AT_FDCWD, path, &times, 0) == 0)
    }

    func runExists(_ store: SpanStore, _ id: String) async throws -> Bool {
        try await store.read { reader, _ in try !reader.runs(id, scope: .all).isEmpty }
    }

    @Test func expiredSegmentsAreDeletedAndTheLogStillVerifies() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var spans = 0
        for pass in 0..<4 {
            spans += try await fillRetentionStore(dir, traces: UInt8(pass * 60 + 1)...UInt8(pass * 60 + 60))
        }
        let segments = SegmentFile.list(dir.path + "/data/segments")
        try #require(segments.count > 6)

        // Segments 2 and 3 aged past 100 s, the rest young: only those two go (the first
        // stays, so the expired range has stored leaves on both sides).
        var store = try SpanStore(configuration: retentionConfiguration(dir), logger: logger)
        #expect(store.expire(grace: 0).isEmpty)
        for id in segments[1...2] { age(dir, segment: id, by: 500) }
        let expired = store.expire(grace: 0)
        #expect(expired.map(\.segment) == Array(segments[1...2]))
        let gone = expired.flatMap(\.runs).map(\.run)
        #expect(!gone.isEmpty)
        for id in segments[1...2] {
            #expect(access(SegmentFile.path(dir.path + "/data/segments", id), F_OK) != 0)
            #expect(access(IndexSchema.path(dir.path + "/data/segments", id), F_OK) != 0)
        }
        for run in gone { #expect(try await !runExists(store, run), "\(run)") }
        let kept = (1...240).map { "run-\($0)" }.filter { !gone.contains($0) }
        for run in kept { #expect(try await runExists(store, run), "\(run)") }
        // A second pass finds nothing more; new spans still go in.
        #expect(store.expire(grace: 0).isEmpty)
        try await store.append(evidenceBatch(trace: 241, spans: 4))
        await store.close()

        var report = verify(dir)
        #expect(report.ok, "\(report.problems)")
        #expect(report.expiredSegments == 2)
        #expect(report.leaves == UInt64(spans + 4))
        #expect(report.expiredLeaves == UInt64(expired.reduce(0) { $0 + $1.spans }))
        // Whole tiles were taken from log/tiles, not only kept leaves.
        let receipts = ExpiryReceipt.read(directory: dir.path + "/data/log", verifier: Self.signer.verifier).receipts
        #expect(receipts.count == 2)
        #expect(receipts.contains { UInt64($0.kept.count) + EvidenceLog.tileLeaves <= $0.endLeaf - $0.firstLeaf })
        // The checkpoint signed before the expiry still verifies against the tree.
        #expect(report.checkpointsWithinExpired == 0)

        // Start-up over a store with segments missing; the first segment expires too.
        store = try SpanStore(configuration: retentionConfiguration(dir), logger: logger)
        for run in kept { #expect(try await runExists(store, run), "\(run)") }
        age(dir, segment: segments[0], by: 500)
        #expect(store.expire(grace: 0).map(\.segment) == [segments[0]])
        try await store.append(evidenceBatch(trace: 242, spans: 3))
        await store.close()
        report = verify(dir)
        #expect(report.ok, "\(report.problems)")
        #expect(report.expiredSegments == 3)
        #expect(report.leaves == UInt64(spans + 7))

        // A segment deleted by hand has no receipt: reported.
        unlink(SegmentFile.path(dir.path + "/data/segments", segments[4]))
        report = verify(dir)
        #expect(report.problems.contains { $0.description.contains("missing") }, "\(report.problems)")
    }

    @Test func aCrashBetweenTheReceiptAndTheDeletionIsFinishedByTheNextPass() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        _ = try await fillRetentionStore(dir, traces: 1...60)
        let segments = SegmentFile.list(dir.path + "/data/segments")
        try #require(segments.count > 2)
        // The receipt is written, then the process dies before the catalog or the files change.
        var store = try SpanStore(configuration: retentionConfiguration(dir), logger: logger)
        let receipt = try #require(try store.evidenceLog?.expire(segment: segments[0], reason: "test", now: 1))
        #expect(receipt.endLeaf > receipt.firstLeaf)
        await store.close()
        // The segment is still there and still verifies as stored; start-up reads it as usual.
        var report = verify(dir)
        #expect(report.ok && report.expiredSegments == 0, "\(report.problems)")
        store = try SpanStore(configuration: retentionConfiguration(dir), logger: logger)
        #expect(try await runExists(store, "run-1"))
        age(dir, segment: segments[0], by: 500)
        #expect(store.expire(grace: 0).map(\.segment) == [segments[0]])
        #expect(try await !runExists(store, "run-1"))
        await store.close()
        report = verify(dir)
        #expect(report.ok && report.expiredSegments == 1, "\(report.problems)")
        // One receipt, not two.
        let receipts = ExpiryReceipt.read(directory: dir.path + "/data/log", verifier: Self.signer.verifier).receipts
        #expect(receipts.count == 1)
    }

    @Test func expiryUnderIngestLosesNoSpanItShouldKeep() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        _ = try await fillRetentionStore(dir, traces: 1...60)
        let old = SegmentFile.list(dir.path + "/data/segments")
        for id in old { age(dir, segment: id, by: 500) }
        var c = retentionConfiguration(dir)
        c.retention?.sealAfter = 0.05  // new segments seal while the old ones go
        let store = try SpanStore(configuration: c, logger: logger)
        // Appends and expiry passes at once; the old segments' last-write times are set back.
        async let appended: Int = {
            var spans = 0
            for t in UInt8(61)...UInt8(160) {
                try await store.append(self.evidenceBatch(trace: t, spans: 5))
                spans += 5
            }
            return spans
        }()
        var expired: [ExpiredSegment] = []
        for _ in 0..<20 {
            expired += store.expire(grace: 0)
            try await Task.sleep(for: .milliseconds(20))
        }
        let spans = try await appended
        expired += store.expire(grace: 0)
        #expect(Set(expired.map(\.segment)).isSuperset(of: old.dropLast()))
        // Every span appended during the passes is there, in full.
        for t in 61...160 {
            let runs = try await store.read { reader, _ in try reader.runs("run-\(t)", scope: .all) }
            #expect(runs.map(\.spanCount) == [5], "run-\(t)")
        }
        await store.close()
        let report = verify(dir)
        #expect(report.ok, "\(report.problems)")
        #expect(report.leaves - report.expiredLeaves >= UInt64(spans))
    }

    @Test func expiryDeletesNoFileWhileAnExportReadsBlocks() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        _ = try await fillRetentionStore(dir, traces: 1...60)
        let segments = SegmentFile.list(dir.path + "/data/segments")
        let store = try SpanStore(configuration: retentionConfiguration(dir), logger: logger)
        age(dir, segment: segments[0], by: 500)
        // An export's snapshot, taken before the expiry, reads blocks by the old records.
        var snapshot: EvidenceSnapshot? = try #require(try store.evidenceLog?.snapshot())
        let pass = Task.detached { store.expire(grace: 0) }
        try await Task.sleep(for: .milliseconds(500))
        let path = SegmentFile.path(dir.path + "/data/segments", segments[0])
        #expect(access(path, F_OK) == 0)
        #expect(try await !runExists(store, "run-1"))  // hidden at once all the same
        let block = try #require(snapshot?.blocks(leaves: 0, 1).first)
        #expect(try snapshot?.payload(of: block).raw.isEmpty == false)
        snapshot = nil
        #expect(await pass.value.map(\.segment) == [segments[0]])
        #expect(access(path, F_OK) != 0)
        await store.close()
    }

    @Test func aReceiptSignedByAnotherKeyIsNotAccepted() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        _ = try await fillEvidenceStore(dir)
        let segments = SegmentFile.list(dir.path + "/data/segments")
        // Expire segment 2 with another key's log, so the receipt is signed by that key.
        var c = retentionConfiguration(dir)
        c.evidence = .init(signer: try NoteSigner.generate(name: Self.signer.name))
        unlink(dir.path + "/data/log/expired")
        let store = try SpanStore(configuration: c, logger: logger)
        age(dir, segment: segments[1], by: 500)
        #expect(store.expire(grace: 0).map(\.segment) == [segments[1]])
        await store.close()
        let report = verify(dir)
        #expect(!report.ok)
        #expect(report.expiredSegments == 0)
        #expect(report.problems.contains { $0.description.contains("expired") || $0.description.contains("missing") })
    }

    @Test func overMaxBytesTheOldestGoUnlessUnderTheFloorThenIngestIsRefused() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var spans = 0
        for pass in 0..<2 {
            spans += try await fillRetentionStore(dir, traces: UInt8(pass * 60 + 1)...UInt8(pass * 60 + 60))
        }
        let segments = SegmentFile.list(dir.path + "/data/segments")
        try #require(segments.count > 4)
        var c = retentionConfiguration(dir)
        let sizes = segments.map { SpanStore.filesBytes(dir.path + "/data/segments", $0) }
        let total = sizes.reduce(0, +)
        // Room for all but about the two oldest segments; none is past the floor yet.
        c.retention = .init(maxAge: nil, floor: 1000)
        c.retention?.maxBytes = total - sizes[0] - sizes[1] / 2
        let store = try SpanStore(configuration: c, logger: logger)
        #expect(store.expire(grace: 0).isEmpty)
        await #expect {
            try await store.append(self.evidenceBatch(trace: 200, spans: 3))
        } throws: { error in
            (error as? StorageError)?.isAtCapacity == true && (error as? StorageError)?.isRetryable == true
                && "\(error)".contains("max_bytes")
        }
        // Past the floor: the two oldest go, the rest stay, and ingest resumes.
        for id in segments { age(dir, segment: id, by: 2000) }
        let expired = store.expire(grace: 0)
        #expect(expired.map(\.segment) == Array(segments[0...1]))
        #expect(expired.allSatisfy { $0.reason.hasPrefix("max_bytes") })
        try await store.append(evidenceBatch(trace: 201, spans: 3))
        await store.close()
        let report = verify(dir)
        #expect(report.ok, "\(report.problems)")
        #expect(report.expiredSegments == 2)
    }

    @Test func tenantsKeptLongerKeepTheirSegmentsAndTheFloorHolds() {
        var r = StoreConfiguration.Retention(maxAge: 100, tenantMaxAge: ["acme": 400, "short": 10], floor: 50)
        #expect(r.maxAge(tenant: "acme") == 400)
        #expect(r.maxAge(tenant: "short") == 50)
        #expect(r.maxAge(tenant: "other") == 100)
        r.maxAge = nil
        #expect(r.maxAge(tenant: "other") == nil)
    }

    @Test func anAgedSegmentSealsWhileIdle() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var c = retentionConfiguration(dir)
        c.segmentBytes = 64 << 20
        c.retention?.sealAfter = 0.5
        let store = try SpanStore(configuration: c, logger: logger)
        try await store.append(evidenceBatch(trace: 1, spans: 3))
        var waited = 0
        while SegmentFile.list(dir.path + "/data/segments").count < 2 && waited < 100 {
            try await Task.sleep(for: .milliseconds(50))
            waited += 1
        }
        #expect(SegmentFile.list(dir.path + "/data/segments").count == 2)
        // Idle with an empty segment: no more seals.
        try await Task.sleep(for: .seconds(1))
        #expect(SegmentFile.list(dir.path + "/data/segments").count == 2)
        await store.close()
    }
}
