import FlightRecorderEvidence
import FlightRecorderIngest
import FlightRecorderOTLP
import FlightRecorderQuery
import FlightRecorderStorage
import FlightRecorderTesting
import Foundation
import Logging
import NIOCore
import Synchronization
import Testing

@testable import FlightRecorderAudit

/// The mutation suite: real bundles, exported from a real store with an evidence log fed with
/// generated agent traffic (four tenants, interleaved runs, policy checks), then mutated at
/// random in every way the issue names. Each mutation must fail verification; untouched
/// bundles must pass.
@Suite(.serialized) struct BundleMutationTests {
    static let signer = try! NoteSigner.generate(name: "flightrec.test/audit")
    let logger = Logger(label: "test")

    func makeStore(_ dir: TemporaryDirectory, blockBytes: Int = 16 << 10) throws -> SpanStore {
        var c = StoreConfiguration(directory: dir.path + "/data")
        c.segmentBytes = 256 << 10
        c.blockBytes = blockBytes
        c.evidence = .init(signer: Self.signer)
        return try SpanStore(configuration: c, logger: logger)
    }

    /// Every third request's leaves are left to the store's writer (logged not canonical, so
    /// an export unpacks its block); the others' are ingest's own (canonical).
    func ingest(_ store: SpanStore, _ workload: inout AgentWorkload, requests: Int) async throws {
        var decoder = ExportRequestDecoder()
        for i in 0..<requests {
            decoder.evidenceLeaves = i % 3 != 2
            try await store.append(try decoder.decode(workload.nextRequest().bytes))
        }
    }

    /// An export reads a canonical block from its bytes and any other by unpacking it: the
    /// same requests stored either way export the same spans, and both bundles verify.
    @Test func canonicalAndUnpackedBlocksExportTheSameSpans() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var options = AgentWorkload.Options()
        options.spansPerRequest = 48
        var workload = AgentWorkload(options: options)
        let requests = (0..<12).map { _ in workload.nextRequest().bytes }
        var exported: [[(name: String, bytes: [UInt8])]] = []
        for canonical in [true, false] {
            let sub = TemporaryDirectory()
            defer { sub.remove() }
            let store = try makeStore(sub)
            var decoder = ExportRequestDecoder()
            decoder.evidenceLeaves = canonical
            for r in requests { try await store.append(try decoder.decode(r)) }
            let acme = TenantScope.only(["acme"])
            let runs = try await store.listRuns(limit: 200, scope: acme)
            #expect(runs.count >= 2)
            for request in [
                AuditExportRequest(selection: .range, since: 1, scope: acme, tenant: "acme"),
                AuditExportRequest(selection: .run(runs[0].runID), scope: acme, tenant: nil),
            ] {
                let archive = try await bundle(store, dir, request)
                #expect(Self.verify(archive).ok)
                exported.append(try Self.files(archive).filter { $0.name.hasPrefix("spans.") })
            }
            await store.close()
        }
        #expect(exported.count == 4)
        for i in 0..<2 {
            #expect(exported[i].map(\.name) == exported[i + 2].map(\.name))
            #expect(!exported[i].isEmpty && exported[i].map(\.bytes) == exported[i + 2].map(\.bytes))
        }
    }

    /// A store written before salted leaves (here: with the log off) and added to since: a
    /// range export holds spans of both kinds, their salts in `proof.json` (zeros for the
    /// unsalted), and verifies.
    @Test func bundlesOfUnsaltedAndSaltedSpansVerify() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var workload = AgentWorkload(options: .init())
        var c = StoreConfiguration(directory: dir.path + "/data")
        (c.segmentBytes, c.blockBytes) = (256 << 10, 16 << 10)
        let plain = try SpanStore(configuration: c, logger: logger)
        try await ingest(plain, &workload, requests: 12)
        await plain.close()
        let store = try makeStore(dir)
        try await ingest(store, &workload, requests: 12)
        let acme = TenantScope.only(["acme"])
        let archive = try await bundle(
            store, dir, AuditExportRequest(selection: .range, since: 1, scope: acme, tenant: "acme"))
        await store.close()
        let report = Self.verify(archive)
        #expect(report.ok, "\(report.failures)")
        let proofFile = try #require(try Self.files(archive).first { $0.name == AuditBundle.proof })
        let proof = try #require(BundleProof.read(Data(proofFile.bytes)))
        let salts = try #require(proof.salts(spans: proof.leafIndices.count))
        #expect(salts.contains(.none) && salts.contains { !$0.isNone })
    }

    /// Where each request is one tenant's, a tenant's range export leaves the other tenants'
    /// leaves unhashed in the tiles that hold none of its own (the proof takes those tiles
    /// from the log), and the bundle still verifies; so does a run's.
    @Test func otherTenantsTilesComeFromTheLog() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var options = AgentWorkload.Options()
        options.tenantPerRequest = true
        var workload = AgentWorkload(options: options)
        let store = try makeStore(dir, blockBytes: 1 << 20)
        var decoder = ExportRequestDecoder()
        decoder.evidenceLeaves = true
        for _ in 0..<16 { try await store.append(try decoder.decode(workload.nextRequest().bytes)) }
        let acme = TenantScope.only(["acme"])
        let range = AuditExportRequest(selection: .range, since: 1, scope: acme, tenant: "acme")
        let snapshot = try store.evidenceLog!.snapshot()
        let plan = try await AuditExporter.plan(store: store, request: range, snapshot: snapshot)
        let read = try AuditExporter.readSpans(plan: plan, snapshot: snapshot, directory: dir.path + "/read")
        let skipped = read.leaves.unhashed.reduce(0) { $0 + $1.count }
        #expect(skipped >= 256, "\(skipped) leaves unhashed of \(read.leaves.hashes.count)")
        #expect(read.indices.count == 4 * 512)
        let runs = try await store.listRuns(limit: 10, scope: acme)
        for request in [range, AuditExportRequest(selection: .run(runs[0].runID), scope: acme, tenant: nil)] {
            let report = Self.verify(try await bundle(store, dir, request))
            #expect(report.ok, "\(report.failures)")
        }
        await store.close()
    }

    func bundle(_ store: SpanStore, _ dir: TemporaryDirectory, _ request: AuditExportRequest) async throws -> [UInt8] {
        let prepared = try await AuditExporter.export(
            store: store, request: request, redactionPolicyDigest: String(repeating: "0", count: 64),
            directory: dir.path + "/export-\(UUID().uuidString)")
        defer { prepared.remove() }
        var out: [UInt8] = []
        try await prepared.forEachChunk { chunk in chunk.withUnsafeReadableBytes { out += $0 } }
        #expect(out.count == prepared.archiveSize)
        return out
    }

    static func files(_ archive: [UInt8]) throws -> [(name: String, bytes: [UInt8])] {
        try archive.withUnsafeBytes { raw in try Tar.members(raw).map { ($0.name, Array(raw[$0.range])) } }
    }

    static func archive(_ files: [(name: String, bytes: [UInt8])]) -> [UInt8] {
        var out: [UInt8] = []
        for f in files {
            out += Tar.header(name: f.name, size: f.bytes.count, mtime: 1_767_000_000) + f.bytes
            out += [UInt8](repeating: 0, count: Tar.padding(f.bytes.count))
        }
        return out + [UInt8](repeating: 0, count: 2 * Tar.block)
    }

    static func verify(_ archive: [UInt8]) -> BundleVerifier.Report {
        archive.withUnsafeBytes { BundleVerifier.verify(archive: $0, key: signer.verifier, pinned: nil) }
    }

    static func lines(_ bytes: [UInt8]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var start = 0
        for (i, b) in bytes.enumerated() where b == 0x0A {
            out.append(Array(bytes[start...i]))
            start = i + 1
        }
        if start < bytes.count { out.append(Array(bytes[start...])) }
        return out
    }

    /// One random mutation of `files`, and what it was; nil when the draw changed nothing.
    static func mutate(
        _ files: [(name: String, bytes: [UInt8])], older: [(name: String, bytes: [UInt8])], kind: Int,
        _ rng: inout SplitMix64
    ) throws -> (files: [(name: String, bytes: [UInt8])], what: String)? {
        var out = files
        let i = Int(rng.next() % UInt64(files.count))
        let name = files[i].name
        switch kind {
        case 0:  // a bit flipped anywhere in any file
            guard !files[i].bytes.isEmpty else { return nil }
            let at = Int(rng.next() % UInt64(files[i].bytes.count))
            out[i].bytes[at] ^= UInt8(1 << (rng.next() % 8))
            return (out, "bit flip in \(name) at \(at)")
        case 1, 2, 3:  // a line deleted, duplicated, or two lines swapped
            var ls = lines(files[i].bytes)
            guard ls.count >= (kind == 3 ? 2 : 1) else { return nil }
            let a = Int(rng.next() % UInt64(ls.count))
            switch kind {
            case 1:
                ls.remove(at: a)
            case 2:
                ls.insert(ls[a], at: Int(rng.next() % UInt64(ls.count + 1)))
            default:
                var b = Int(rng.next() % UInt64(ls.count))
                if b == a { b = (a + 1) % ls.count }
                guard ls[a] != ls[b] else { return nil }
                ls.swapAt(a, b)
            }
            out[i].bytes = ls.flatMap { $0 }
            guard out[i].bytes != files[i].bytes else { return nil }
            return (out, ["", "line deleted", "line duplicated", "lines swapped"][kind] + " in \(name)")
        case 4:  // a file removed
            out.remove(at: i)
            return (out, "\(name) removed")
        case 5:  // a file added
            let names = ["notes.txt", "spans2.otlp.jsonl", "README", "extra.json"]
            out.insert(
                (names[Int(rng.next() % 4)], Array("added \(rng.next())\n".utf8)),
                at: Int(rng.next() % UInt64(out.count + 1)))
            return (out, "a file added")
        case 6:  // a file from an older bundle
            guard let old = older.first(where: { $0.name == name }), old.bytes != files[i].bytes else { return nil }
            out[i].bytes = old.bytes
            return (out, "\(name) from an older bundle")
        case 7:  // the checkpoint signed by another key of the same name
            let cp = files.firstIndex { $0.name == AuditBundle.checkpoint }!
            let note = try SignedNote(parsing: String(decoding: files[cp].bytes, as: UTF8.self))
            let forged = try NoteSigner.generate(name: signer.name).sign(
                try Checkpoint(text: note.text), time: UInt64(Date().timeIntervalSince1970))
            out[cp].bytes = Array(forged.serialized.utf8)
            return (out, "checkpoint signed by another key")
        default:  // a file's bytes cut short or extended
            guard !files[i].bytes.isEmpty else { return nil }
            if rng.next() % 2 == 0 {
                out[i].bytes.removeLast(1 + Int(rng.next() % UInt64(min(files[i].bytes.count, 64))))
            } else {
                out[i].bytes += Array(" \n".utf8)
            }
            return (out, "\(name) truncated or extended")
        }
    }

    /// One mutation worker's counts, and the error that stopped it, if one did.
    struct Tally: Sendable {
        var detected = 0
        var byKind = [Int](repeating: 0, count: 9)
        var missed: [String] = []
        var error: String?
    }

    @Test func everyMutationOfRealBundlesIsDetectedAndUntouchedBundlesPass() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let store = try makeStore(dir)
        // Small runs in small requests: bundles of tens of spans, so that 10,000 verifications
        // of a debug build fit in CI's time.
        var options = AgentWorkload.Options()
        options.spansPerRequest = 24
        options.stepsPerRun = 6...14
        var workload = AgentWorkload(options: options)
        try await ingest(store, &workload, requests: 24)
        let acme = TenantScope.only(["acme"])
        let runs = try await store.listRuns(limit: 200, scope: acme)
        #expect(runs.count >= 4)
        let older = try await bundle(store, dir, .init(selection: .run(runs[0].runID), scope: acme, tenant: nil))
        try await ingest(store, &workload, requests: 4)

        // The bases: two runs, the runs a where expression finds, one tenant's time range.
        var bases: [(String, [UInt8])] = []
        bases.append(
            ("run", try await bundle(store, dir, .init(selection: .run(runs[0].runID), scope: acme, tenant: nil))))
        bases.append(
            ("run", try await bundle(store, dir, .init(selection: .run(runs[1].runID), scope: acme, tenant: nil))))
        bases.append(
            (
                "where",
                try await bundle(
                    store, dir, .init(selection: .filter("policy.outcome = \"blocked\""), scope: acme, tenant: nil))
            ))
        bases.append(
            ("range", try await bundle(store, dir, .init(selection: .range, since: 1, scope: acme, tenant: "acme"))))
        for (kind, b) in bases {
            let report = Self.verify(b)
            #expect(report.ok, "\(kind): \(report.failures)")
            #expect(report.spans > 0)
            print("mutation base \(kind): \(b.count) bytes, \(report.spans) spans")
        }

        // 100 untouched bundles: every run of the tenant and more ranges, exported afresh.
        var untouched = 0
        var n = 0
        while untouched < 100 {
            let request: AuditExportRequest =
                n % 4 == 3
                ? .init(selection: .range, since: 1, scope: acme, tenant: "acme")
                : .init(selection: .run(runs[n % runs.count].runID), scope: acme, tenant: nil)
            let report = Self.verify(try await bundle(store, dir, request))
            #expect(report.ok, "untouched bundle \(n): \(report.failures)")
            untouched += 1
            n += 1
            if n % 10 == 0 { try await ingest(store, &workload, requests: 1) }
        }
        await store.close()

        // The mutations: 10,000 of them, shared between one worker a core (each with its own
        // seeded generator, so a run is reproducible), each verified by the real verifier.
        let olderFiles = try Self.files(older)
        let baseFiles = try bases.map { try Self.files($0.1) }
        let target = 10_000
        let workers = max(1, min(4, ProcessInfo.processInfo.activeProcessorCount))
        let tallies = Mutex([Tally](repeating: Tally(), count: workers))
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            var tally = Tally()
            var rng = SplitMix64(seed: 2026_12_04 &+ UInt64(w))
            let share = target / workers + (w < target % workers ? 1 : 0)
            var attempt = 0
            do {
                while tally.detected + tally.missed.count < share {
                    let base = baseFiles[attempt % baseFiles.count]
                    let kind = attempt % 9
                    attempt += 1
                    guard let (mutated, what) = try Self.mutate(base, older: olderFiles, kind: kind, &rng) else {
                        continue
                    }
                    if Self.verify(Self.archive(mutated)).ok { tally.missed.append(what) } else { tally.detected += 1 }
                    tally.byKind[kind] += 1
                }
            } catch {
                tally.error = "\(error)"
            }
            tallies.withLock { $0[w] = tally }
        }
        let all = tallies.withLock { $0 }
        #expect(all.allSatisfy { $0.error == nil }, "\(all.compactMap(\.error))")
        let detected = all.reduce(0) { $0 + $1.detected }
        let missed = all.flatMap(\.missed)
        let byKind = (0..<9).map { k in all.reduce(0) { $0 + $1.byKind[k] } }
        #expect(missed.isEmpty, "undetected: \(missed.prefix(10))")
        #expect(detected == target)
        #expect(byKind.allSatisfy { $0 > 0 }, "\(byKind)")
    }
}
