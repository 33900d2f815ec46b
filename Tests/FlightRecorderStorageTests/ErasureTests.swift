import FlightRecorderCore
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

/// Erasure: a tombstone hides the data at once, the purge rewrites the segments without it,
/// the evidence log still verifies through the signed rewrites, and a rewrite cut short by a
/// crash leaves the old segment or the new one, never a mix.
extension SpanStoreTests {
    /// An erasure of traces `traces` (their runs `run-N`) of the store's default tenant.
    func erasureDraft(_ store: SpanStore, traces: [UInt8]) async throws -> Erasure {
        let tenant = try await store.read { r, _ in try r.runs("run-\(traces[0])", scope: .all).first?.tenant } ?? ""
        return Erasure(
            id: "", kind: .run, tenant: tenant, key: nil, valueDigest: nil, reason: "test", requestedBy: "admin",
            requestedAt: 1, state: .hidden, runs: traces.count, traces: traces.count, spans: 0, segments: [],
            hiddenTraces: traces.map { .init(tenant: tenant, trace: Hex.encode(RequestBuilder.traceID($0))) },
            hiddenRuns: traces.map { Erasure.digest(tenant: tenant, run: "run-\($0)") })
    }

    /// Every span the segments hold, decoded: (trace byte, count).
    func storedTraces(_ dir: TemporaryDirectory) throws -> [UInt8: Int] {
        var out: [UInt8: Int] = [:]
        let directory = dir.path + "/data/segments"
        for id in SegmentFile.list(directory) {
            let scan = try SegmentScanner(path: SegmentFile.path(directory, id)).scan(from: SegmentFile.headerSize)
            for b in scan.blocks {
                let raw = try SegmentReader(directory: directory).readBlock(
                    segment: id, offset: b.offset, length: b.header.frameLength)
                for span in try raw.withUnsafeBytes({ try TracesDataDecoder.decode($0) { _, _ in true } }) {
                    out[span.traceID.bytes[15], default: 0] += 1
                }
            }
        }
        return out
    }

    /// Every stored span's leaf message and salt, with its trace byte and the key of the
    /// salts' run it is in (nil when held as it is).
    func storedLeaves(
        _ dir: TemporaryDirectory
    ) throws -> [(trace: UInt8, message: [UInt8], salt: LeafSalt, key: [UInt8]?)] {
        var out: [(trace: UInt8, message: [UInt8], salt: LeafSalt, key: [UInt8]?)] = []
        let directory = dir.path + "/data/segments"
        for id in SegmentFile.list(directory) {
            let path = SegmentFile.path(directory, id)
            for b in try SegmentScanner(path: path).scan(from: SegmentFile.headerSize).blocks {
                let frame = try SegmentReader.readFrame(path: path, offset: b.offset, length: b.header.frameLength)
                let (raw, salts) = try BlockCodec.decodeSalted(frame: frame)
                let spans = try #require(BlockSpans(raw))
                let all = try #require(salts).all()
                var keys: [[UInt8]?] = []
                for run in salts?.runs ?? [] {
                    switch run {
                    case .keyed(let key, let count): keys += repeatElement(Optional(key), count: count)
                    case .explicit(let s): keys += repeatElement(nil, count: s.count)
                    }
                }
                for i in 0..<spans.count {
                    out.append((spans.keys[i].trace.bytes[15], spans.messages[i], all[i], keys[i]))
                }
            }
        }
        return out
    }

    /// Whether any file under the data directory holds `needle`, as bytes, base64 or hex.
    func dataHolds(_ dir: TemporaryDirectory, _ needle: [UInt8]) -> Bool {
        let root = dir.path + "/data"
        let files = FileManager.default.enumerator(atPath: root)?.compactMap { $0 as? String } ?? []
        let forms = [Data(needle), Data(Data(needle).base64EncodedString().utf8), Data(Hex.encode(needle).utf8)]
        return files.contains { f in
            guard let d = FileManager.default.contents(atPath: root + "/" + f) else { return false }
            return forms.contains { d.range(of: $0) != nil }
        }
    }

    @Test func erasedTracesLeaveTheSegmentsAndTheLogStillVerifies() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var spans = try await fillEvidenceStore(dir, traces: 1...60)
        // One request holding spans of an erased trace and of a kept one, between others: its
        // block is split, the kept spans keep their salts.
        do {
            let mixed = (1...6).map { i in
                let t: UInt8 = i % 2 == 0 ? 57 : 62
                return TestSpan(
                    trace: RequestBuilder.traceID(t), span: RequestBuilder.spanID(UInt8(100 + i), t), parent: [],
                    name: "mixed \(i)", attributes: [("agent.run.id", .string("run-\(t)"))])
            }
            var decoder = ExportRequestDecoder()
            decoder.evidenceLeaves = true
            let store = try SpanStore(configuration: evidenceConfiguration(dir), logger: logger)
            try await store.append(decoder.decode(RequestBuilder.request(spans: mixed)))
            await store.close()
            spans += mixed.count
        }
        let before = try storedTraces(dir)
        let erased: [UInt8] = [5, 6, 30, 57]
        let gone = erased.reduce(0) { $0 + before[$1, default: 0] }
        try #require(gone > 0)
        // Every span is stored salted; the erased spans' salts and keys are on disk so far.
        let leavesBefore = try storedLeaves(dir)
        let erasedLeaves = leavesBefore.filter { erased.contains($0.trace) }
        #expect(leavesBefore.allSatisfy { !$0.salt.isNone && $0.key != nil })
        #expect(erasedLeaves.count == gone && dataHolds(dir, erasedLeaves[0].key!))

        let store = try SpanStore(configuration: evidenceConfiguration(dir), logger: logger)
        let e = try store.recordErasure(try await erasureDraft(store, traces: erased))
        // Hidden at once, before any byte moved.
        for t in erased { #expect(try await !runExists(store, "run-\(t)")) }
        #expect(try await runExists(store, "run-7"))
        // The store's purge thread and these calls take turns (the active segment seals first).
        var rewritten: [Int64] = []
        for _ in 0..<40 where store.erasures.erasure(e.id)?.state != .erased {
            rewritten += store.purgeErased().rewritten
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(store.erasures.erasure(e.id)?.state == .erased)
        #expect(store.erasures.erasure(e.id)?.hiddenTraces.isEmpty == true)
        for t in erased { #expect(try await !runExists(store, "run-\(t)")) }
        for t in (1...62).map(UInt8.init) where !erased.contains(t) && t != 61 {
            #expect(try await runExists(store, "run-\(t)"), "run-\(t)")
        }
        try await store.append(evidenceBatch(trace: 61, spans: 4))
        await store.close()

        var after = try storedTraces(dir)
        for t in erased { #expect(after[t] == nil, "trace \(t)") }
        after[61] = nil
        #expect(after == before.filter { !erased.contains($0.key) })
        let report = verify(dir)
        #expect(report.ok, "\(report.problems)")
        #expect(report.leaves == UInt64(spans + 4))
        #expect(report.erasedLeaves == UInt64(gone))
        // An erased span's leaf hash stays (salted, the tree needs it); its salt and the key
        // that derived it are gone from every file, so the hash confirms no guess: not even of
        // the span exactly as it was (whose unsalted hash is nowhere either).
        let kept = Set(
            SegmentRewrite.read(directory: dir.path + "/data/log", verifier: Self.signer.verifier).rewrites.flatMap {
                $0.erased.values
            })
        for e in erasedLeaves {
            #expect(!dataHolds(dir, e.salt.bytes) && !dataHolds(dir, e.key!))
            #expect(kept.contains(TreeHash.leaf(salt: e.salt, e.message)))
            #expect(!kept.contains(TreeHash.leaf(e.message)) && !dataHolds(dir, TreeHash.leaf(e.message).bytes))
        }
        // The spans kept beside them keep their salts, held as they are.
        let leavesAfter = try storedLeaves(dir)
        #expect(leavesAfter.contains { $0.key == nil } && leavesAfter.allSatisfy { !$0.salt.isNone })
        #expect(
            Set(leavesAfter.filter { $0.trace != 61 }.map(\.salt))
                == Set(leavesBefore.filter { !erased.contains($0.trace) }.map(\.salt)))
        #expect(report.erasureReceipts.map(\.id) == [e.id])
        #expect(report.rewrittenSegments >= 1 && report.rewrittenSegments >= Set(rewritten).count)

        // Reopened: the tree, the index and the rewrites agree.
        let reopened = try SpanStore(configuration: evidenceConfiguration(dir), logger: logger)
        for t in erased { #expect(try await !runExists(reopened, "run-\(t)")) }
        #expect(try await runExists(reopened, "run-8"))
        #expect(reopened.purgeErased().completed.isEmpty)
        await reopened.close()
        #expect(verify(dir).ok)
    }

    /// Blocks stored before salted leaves (here: with the log off, as an earlier version
    /// wrote them) keep their unsalted leaves beside salted ones: the log takes them in,
    /// verifies both, and an erasure of either kind leaves a tree that still verifies.
    @Test func unsaltedBlocksFromBeforeSaltsVerifyAndEraseBesideSaltedOnes() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var plain = evidenceConfiguration(dir)
        plain.evidence = nil
        var spans = try await fillEvidenceStore(dir, traces: 1...20, configuration: plain)
        func salted() throws -> [Bool] {
            let directory = dir.path + "/data/segments"
            return try SegmentFile.list(directory).flatMap { id in
                try SegmentScanner(path: SegmentFile.path(directory, id)).scan(from: SegmentFile.headerSize).blocks.map
                {
                    $0.header.salted
                }
            }
        }
        #expect(try salted().allSatisfy { !$0 })
        spans += try await fillEvidenceStore(dir, traces: 21...40)
        let kinds = try salted()
        #expect(kinds.contains(true) && kinds.contains(false))
        #expect(verify(dir).ok && verify(dir).leaves == UInt64(spans))

        let before = try storedTraces(dir)
        let erased: [UInt8] = [3, 25]
        let store = try SpanStore(configuration: evidenceConfiguration(dir), logger: logger)
        let e = try store.recordErasure(try await erasureDraft(store, traces: erased))
        for _ in 0..<40 where store.erasures.erasure(e.id)?.state != .erased {
            _ = store.purgeErased()
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(store.erasures.erasure(e.id)?.state == .erased)
        await store.close()
        let report = verify(dir)
        #expect(report.ok, "\(report.problems)")
        #expect(report.erasedLeaves == UInt64(before[3, default: 0] + before[25, default: 0]))
        #expect(try storedTraces(dir) == before.filter { !erased.contains($0.key) })
    }

    /// The state a crash leaves between the rewrite's signed note and the swap (the new file in
    /// its scratch directory), and before the note (no note): start-up finishes the first and
    /// drops the second, and both verify.
    @Test func aRewriteCutShortRollsForwardOrBack() async throws {
        for signed in [true, false] {
            let dir = TemporaryDirectory()
            defer { dir.remove() }
            let spans = try await fillEvidenceStore(dir, traces: 1...40)
            let old = dir.path + "/old"
            try FileManager.default.copyItem(atPath: dir.path + "/data", toPath: old)
            // The same erasure carried out to the end in a copy gives the new file and note.
            let store = try SpanStore(configuration: evidenceConfiguration(dir), logger: logger)
            _ = try store.recordErasure(try await erasureDraft(store, traces: [9]))
            try FileManager.default.copyItem(atPath: dir.path + "/data/erasures.json", toPath: old + "/erasures.json")
            for _ in 0..<40 where store.erasures.erasure("erasure-1")?.state != .erased {
                _ = store.purgeErased()
                try await Task.sleep(for: .milliseconds(100))
            }
            await store.close()
            // The segment rewritten: the one the signed note names.
            let notes = SegmentRewrite.read(directory: dir.path + "/data/log", verifier: Self.signer.verifier).rewrites
            try #require(notes.count == 1)
            let id = notes[0].segment
            let segments = dir.path + "/data/segments"
            // The crash state: the old store, the new file in scratch, the note or not.
            let done = dir.path + "/done"
            try FileManager.default.moveItem(atPath: dir.path + "/data", toPath: done)
            try FileManager.default.moveItem(atPath: old, toPath: dir.path + "/data")
            mkdir(segments + "/erase-\(id).tmp", 0o750)
            try FileManager.default.copyItem(
                atPath: SegmentFile.path(done + "/segments", id),
                toPath: SegmentFile.path(segments + "/erase-\(id).tmp", id))
            if signed {
                try FileManager.default.copyItem(
                    atPath: done + "/log/rewrites", toPath: dir.path + "/data/log/rewrites")
            }
            let oldBytes = FileManager.default.contents(atPath: SegmentFile.path(segments, id))
            let reopened = try SpanStore(configuration: evidenceConfiguration(dir), logger: logger)
            #expect(access(segments + "/erase-\(id).tmp", F_OK) != 0)
            let now = FileManager.default.contents(atPath: SegmentFile.path(segments, id))
            if signed {
                #expect(now == FileManager.default.contents(atPath: SegmentFile.path(done + "/segments", id)))
            } else {
                #expect(now == oldBytes)
            }
            // Hidden throughout; the purge finishes what is left.
            #expect(try await !runExists(reopened, "run-9"))
            #expect(try await runExists(reopened, "run-10"))
            // (its purge thread may get there first)
            for _ in 0..<40 where reopened.erasures.erasure("erasure-1")?.state != .erased {
                _ = reopened.purgeErased()
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(reopened.erasures.erasure("erasure-1")?.state == .erased)
            await reopened.close()
            let report = verify(dir)
            #expect(report.ok, "\(signed): \(report.problems)")
            #expect(report.leaves == UInt64(spans))
            #expect(try storedTraces(dir)[9] == nil)
        }
    }
}

extension SpanStoreTests {
    /// A batch of `n` spans of trace `trace` in `tenant`'s resource.
    func tenantBatch(trace: UInt8, spans n: Int, tenant: String) throws -> IngestBatch {
        let spans = (1...n).map { i in
            TestSpan(
                trace: RequestBuilder.traceID(trace), span: RequestBuilder.spanID(UInt8(i), trace),
                parent: i == 1 ? [] : RequestBuilder.spanID(1, trace), name: "step \(i)",
                attributes: [("agent.run.id", .string("run-\(trace)")), ("note", .string("\(tenant)-note-\(trace)"))])
        }
        return try ExportRequestDecoder().decode(
            RequestBuilder.request(
                resource: [("service.name", .string("agent")), ("tenant.id", .string(tenant))], spans: spans))
    }

    /// Two tenants in the same segments, one kept 100 s and the other for ever: once past
    /// its age, the first tenant's spans leave the segments by a rewrite, the other's stay,
    /// and the evidence still verifies.
    @Test func aTenantPastItsAgeLeavesSegmentsItSharesByARewrite() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var c = evidenceConfiguration(dir)
        c.retention = .init(maxAge: nil, tenantMaxAge: ["globex": 100])
        var store = try SpanStore(configuration: c, logger: logger)
        var spans = 0
        for t in UInt8(1)...80 {
            try await store.append(tenantBatch(trace: t, spans: 5, tenant: t % 2 == 0 ? "globex" : "acme"))
            spans += 5
        }
        await store.close()
        let segments = SegmentFile.list(dir.path + "/data/segments")
        try #require(segments.count > 3)
        store = try SpanStore(configuration: c, logger: logger)
        #expect(store.expire(grace: 0).isEmpty)  // young
        for id in segments.dropLast() { age(dir, segment: id, by: 500) }
        let expired = store.expire(grace: 0)
        #expect(!expired.isEmpty && expired.allSatisfy(\.rewritten))
        #expect(expired.reduce(0) { $0 + $1.spans } > 0)
        for t in UInt8(1)...80 {
            let kept = try await runExists(store, "run-\(t)")
            // acme's all stay; globex's go, but for those in the last (young) segment.
            if t % 2 == 1 { #expect(kept, "run-\(t)") }
        }
        #expect(try await !runExists(store, "run-2"))
        #expect(store.expire(grace: 0).isEmpty)  // nothing more to remove
        await store.close()
        let stored = try storedTraces(dir)
        for t in UInt8(1)...80 where t % 2 == 1 { #expect(stored[t] == 5, "trace \(t)") }
        #expect(stored[2] == nil)
        // Ages kept: the rewritten segments still read as old.
        let report = verify(dir)
        #expect(report.ok, "\(report.problems)")
        #expect(report.leaves == UInt64(spans))
        #expect(report.erasedLeaves == UInt64(expired.reduce(0) { $0 + $1.spans }))
    }
}
