import Crypto
import FlightRecorderCore
import FlightRecorderEvidence
import FlightRecorderOTLP
import FlightRecorderSQLite
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What one purge pass did (`SpanStore.purgeErased`).
public struct PurgeResult: Sendable {
    /// Segments rewritten without the erased spans.
    public var rewritten: [Int64] = []
    public var erasedSpans = 0
    /// Erasures whose bytes are all gone (`Erasure.State.erased`) after this pass.
    public var completed: [String] = []
    /// Why some erasure is not complete yet (a segment still active, under repair, failing).
    public var waiting: [String] = []
}

extension SpanStore {
    /// Records an erasure (durable and hiding before it returns), asks the writer to seal the
    /// active segment (only sealed segments are rewritten) and wakes the purge.
    public func recordErasure(_ draft: Erasure) throws(StorageError) -> Erasure {
        var e = draft
        // The segment being written, unless it holds nothing yet (then nothing acknowledged
        // before now is in it, and it need not seal). Segments after it hold only spans that
        // arrived after the erasure: it does not reach them (or an erasure of a tenant that
        // keeps sending would never end).
        let active = catalog.snapshot.last { $0.bloom == nil }?.id
        e.lastSegment = active
        e.activeSegment = active.flatMap {
            SegmentFile.fileSize(path: SegmentFile.path(configuration.segmentDirectory, $0)) > SegmentFile.headerSize
                ? $0 : nil
        }
        let recorded = try erasures.add(e)
        queue.requestSeal()
        purgeWake.signal()
        return recorded
    }

    /// Removes the bytes of every erasure still only hiding its data: each sealed segment
    /// holding a hidden span is rewritten without it (`rewriteSegment`), and once no segment
    /// holds any of an erasure's data (the segment active when it was made sealed too), a
    /// signed `ErasureReceipt` goes to the evidence log and the erasure is marked erased. A
    /// segment that cannot be rewritten now (active, under repair, an export reading the log)
    /// waits for the next pass; the tombstone hides its data meanwhile.
    public func purgeErased(now: Double? = nil) -> PurgeResult {
        maintenance.lock()
        defer { maintenance.unlock() }
        var result = PurgeResult()
        let pending = erasures.all.filter { $0.state == .hidden }
        guard !pending.isEmpty else { return result }
        let hides = erasures.dataFilter()
        var touched: [Int64: Set<String>] = [:]
        var blocks: [Int64: Set<Int>?] = [:]
        do {
            let found = try extents(pending)
            touched = found.mapValues(\.erasures)
            blocks = found.mapValues(\.blocks)
        } catch {
            result.waiting.append("the index could not be read: \(error)")
            return result
        }
        let entries = catalog.snapshot
        let sealed = Set(entries.filter { $0.bloom != nil }.map(\.id))
        let repairing = repairs.ids.withLock { $0 }
        var failed: Set<String> = []
        for (id, ids) in touched.sorted(by: { $0.key < $1.key }) {
            guard sealed.contains(id), !repairing.contains(id) else {
                queue.requestSeal()
                result.waiting.append("segment \(id) is not sealed yet")
                failed.formUnion(ids)
                continue
            }
            do {
                if let done = try rewriteSegment(id, hides: hides, erasures: ids.sorted(), blocks: blocks[id] ?? nil) {
                    result.rewritten.append(id)
                    result.erasedSpans += done
                }
            } catch {
                logger.error(
                    "erasure: could not rewrite a segment; retried at the next pass",
                    metadata: ["segment": "\(id)", "error": "\(error)"])
                result.waiting.append("segment \(id): \(error)")
                failed.formUnion(ids)
            }
        }
        // Complete: nothing of it left in any segment, and the segment that was active when it
        // was made is sealed (what was queued then is in a sealed segment, so it was looked at).
        let after = (try? segmentsHolding(pending)) ?? touched
        let left = Set(after.values.flatMap { $0 })
        let sealedNow = Set(catalog.snapshot.filter { $0.bloom != nil }.map(\.id))
        let present = Set(catalog.snapshot.map(\.id))
        for e in pending where !left.contains(e.id) && !failed.contains(e.id) {
            if let a = e.activeSegment, present.contains(a), !sealedNow.contains(a) {
                queue.requestSeal()
                continue
            }
            do {
                try complete(e, segments: touched.filter { $0.value.contains(e.id) }.map(\.key), now: now)
                result.completed.append(e.id)
            } catch {
                logger.error(
                    "erasure: could not record its receipt", metadata: ["erasure": "\(e.id)", "error": "\(error)"])
            }
        }
        return result
    }

    /// The segments (sealed or not) holding any data of `pending`, with the erasures each holds.
    func segmentsHolding(_ pending: [Erasure]) throws(SQLiteError) -> [Int64: Set<String>] {
        try extents(pending).mapValues(\.erasures)
    }

    /// Where `pending`'s data is: per segment, the erasures it holds data of and the offsets of
    /// the blocks holding it (nil: any block may, for a tenant's).
    func extents(_ pending: [Erasure]) throws(SQLiteError) -> [Int64: (erasures: Set<String>, blocks: Set<Int>?)] {
        // An index reader of its own that leaves nothing out: it must see the erased data.
        let reader = IndexReader(catalog: catalog, maxOpenSegments: 8)
        var out: [Int64: (erasures: Set<String>, blocks: Set<Int>?)] = [:]
        for e in pending {
            let reaches = { (segment: Int64) in segment <= (e.lastSegment ?? .max) }
            if e.kind == .tenant, let t = e.tenant {
                for s in try reader.tenantExtent(t).segments where reaches(s) {
                    out[s, default: ([], [])].erasures.insert(e.id)
                    out[s]!.blocks = nil
                }
            }
            for t in e.hiddenTraces {
                guard let trace = TraceID(hex: t.trace) else { continue }
                for b in try reader.blocks(ofTrace: trace) where reaches(b.segment) {
                    out[b.segment, default: ([], [])].erasures.insert(e.id)
                    out[b.segment]!.blocks?.insert(b.offset)
                }
            }
        }
        return out
    }

    /// Marks `e` erased, with its receipt in the evidence log first.
    private func complete(_ e: Erasure, segments: [Int64], now: Double?) throws(StorageError) {
        let at = UInt64(now ?? Date().timeIntervalSince1970)
        if let log = evidenceLog {
            try log.appendErasureReceipt(
                ErasureReceipt(
                    id: e.id, kind: e.kind.rawValue, tenant: e.tenant ?? "-", key: e.key ?? "-",
                    valueDigest: e.valueDigest ?? "-", requestedBy: e.requestedBy, requestedAt: UInt64(e.requestedAt),
                    completedAt: at, reason: e.reason, runs: e.runs, spans: e.spans,
                    segments: Array(Set(segments + e.segments)).sorted(), bundles: erasures.bundles(holding: e)))
        }
        try erasures.markErased(e.id, at: Int64(at))
        logger.notice(
            "erasure complete: its spans are gone from the segments and the index",
            metadata: ["erasure": "\(e.id)", "segments": "\(segments.count)"])
    }

    /// Rewrites sealed segment `id` without the spans `hides` names: blocks holding none are
    /// copied as they are, the others re-encoded without them (split where erased spans sat, so
    /// each new block's spans keep consecutive leaves); then the index is rebuilt from the new
    /// file, the evidence log signs the rewrite (the erased leaves' hashes, the new records),
    /// and the new file and index replace the old under the readers' locks. A crash before the
    /// log's note leaves the old segment (the pass runs again); after it, start-up finishes
    /// the swap (`rollForwardRewrites`). Returns the spans removed; nil when none was there.
    func rewriteSegment(
        _ id: Int64, hides: (String, TraceID) -> Bool, erasures ids: [String], blocks candidates: Set<Int>? = nil
    ) throws(StorageError) -> Int? {
        let dir = configuration.segmentDirectory
        let path = SegmentFile.path(dir, id)
        let scan = try SegmentScanner(path: path).scan(from: SegmentFile.headerSize)
        guard scan.corruptRegions.isEmpty, scan.tornBytes == 0 else {
            throw .corrupt("segment \(id) holds damaged bytes (damage.log); it is not rewritten")
        }
        let log = evidenceLog
        let oldRecords = try log?.records(ofSegment: id) ?? []
        var recordAt: [Int: EvidenceLog.Record] = [:]
        for r in oldRecords where !r.isHole { recordAt[r.offset] = r }
        if log != nil && recordAt.count != scan.blocks.count {
            throw .corrupt("the evidence log's records of segment \(id) do not match its blocks")
        }
        var out = try SegmentReader.readFrame(path: path, offset: 0, length: SegmentFile.headerSize)
        var replacement: [Int: [EvidenceLog.Record]] = [:]
        var erasedLeaves: [UInt64: TreeHash] = [:]
        var erased = 0
        /// Copies `frame` as it stands, its record (if logged) moved to its new offset.
        func copy(_ frame: [UInt8], at offset: Int) {
            if var r = recordAt[offset] {
                r.offset = out.count
                replacement[offset] = [r]
            }
            out += frame
        }
        for block in scan.blocks {
            if stopRebuild.isSet { throw .io("the store is closing; the rewrite of segment \(id) goes on at start-up") }
            let frame = try SegmentReader.readFrame(path: path, offset: block.offset, length: block.header.frameLength)
            let rec = recordAt[block.offset]
            // A block the index says holds none of the erased traces is copied as it is.
            if let candidates, !candidates.contains(block.offset) {
                copy(frame, at: block.offset)
                continue
            }
            let (raw, blockSalts) = try BlockCodec.decodeSalted(frame: frame)
            guard let spans = BlockSpans(raw) else {
                throw .corrupt("segment \(id), block at \(block.offset): does not decode as OTLP spans")
            }
            let hidden = spans.keys.map { hides($0.tenant, $0.trace) }
            guard hidden.contains(true) else {
                copy(frame, at: block.offset)
                continue
            }
            let leaves = try rec.map { r throws(StorageError) in
                try BlockLeaves.of(raw: raw, canonical: r.canonical, salts: blockSalts)
            }
            // A salted block's kept spans keep their salts, held as they are: the key that
            // derived them would derive the erased spans' salts too, so it goes with them (and
            // an erased span's leaf hash, left in the log, says nothing without its salt).
            let salts = blockSalts?.all() ?? []
            if !salts.isEmpty && salts.count != spans.count {
                throw .corrupt("segment \(id), block at \(block.offset): its salts do not match its spans")
            }
            if let leaves, leaves.count != spans.count {
                throw .corrupt("segment \(id), block at \(block.offset): its spans do not match its log record")
            }
            var records: [EvidenceLog.Record] = []
            var i = 0
            while i < spans.count {
                var j = i
                while j < spans.count, hidden[j] == hidden[i] { j += 1 }
                if hidden[i] {
                    erased += j - i
                    if let rec, let leaves {
                        for k in i..<j { erasedLeaves[rec.firstLeaf + UInt64(k)] = leaves[k] }
                        records.append(.hole(segment: id, firstLeaf: rec.firstLeaf + UInt64(i), spans: j - i))
                    }
                } else {
                    let payload = spans.payload(i..<j)
                    let at = out.count
                    let keptSalts = salts.isEmpty ? [] : Array(salts[i..<j])
                    payload.withUnsafeBytes {
                        BlockCodec.encode(
                            $0, spanCount: j - i, codec: block.header.codec,
                            salts: keptSalts.isEmpty ? nil : SpanSalts(explicit: keptSalts), into: &out)
                    }
                    if let rec, let leaves {
                        // The spans kept keep their leaves: checked, so the tree cannot change.
                        let kept = payload.withUnsafeBytes { SpanLeaves.hashes(canonicalPayload: $0, salts: keptSalts) }
                        guard let kept, kept[...] == leaves[i..<j] else {
                            throw .corrupt(
                                "segment \(id), block at \(block.offset): the rewritten spans' leaves differ")
                        }
                        let h = out.withUnsafeBytes { BlockCodec.header(UnsafeRawBufferPointer(rebasing: $0[at...])) }!
                        records.append(
                            EvidenceLog.Record(
                                segment: id, offset: at, firstLeaf: rec.firstLeaf + UInt64(i), spans: j - i,
                                frameLength: h.frameLength, checksum: h.checksum, canonical: true))
                    }
                }
                i = j
            }
            replacement[block.offset] = records
        }
        guard erased > 0 else { return nil }
        var newRecords: [EvidenceLog.Record] = []
        for r in oldRecords {
            if r.isHole { newRecords.append(r) } else { newRecords += replacement[r.offset] ?? [] }
        }

        // The new file, synced, its times kept (retention counts a segment's age from them).
        let scratch = dir + "/erase-\(id).tmp"
        Self.removeScratch(scratch)
        guard mkdir(scratch, 0o750) == 0 else { throw .io("create \(scratch)") }
        // Kept when the swap fails after the log signed the rewrite: start-up finishes it.
        var swapping = false
        defer { if !swapping { Self.removeScratch(scratch) } }
        let tmp = SegmentFile.path(scratch, id)
        try Self.writeSynced(tmp, out, timesOf: path)
        let digest = Hex.encode(SHA256.hash(data: out))

        // Its index, built from it before anything is swapped.
        let recovery = StoreRecovery(
            configuration: configuration, catalog: SegmentCatalog(directory: scratch),
            older: IndexReader(catalog: catalog, sealedOnly: true, before: id), damage: damage, logger: logger)
        let bloom = try recovery.rebuildSealed(id, segmentDirectory: scratch)
        let builtIndex = IndexSchema.path(scratch, id)
        let target = IndexSchema.path(dir, id)

        func swap() throws(StorageError) {
            swapping = true
            let filter = IndexSchema.attributeFilterPath(builtIndex)
            if access(filter, F_OK) == 0 {
                guard rename(filter, IndexSchema.attributeFilterPath(target)) == 0 else {
                    throw .io("replace the attribute filter of segment \(id)")
                }
            } else {
                unlink(IndexSchema.attributeFilterPath(target))
            }
            guard rename(builtIndex, target) == 0 else { throw .io("replace the index of segment \(id)") }
            guard rename(tmp, path) == 0 else { throw .io("replace segment \(id)") }
            try SegmentFile.syncDirectory(dir)
            catalog.replace(id, bloom: bloom)
            segmentReader.forget(segment: id)
            backgroundReader?.segments.forget(segment: id)
            swapping = false
        }
        backgroundLock.lock()
        readerLock.lock()
        let swapped = Result { () throws(StorageError) in
            if let log {
                try log.rewrite(
                    segment: id, erasures: ids, records: newRecords, erased: erasedLeaves, fileSize: out.count,
                    fileDigest: digest, now: UInt64(time(nil)), swap: swap)
            } else {
                try swap()
            }
        }
        readerLock.unlock()
        backgroundLock.unlock()
        if swapping {
            logger.critical(
                "erasure: the log signed a segment's rewrite but the files could not be swapped; restart to finish it",
                metadata: ["segment": "\(id)"])
        }
        try swapped.get()
        logger.notice(
            "erasure: segment rewritten without the erased spans",
            metadata: ["segment": "\(id)", "spans_removed": "\(erased)", "bytes": "\(out.count)"])
        return erased
    }

    /// Runs `purgeErased` on a thread of its own: woken by each erasure recorded, and every
    /// 10 s while any is not complete (a segment to seal, a repair or an export to wait for),
    /// so the bytes go within seconds, never later than `Erasure`'s hour.
    func startPurge() {
        let thread = Thread { [weak self] in
            // Below ingest and queries: an erasure has an hour, and is hidden meanwhile.
            ThreadPriority.setNice(10)
            var first = true
            while true {
                guard let wake = self?.purgeWake else { return }
                // At start-up, erasures a restart interrupted go on at once.
                if !first { _ = wake.wait(timeout: .now() + 10) }
                first = false
                guard let self, !self.stopRebuild.isSet else { return }
                // Let a seal asked for with the erasure land first.
                if self.erasures.all.contains(where: { $0.state == .hidden }) {
                    Thread.sleep(forTimeInterval: 0.2)
                    _ = self.purgeErased()
                }
            }
        }
        thread.name = "flightrec-erasure"
        thread.start()
    }

    static func writeSynced(_ path: String, _ bytes: [UInt8], timesOf original: String) throws(StorageError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw .io("create \(path)") }
        defer { Glibc.close(fd) }
        try bytes.withUnsafeBytes { b in Result { () throws(StorageError) in try SegmentFile.writeFully(fd, b) } }.get()
        var st = stat()
        if stat(original, &st) == 0 {
            var times = [st.st_atim, st.st_mtim]
            futimens(fd, &times)
        }
        guard fsync(fd) == 0 else { throw .io("fsync \(path)") }
    }

    static func removeScratch(_ scratch: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: scratch)) ?? [] {
            unlink(scratch + "/" + name)
        }
        rmdir(scratch)
    }

    /// Start-up, before anything reads the segments: a rewrite the evidence log signed whose
    /// new file is still in its scratch directory (a crash between the note and the swap) is
    /// finished (the file moved in, the old index removed to be rebuilt); any other scratch
    /// is removed, leaving the old segment for the next pass.
    static func rollForwardRewrites(configuration: StoreConfiguration, logger: Logger) {
        let dir = configuration.segmentDirectory
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        let scratches = names.filter { $0.hasPrefix("erase-") && $0.hasSuffix(".tmp") }
        guard !scratches.isEmpty else { return }
        let signed =
            configuration.evidence.map {
                SegmentRewrite.latest(
                    SegmentRewrite.read(directory: configuration.evidenceDirectory, verifier: $0.signer.verifier)
                        .rewrites
                ).bySegment
            } ?? [:]
        for name in scratches {
            let scratch = dir + "/" + name
            defer { removeScratch(scratch) }
            guard let id = Int64(name.dropFirst(6).dropLast(4)), let rewrite = signed[id] else { continue }
            let tmp = SegmentFile.path(scratch, id)
            guard let data = FileManager.default.contents(atPath: tmp), data.count == rewrite.fileSize,
                Hex.encode(SHA256.hash(data: data)) == rewrite.fileDigest
            else { continue }
            let target = IndexSchema.path(dir, id)
            for p in [target, target + "-wal", target + "-shm", IndexSchema.attributeFilterPath(target)] { unlink(p) }
            if rename(tmp, SegmentFile.path(dir, id)) == 0 {
                try? SegmentFile.syncDirectory(dir)
                logger.notice("erasure: finished a segment rewrite a crash interrupted", metadata: ["segment": "\(id)"])
            }
        }
    }
}

/// A block's spans, each as its own single-span `TracesData` (the message its leaf hashes)
/// with its tenant and trace: what a rewrite keeps or drops, one span at a time.
struct BlockSpans {
    struct Key {
        var tenant: String
        var trace: TraceID
    }

    var keys: [Key] = []
    var messages: [[UInt8]] = []
    var count: Int { keys.count }

    /// nil when the payload does not decode.
    init?(_ raw: [UInt8]) {
        let ok: Bool = raw.withUnsafeBytes { raw in
            var tenants = ResourceTenants()
            if let groups = SpanLeaves.wireGroups(raw) {
                func part(_ r: Range<Int>?) -> UnsafeRawBufferPointer? {
                    r.map { UnsafeRawBufferPointer(rebasing: raw[$0]) }
                }
                for g in groups {
                    guard let tenant = tenants.tenant(raw, g.resource) else { return false }
                    for scope in g.scopes {
                        for span in scope.spans {
                            guard let trace = Self.trace(raw, span) else { return false }
                            var message: [UInt8] = []
                            SpanLeaves.assemble(
                                resource: part(g.resource), scope: part(scope.scope), span: part(span)!,
                                scopeSchema: part(scope.schema), schema: part(g.schema), into: &message)
                            keys.append(Key(tenant: tenant, trace: trace))
                            messages.append(message)
                        }
                    }
                }
                return true
            }
            // Not protobuf-c's own encoding: each span encoded again, as its leaf is.
            guard let all = UnpackArena.withRequest(raw, { SpanLeaves.messages($0) }) else { return false }
            for m in all {
                let key: Key? = m.withUnsafeBytes { mb in
                    guard let g = SpanLeaves.wireGroups(mb)?.first, let span = g.scopes.first?.spans.first,
                        let tenant = tenants.tenant(mb, g.resource), let trace = Self.trace(mb, span)
                    else { return nil }
                    return Key(tenant: tenant, trace: trace)
                }
                guard let key else { return false }
                keys.append(key)
                messages.append(m)
            }
            return true
        }
        guard ok else { return nil }
    }

    /// The spans `range` as one payload (their messages one after another: a request protobuf
    /// reads as one, whose canonical leaves are the messages' hashes).
    func payload(_ range: Range<Int>) -> [UInt8] { Array(messages[range].joined()) }

    /// The trace ID (field 1) of the span at `range` of `raw`.
    static func trace(_ raw: UnsafeRawBufferPointer, _ range: Range<Int>) -> TraceID? {
        var c = WireCursor(raw, range)
        while !c.atEnd {
            guard let f = c.field() else { return nil }
            if f.number == 1, f.wireType == 2 {
                return TraceID(bytes: UnsafeRawBufferPointer(rebasing: raw[f.payload]))
            }
        }
        return nil
    }
}
