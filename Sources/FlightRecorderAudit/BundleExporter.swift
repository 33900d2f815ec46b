import COTLP
import Crypto
import FlightRecorderCore
import FlightRecorderEvidence
import FlightRecorderOTLP
import FlightRecorderQuery
public import FlightRecorderStorage
import Foundation
public import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What to export.
public struct AuditExportRequest: Sendable {
    public enum Selection: Sendable, Equatable {
        /// One run, by ID (or by a trace ID of it).
        case run(String)
        /// Every run the `where` expression matches (as `GET /api/v1/runs?where=` finds them).
        case filter(String)
        /// Every span of one tenant logged between `since` and `until`, proved complete.
        case range
    }

    public var selection: Selection
    public var since: Int64?
    public var until: Int64?
    /// The tenants the bundle may hold: the token's, narrowed by the request.
    public var scope: TenantScope
    /// The tenant named by the request, if any (a range needs one).
    public var tenant: String?
    /// Tree sizes of checkpoints the auditor pinned: the bundle proves consistency with each.
    public var consistencyFrom: [UInt64] = []

    public init(selection: Selection, since: Int64? = nil, until: Int64? = nil, scope: TenantScope, tenant: String?) {
        self.selection = selection
        self.since = since
        self.until = until
        self.scope = scope
        self.tenant = tenant
    }
}

/// Why an export could not be made; `badRequest` is the caller's to fix.
public struct AuditExportError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable { case badRequest, notFound, unavailable }
    public var kind: Kind
    public var description: String
}

/// A bundle written to a directory, ready to be streamed as one archive (`Tar`).
public struct PreparedBundle: Sendable {
    public var directory: String
    /// Archive members in order, with their sizes.
    public var members: [(name: String, size: Int)]
    public var spans: Int
    public var runs: Int
    public var mtime: Int
    /// The bundle's ID: its `manifest.json`'s SHA-256 (`flightrec audit verify` prints it),
    /// and the runs it holds as `Erasure.digest(tenant:run:)`, for the export log.
    public var id = ""
    public var runDigests: [String] = []
    public var tenants: [String] = []
    /// Members kept in memory, by name (the derived files and everything after them, made
    /// whole in memory anyway, up to `BundleFiles.heldLimit`); the others are files in
    /// `directory`.
    var held: [String: [[UInt8]]] = [:]

    /// The archive's total size.
    public var archiveSize: Int { members.reduce(2 * Tar.block) { $0 + Tar.block + $1.size + Tar.padding($1.size) } }

    /// The archive, in chunks of about `chunk` bytes, read from the files as it goes straight
    /// into the buffers handed on (the body of a response takes them as they are).
    ///
    /// The buffers are used again, round a ring of four: one the response has sent is ours
    /// alone by then and is filled as it is; one still queued is replaced by a new one
    /// (`clear`). Reading into fresh memory each time faulted in every page of the archive
    /// (half of the read-back's cost, `perf`).
    public func forEachChunk(
        chunk: Int = 1 << 20, end: Bool = true, _ body: (ByteBuffer) async throws -> Void
    ) async throws {
        var ring = [ByteBuffer](repeating: ByteBuffer(), count: 4)
        var turn = 0
        // The ring's next buffer, emptied; then kept in the ring as it is handed on.
        func nextBuffer() -> ByteBuffer {
            var buffer = ring[turn]
            ring[turn] = ByteBuffer()  // so `buffer` holds the only reference the ring had
            buffer.clear(minimumCapacity: chunk)
            return buffer
        }
        func keep(_ buffer: ByteBuffer) {
            ring[turn] = buffer
            turn = (turn + 1) % ring.count
        }
        for m in members {
            try await body(ByteBuffer(bytes: Tar.header(name: m.name, size: m.size, mtime: mtime)))
            let pad = Tar.padding(m.size)
            if let pieces = held[m.name] {
                for piece in pieces {
                    var at = 0
                    while at < piece.count {
                        let n = min(chunk, piece.count - at)
                        var buffer = nextBuffer()
                        buffer.writeBytes(piece[at..<at + n])
                        keep(buffer)
                        try await body(buffer)
                        at += n
                    }
                }
                if pad > 0 { try await body(ByteBuffer(repeating: 0, count: pad)) }
                continue
            }
            let fd = open(directory + "/" + m.name, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                throw AuditExportError(kind: .unavailable, description: "bundle file \(m.name) vanished")
            }
            defer { close(fd) }
            var left = m.size
            while left > 0 {
                var buffer = nextBuffer()
                let n = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: min(chunk, left)) { raw in
                    read(fd, raw.baseAddress, min(chunk, left))
                }
                guard n > 0 else { throw AuditExportError(kind: .unavailable, description: "\(m.name) shrank") }
                left -= n
                keep(buffer)
                try await body(buffer)
            }
            if pad > 0 { try await body(ByteBuffer(repeating: 0, count: pad)) }
        }
        if end { try await body(ByteBuffer(repeating: 0, count: 2 * Tar.block)) }
    }

    public func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// A bundle being exported: its first members (the spans) written, the rest being finished.
public struct StartedBundle: Sendable {
    /// The members written so far; `mtime` is the whole archive's.
    public var head: PreparedBundle
    /// The whole bundle (the head's members first); removes the directory if it fails.
    public var finished: Task<PreparedBundle, any Error>

    /// The archive, as `PreparedBundle.forEachChunk` gives it: the head's members at once,
    /// the rest when they are finished. Returns the finished bundle.
    @discardableResult
    public func forEachChunk(_ body: (ByteBuffer) async throws -> Void) async throws -> PreparedBundle {
        try await head.forEachChunk(end: false, body)
        let whole = try await finished.value
        var rest = whole
        rest.members.removeFirst(head.members.count)
        try await rest.forEachChunk(body)
        return whole
    }
}

/// Builds audit bundles (`AuditBundle`) from a store with an evidence log.
///
/// Signs a checkpoint first, so the bundle proves every span acknowledged before the export
/// began; finds the selected spans' blocks through the index (briefly, under the readers'
/// lock), then reads, proves and writes them without it.
public enum AuditExporter {
    /// The whole bundle, written to `directory`.
    public static func export(
        store: SpanStore, request: AuditExportRequest, redactionPolicyDigest: String, directory: String
    ) async throws -> PreparedBundle {
        try await start(
            store: store, request: request, redactionPolicyDigest: redactionPolicyDigest, directory: directory
        ).finished.value
    }

    /// Returns once the spans' files are written (the archive's first members, which a
    /// response can start sending), with the rest (runs, derived files, proof, signatures)
    /// being finished by a task.
    public static func start(
        store: SpanStore, request: AuditExportRequest, redactionPolicyDigest: String, directory: String
    ) async throws -> StartedBundle {
        guard let log = store.evidenceLog else {
            throw AuditExportError(kind: .unavailable, description: "the evidence log is disabled (evidence.enabled)")
        }
        let snapshot = try await NIOThreadPool.singleton.runIfActive { try log.snapshot() }
        let plan = try await Self.plan(store: store, request: request, snapshot: snapshot)
        let read: ReadSpans
        do {
            read = try await NIOThreadPool.singleton.runIfActive {
                try readSpans(plan: plan, snapshot: snapshot, directory: directory)
            }
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        let now = Date()
        let head = PreparedBundle(
            directory: directory, members: read.files.all.map { ($0.name, $0.size) }, spans: read.indices.count,
            runs: 0, mtime: Int(now.timeIntervalSince1970))
        // The proof needs the leaves only: made on a thread of its own while the runs are
        // resolved and the derived files written.
        let (indices, salts, leaves) = (read.indices, read.salts, read.leaves)
        let proving = Background {
            Result {
                try proofJSON(
                    indices: indices, salts: salts, leaves: leaves, plan: plan, snapshot: snapshot, request: request)
            }
        }
        let finished = Task {
            do {
                var runs = plan.runs ?? []
                if plan.runs == nil {
                    let resolver = RunResolver(identity: store.configuration.runIdentity)
                    // The records read through the box, each time for the call alone, so that
                    // `finish` takes the one reference left (and frees them where it chooses).
                    let named = try await NIOThreadPool.singleton.runIfActive {
                        namedRuns(read.records.chunks, identity: resolver.identity)
                    }
                    runs = try await store.read { r, _ in
                        try rangeRuns(read.records.chunks, named: named, resolver: resolver, reader: r)
                    }
                }
                let finalRuns = runs
                return try await NIOThreadPool.singleton.runIfActive {
                    var read = read
                    return try finish(
                        &read, runs: finalRuns, plan: plan, snapshot: snapshot, erasures: store.erasures,
                        request: request,
                        identityKeys: store.configuration.runIdentity.keys,
                        redactionPolicyDigest: redactionPolicyDigest, findingRules: store.configuration.findingRules,
                        now: now, proofJSON: proving.value)
                }
            } catch {
                try? FileManager.default.removeItem(atPath: directory)
                throw error
            }
        }
        return StartedBundle(head: head, finished: finished)
    }

    /// The spans read so far and the files written.
    struct ReadSpans: @unchecked Sendable {  // handed from one pool thread to the next, never shared
        var files: BundleFiles
        var indices: [UInt64]
        /// The spans' leaf salts, as `indices`.
        var salts: [LeafSalt]
        /// The kept records, a chunk a block (joined, they were copied: a retain of every part
        /// of each record, and the array grown and faulted in again at each doubling).
        let records: Records
        var leaves: LeafCache

        /// The records, in a box every copy of a `ReadSpans` shares, which `finish` empties.
        /// Unchecked: filled before it is shared, and emptied by `finish` alone, after every
        /// other reader is done.
        final class Records: @unchecked Sendable {
            private(set) var chunks: [[SpanRecord]]
            init(_ chunks: [[SpanRecord]]) { self.chunks = chunks }

            func take() -> [[SpanRecord]] {
                defer { chunks = [] }
                return chunks
            }
        }
    }

    /// The blocks to read, which spans of them to keep, and the runs they belong to.
    struct Plan: Sendable {
        var blocks: [EvidenceSnapshot.LoggedBlock]
        var keep: @Sendable (SpanRecord, UInt64) -> Bool
        /// The runs, when the selection names them; nil for a range (resolved after reading).
        var runs: [BundleViews.Run]?
        var tenants: [String]
        var target: (note: SignedNote, checkpoint: Checkpoint, time: UInt64?)
        var start: EvidenceSnapshot.Signed?
    }

    static func plan(store: SpanStore, request: AuditExportRequest, snapshot: EvidenceSnapshot) async throws -> Plan {
        let resolver = RunResolver(identity: store.configuration.runIdentity)
        let fresh = (snapshot.note, snapshot.checkpoint, (try? snapshot.signer.verifier.verify(snapshot.note))?.time)
        switch request.selection {
        case .run, .filter:
            var summaries: [RunSummary] = []
            switch request.selection {
            case .run(let id):
                summaries = try await store.read { r, _ in
                    var found = try r.runs(id, scope: request.scope)
                    if found.isEmpty, let trace = TraceID(hex: id) {
                        for (tenant, named) in try r.runs(ofTrace: trace, scope: request.scope) {
                            found += try r.runs(named, scope: .only([tenant]))
                        }
                    }
                    return Array(found.prefix(1))
                }
                guard !summaries.isEmpty else {
                    throw AuditExportError(kind: .notFound, description: "no run with this ID")
                }
            case .filter(let expression):
                let filter: SpanFilter
                do {
                    filter = try SpanFilter.parse(expression)
                } catch {
                    throw AuditExportError(kind: .badRequest, description: "where: \(error.description)")
                }
                let result = try await store.search(
                    narrow: filter.requiredEqualities(among: Set(store.configuration.indexedKeys.keys)),
                    scope: request.scope, since: request.since, until: request.until, limit: 10_000, filter: filter)
                guard result.complete else {
                    throw AuditExportError(
                        kind: .badRequest,
                        description:
                            "where: the search could not examine every candidate run; narrow it with since and until")
                }
                summaries = result.hits.map(\.run)
            case .range: break
            }
            let selected = summaries
            return try await store.read { r, _ in
                var runs: [BundleViews.Run] = []
                var traceRuns: [TenantTrace: String] = [:]
                var wanted: [TenantRun: Int] = [:]
                var refs: Set<BlockRef> = []
                for s in selected {
                    let tenant = s.tenant ?? ResourceFacts.defaultTenant
                    let traces = try r.traces(ofRun: s.runID, tenant: tenant)
                    wanted[TenantRun(tenant: tenant, run: s.runID)] = runs.count
                    runs.append(BundleViews.Run(runID: s.runID, tenant: tenant, traces: traces))
                    for t in traces {
                        traceRuns[TenantTrace(tenant: tenant, trace: t)] = try resolver.traceRun(
                            t, tenant: tenant, reader: r)
                        for b in try r.blocks(ofTrace: t) { refs.insert(b) }
                    }
                }
                let blocks = refs.sorted { ($0.segment, $0.offset) < ($1.segment, $1.offset) }.compactMap {
                    snapshot.block(segment: $0.segment, offset: $0.offset)
                }
                let (traceRunOf, wantedRuns) = (traceRuns, wanted)
                let visible = store.erasures.spanFilter()
                let keep: @Sendable (SpanRecord, UInt64) -> Bool = { span, _ in
                    if let visible, !visible(span) { return false }
                    let key = TenantTrace(tenant: span.tenant, trace: span.traceID)
                    guard let traceRun = traceRunOf[key] else { return false }
                    let run = resolver.run(of: span, traceRun: traceRun)
                    return wantedRuns[TenantRun(tenant: span.tenant, run: run)] != nil
                }
                return Plan(
                    blocks: blocks, keep: keep, runs: runs, tenants: Array(Set(runs.map(\.tenant))).sorted(),
                    target: fresh, start: nil)
            }
        case .range:
            guard let tenant = request.tenant else {
                throw AuditExportError(kind: .badRequest, description: "tenant: a time-range export needs one tenant")
            }
            guard let since = request.since else {
                throw AuditExportError(kind: .badRequest, description: "since: a time-range export needs since")
            }
            // From the last checkpoint signed before `since` (or the log's start): its signed
            // time has whole seconds, so one in `since`'s own second may have been signed after.
            let sinceSeconds = UInt64(max(0, since / 1_000_000_000))
            let start = snapshot.history.last { $0.time < sinceSeconds }
            // ...to the first signed at or after `until`, else the one just signed.
            var target = fresh
            if let until = request.until {
                let untilSeconds = UInt64(max(0, (until + 999_999_999) / 1_000_000_000))
                if let end = snapshot.history.first(where: {
                    $0.time >= untilSeconds && $0.checkpoint.size >= (start?.checkpoint.size ?? 0)
                }) {
                    target = (end.note, end.checkpoint, end.time)
                }
            }
            let from = start?.checkpoint.size ?? 0
            let to = target.1.size
            // Spans an erasure hides are left out, as they are once its rewrite removed them:
            // either way the proof covers exactly the spans the bundle holds.
            let visible = store.erasures.spanFilter()
            let keep: @Sendable (SpanRecord, UInt64) -> Bool = { span, leaf in
                span.tenant == tenant && leaf >= from && leaf < to && visible.map { $0(span) } ?? true
            }
            return Plan(
                blocks: snapshot.blocks(leaves: from, to), keep: keep, runs: nil, tenants: [tenant], target: target,
                start: start)
        }
    }

    struct TenantRunTrace: Hashable {
        var run: Int
        var trace: TraceID
    }

    struct TenantRun: Hashable, Sendable {
        var tenant: String
        var run: String
    }

    /// One block's share of the bundle.
    struct BlockOutput: @unchecked Sendable {  // built on one thread, read on another after
        var json: [UInt8] = []
        var proto: [UInt8] = []
        var indices: [UInt64] = []
        /// The kept spans' leaf salts (`.none` for an unsalted span), as `indices`.
        var salts: [LeafSalt] = []
        var spans: [SpanRecord] = []
        /// Lines (and messages) written.
        var lines = 0
        /// Every leaf of the block (kept or not), for the proof.
        var leaves: [TreeHash] = []
        /// Leaves (absolute indices) not hashed, `leaves` holding a placeholder for each: no
        /// proof node below the tiles can need them (`readCanonical`).
        var unhashed: [Range<UInt64>] = []
    }

    /// The selected spans of `block`: their JSON lines, delimited messages, leaf indices and
    /// records, and the hashes of all its leaves.
    static func read(block: EvidenceSnapshot.LoggedBlock, plan: Plan, snapshot: EvidenceSnapshot) throws -> BlockOutput
    {
        let (payload, salts) = try snapshot.payload(of: block)
        let tenants = Set(plan.tenants)
        guard salts.isEmpty || salts.count == block.spans else {
            throw AuditExportError(
                kind: .unavailable,
                description: "block at segment \(block.segment) offset \(block.offset) has salts for other spans")
        }
        if block.canonical,
            let out = payload.withUnsafeBytes({
                readCanonical($0, salts: salts, block: block, plan: plan, tenants: tenants)
            })
        {
            return out
        }
        var out = BlockOutput()
        out.leaves.reserveCapacity(block.spans)
        var i = 0
        // One unpack: every span's leaf message is packed and hashed (the proof needs them
        // all); a selected tenant's spans are decoded, and the kept ones of each scope group
        // written as one line (and one message): the group's JSON frame once, its spans.
        let unpacked: Bool? = payload.withUnsafeBytes { raw in
            UnpackArena.withRequest(raw) { request -> Bool in
                var group:
                    (rs: UnsafePointer<CResourceSpans>, ss: UnsafePointer<CScopeSpans>, resource: ResourceRecord?)?
                var kept = KeptGroup()
                SpanLeaves.forEachSpanWithParts(request) { message, parts, rs, ss, span in
                    defer { i += 1 }
                    let salt = i < salts.count ? salts[i] : .none
                    out.leaves.append(TreeHash.leaf(salt: salt, message))
                    if group?.rs != rs || group?.ss != ss {
                        kept.flush(into: &out)
                        let resource = TracesDataDecoder.resource(rs, ss)
                        group = (rs, ss, tenants.contains(resource.tenant) ? resource : nil)
                    }
                    guard let resource = group?.resource else { return }
                    kept.offer(
                        span, leaf: block.firstLeaf + UInt64(i), salt: salt, resource: resource, plan: plan,
                        parts: parts, rs: rs, ss: ss, into: &out)
                }
                kept.flush(into: &out)
                return true
            }
        }
        guard unpacked != nil, i == block.spans else {
            throw AuditExportError(
                kind: .unavailable,
                description: "block at segment \(block.segment) offset \(block.offset) does not decode as logged")
        }
        return out
    }

    /// `read` of a canonical block (its leaves hashed from its bytes as they stand): the leaves
    /// hashed so, from the payload, and only the resource groups of a selected tenant unpacked,
    /// each alone; the kept spans' parts are the payload's own bytes. nil when the payload
    /// does not read so (`read` then unpacks it whole).
    ///
    /// Another tenant's leaves are hashed only where the proof may need them: in a 256-leaf
    /// tile that also holds a selected leaf, a tile this block shares with another block, or
    /// the tree's last, incomplete tile (tile by tile: a group may span several). The proof
    /// takes every other tile whole from the log's tiles (the largest subtree without a
    /// selected leaf that holds part of a complete tile without one is that tile or above it).
    /// A node below the tiles that does meet an unhashed leaf is read from the store instead
    /// (`LeafCache`, `CachedNodes`), so this decides speed only: where each request is one
    /// tenant's, most of the other tenants' hashing goes (Bench/README).
    static func readCanonical(
        _ raw: UnsafeRawBufferPointer, salts: [LeafSalt], block: EvidenceSnapshot.LoggedBlock, plan: Plan,
        tenants: Set<String>
    ) -> BlockOutput? {
        guard let groups = SpanLeaves.wireGroups(raw) else { return nil }
        var out = BlockOutput()
        out.leaves.reserveCapacity(block.spans)
        var message: [UInt8] = []
        var kept = KeptGroup()
        var tenantOf = ResourceTenants()
        func part(_ r: Range<Int>?) -> UnsafeRawBufferPointer? { r.map { UnsafeRawBufferPointer(rebasing: raw[$0]) } }
        // Each group's first leaf, span count and whether its tenant is selected, and the
        // tiles holding a selected leaf.
        var shape: [(start: UInt64, count: UInt64, selected: Bool)] = []
        shape.reserveCapacity(groups.count)
        var selectedTiles: Set<UInt64> = []
        var leaf = block.firstLeaf
        for g in groups {
            guard let tenant = tenantOf.tenant(raw, g.resource) else { return nil }
            let n = UInt64(g.scopes.reduce(0) { $0 + $1.spans.count })
            shape.append((leaf, n, tenants.contains(tenant)))
            if shape.last!.selected, n > 0 { selectedTiles.formUnion((leaf >> 8)...((leaf + n - 1) >> 8)) }
            leaf += n
        }
        let (blockStart, blockEnd) = (block.firstLeaf, block.firstLeaf + UInt64(block.spans))
        let completeTiles = plan.target.checkpoint.size >> 8
        func mayBeNeeded(tile t: UInt64) -> Bool {
            let inside = t << 8 >= blockStart && (t + 1) << 8 <= blockEnd
            return !inside || t >= completeTiles || selectedTiles.contains(t)
        }
        // A leaf passed over: a placeholder, and its index joins the unhashed ranges.
        func passOver(_ leaf: UInt64) {
            out.leaves.append(TreeHash.empty)
            if let last = out.unhashed.last, last.upperBound == leaf {
                out.unhashed[out.unhashed.count - 1] = last.lowerBound..<leaf + 1
            } else {
                out.unhashed.append(leaf..<leaf + 1)
            }
        }
        for (g, (start, n, selected)) in zip(groups, shape) {
            guard selected else {
                // Only the leaves in a tile the proof may need: a request of another tenant
                // often spans tiles of its own besides the one it shares.
                guard n > 0, (start >> 8...(start + n - 1) >> 8).contains(where: mayBeNeeded(tile:)) else {
                    out.leaves.append(contentsOf: repeatElement(TreeHash.empty, count: Int(n)))
                    out.unhashed.append(start..<start + n)
                    continue
                }
                var tile = (number: UInt64.max, needed: false)
                var next = Int(start - blockStart)
                g.forEachLeaf(
                    raw, salts: salts, next: &next, into: &message,
                    hashing: { number in
                        let leaf = blockStart + UInt64(number)
                        if leaf >> 8 != tile.number { tile = (leaf >> 8, mayBeNeeded(tile: leaf >> 8)) }
                        if !tile.needed { passOver(leaf) }
                        return tile.needed
                    }
                ) { _, _, hash in out.leaves.append(hash) }
                continue
            }
            // A selected group is decoded first: the spans it keeps are not hashed (the proof's
            // nodes are of subtrees without a kept leaf; the verifier hashes the kept ones), only
            // the others (another run's, or outside the time range).
            let keptBefore = out.indices.count
            let unpacked: Bool? = UnpackArena.withRequest(UnsafeRawBufferPointer(rebasing: raw[g.field])) {
                request -> Bool in
                guard request.pointee.n_resource_spans == 1, let rs = request.pointee.resource_spans[0],
                    rs.pointee.n_scope_spans == g.scopes.count
                else { return false }
                var leaf = start
                for (s, scope) in g.scopes.enumerated() {
                    guard let ss = rs.pointee.scope_spans[s], ss.pointee.n_spans == scope.spans.count else {
                        return false
                    }
                    let resource = TracesDataDecoder.resource(rs, ss)
                    for (k, range) in scope.spans.enumerated() {
                        defer { leaf += 1 }
                        guard let span = ss.pointee.spans[k] else { continue }
                        let at = Int(leaf - blockStart)
                        kept.offer(
                            span, leaf: leaf, salt: at < salts.count ? salts[at] : .none, resource: resource,
                            plan: plan,
                            parts: SpanLeaves.Parts(
                                resource: part(g.resource), scope: part(scope.scope), span: part(range)!,
                                scopeSchema: part(scope.schema), schema: part(g.schema)), rs: rs, ss: ss, into: &out)
                    }
                    kept.flush(into: &out)
                }
                return true
            }
            guard unpacked == true else { return nil }
            // Then its leaves, the kept ones passed over (a placeholder each, `unhashed`).
            let keptLeaves = out.indices[keptBefore...]
            var k = keptLeaves.startIndex
            var next = Int(start - blockStart)
            g.forEachLeaf(
                raw, salts: salts, next: &next, into: &message,
                hashing: { number in
                    let leaf = blockStart + UInt64(number)
                    while k < keptLeaves.endIndex, keptLeaves[k] < leaf { k += 1 }
                    guard k < keptLeaves.endIndex, keptLeaves[k] == leaf else { return true }
                    passOver(leaf)
                    return false
                }
            ) { _, _, hash in out.leaves.append(hash) }
        }
        return out.leaves.count == block.spans ? out : nil
    }

    /// The kept spans of one scope group of a block, becoming one line and one message.
    struct KeptGroup {
        var frame: OTLPJSONEncoder.GroupFrame?
        var spansJSON = JSONWriter(capacity: 1 << 16)
        var spanFields: [UInt8] = []
        var resource: [UInt8]?
        var scope: [UInt8]?
        var scopeSchema: [UInt8]?
        var schema: [UInt8]?
        var message: [UInt8] = []
        /// The names and keys of the block's spans, shared (`StringInterner`).
        var strings = StringInterner()

        /// Keeps `span` (leaf `leaf`) when the plan selects it: its record and leaf index into
        /// `out`, its JSON and encoded parts into the group.
        mutating func offer(
            _ span: UnsafeMutablePointer<CSpan>, leaf: UInt64, salt: LeafSalt, resource: ResourceRecord, plan: Plan,
            parts: @autoclosure () -> SpanLeaves.Parts, rs: UnsafePointer<CResourceSpans>,
            ss: UnsafePointer<CScopeSpans>, into out: inout BlockOutput
        ) {
            guard let traceID = TraceID(bytes: span.pointee.trace_id.rawBuffer),
                let spanID = SpanID(bytes: span.pointee.span_id.rawBuffer)
            else { return }
            let record = TracesDataDecoder.record(
                span.pointee, traceID: traceID, spanID: spanID, resource: resource, strings: &strings)
            guard plan.keep(record, leaf) else { return }
            add(span, parts: parts(), rs: rs, ss: ss)
            out.indices.append(leaf)
            out.salts.append(salt)
            out.spans.append(record)
        }

        mutating func add(
            _ span: UnsafeMutablePointer<CSpan>, parts: SpanLeaves.Parts, rs: UnsafePointer<CResourceSpans>,
            ss: UnsafePointer<CScopeSpans>
        ) {
            if frame == nil {
                frame = OTLPJSONEncoder.frame(rs, ss)
                spansJSON.reset()
                spansJSON.beginArray()
                (resource, scope) = (parts.resource.map { Array($0) }, parts.scope.map { Array($0) })
                (scopeSchema, schema) = (parts.scopeSchema.map { Array($0) }, parts.schema.map { Array($0) })
            }
            OTLPJSONEncoder.span(span, into: &spansJSON)
            SpanLeaves.appendSpanField(parts.span, to: &spanFields)
        }

        /// Writes the group's line and message, if it kept any span, and starts the next.
        mutating func flush(into out: inout BlockOutput) {
            guard let frame else { return }
            spansJSON.endArray()
            out.json += frame.prefix
            out.json += spansJSON.bytes
            out.json += frame.suffix
            out.json.append(0x0A)
            out.lines += 1
            message.removeAll(keepingCapacity: true)
            SpanLeaves.assembleGroup(
                resource: resource, scope: scope, spanFields: spanFields, scopeSchema: scopeSchema, schema: schema,
                into: &message)
            message.withUnsafeBytes { BundleFiles.appendDelimited($0, to: &out.proto) }
            self.frame = nil
            spanFields.removeAll(keepingCapacity: true)
        }
    }

    static func readSpans(plan: Plan, snapshot: EvidenceSnapshot, directory: String) throws -> ReadSpans {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var files = BundleFiles(directory: directory)
        // spans.otlp.jsonl and .pb, streamed to disk; the spans kept for the derived files.
        var spansFile = try files.open(AuditBundle.spans)
        var protoFile = try files.open(AuditBundle.spansProto)
        var indices: [UInt64] = []
        var salts: [LeafSalt] = []
        var spans: [[SpanRecord]] = []
        var lines = 0
        var leaves = LeafCache()
        // Blocks are independent: read in batches on every core, written in order, each batch
        // written (hashed and appended to the files) while the next is read.
        let batch = 8 * ProcessInfo.processInfo.activeProcessorCount
        var next = 0
        var pending: [(first: UInt64, out: BlockOutput)] = []
        func write(_ outputs: [(first: UInt64, out: BlockOutput)]) throws {
            for (first, out) in outputs {
                try spansFile.add(out.json)
                try protoFile.add(out.proto)
                indices += out.indices
                salts += out.salts
                if !out.spans.isEmpty { spans.append(out.spans) }
                lines += out.lines
                leaves.add(firstLeaf: first, out.leaves, unhashed: out.unhashed)
            }
        }
        while next < plan.blocks.count {
            let blocks = Array(plan.blocks[next..<min(next + batch, plan.blocks.count)])
            next += blocks.count
            let outputs = Mutex([Result<BlockOutput, any Error>?](repeating: nil, count: blocks.count))
            let written = Mutex<Result<Void, any Error>>(.success(()))
            nonisolated(unsafe) let writeLast = { try write(pending) }
            DispatchQueue.concurrentPerform(iterations: blocks.count + 1) { k in
                guard k > 0 else {
                    let r = Result { try writeLast() }
                    written.withLock { $0 = r }
                    return
                }
                let r = Result { try read(block: blocks[k - 1], plan: plan, snapshot: snapshot) }
                outputs.withLock { $0[k - 1] = r }
            }
            try written.withLock { $0 }.get()
            pending = try outputs.withLock({ $0 }).enumerated().map {
                (blocks[$0.offset].firstLeaf, try $0.element!.get())
            }
        }
        try write(pending)
        try files.close(&spansFile, records: lines)
        try files.close(&protoFile, records: lines)
        return ReadSpans(files: files, indices: indices, salts: salts, records: .init(spans), leaves: leaves)
    }

    static func finish(
        _ read: inout ReadSpans, runs: [BundleViews.Run], plan: Plan, snapshot: EvidenceSnapshot,
        erasures erasureStore: ErasureStore, request: AuditExportRequest, identityKeys: [String],
        redactionPolicyDigest: String,
        findingRules: FindingRules, now: Date, proofJSON: Result<[UInt8], any Error>
    ) throws -> PreparedBundle {
        let indices = read.indices
        var spans: [[SpanRecord]]? = read.records.take()
        let views = BundleViews.derive(chunks: spans!, runs: runs, rules: findingRules)
        // Freeing the records of some 400,000 spans takes a quarter of a second of one core
        // (`perf`: malloc_consolidate, _int_free), which the response's last members would
        // wait for. A background thread frees them, while the rest is finished and sent: it
        // takes the one reference left (`Records`). Held a second longer instead, as before,
        // their freeing fell into whatever came next (in the bench, the timed verification).
        release(&spans)
        var files = read.files
        // The rest is kept in memory (made there) and sent from there, up to a limit: no file
        // written and read back, and the files hashed on every core (writing and hashing them
        // one after another was the export's serial tail).
        var rest: [BundleFiles.Made] = [
            .init(AuditBundle.decisions, views.decisions.pieces, records: views.decisionCount),
            .init(AuditBundle.runs, views.runs.pieces, records: views.runCount),
            .init(AuditBundle.findings, views.findings.pieces, records: views.findingCount),
            .init(AuditBundle.proof, [try proofJSON.get()], records: 1),
            .init(AuditBundle.checkpoint, [Array(plan.target.note.serialized.utf8)], records: 1),
        ]

        let size = plan.target.checkpoint.size
        if request.selection == .range {
            // No start checkpoint: the range starts at the log's first leaf, an empty file says so.
            rest.append(
                .init(AuditBundle.startCheckpoint, [Array((plan.start?.note.serialized ?? "").utf8)], records: 1))
            // What of the range the tenants' completed erasures removed before now (a leaf by
            // the erasures of the rewrite that first named it), and their receipts. A receipt
            // over every tenant (a subject's) counts when the runs it erased were all the
            // bundle's tenants': no bundle reports another tenant's erasure.
            let tenants = Set(plan.tenants)
            let receipts = snapshot.erasureReceipts().filter {
                guard $0.tenant == "-" else { return tenants.contains($0.tenant) }
                let of = erasureStore.erasure($0.id)?.runTenants ?? []
                return !of.isEmpty && Set(of).isSubset(of: tenants)
            }
            let ids = Set(receipts.map(\.id))
            let erased = snapshot.erasedLeaves(plan.start?.checkpoint.size ?? 0, size).filter {
                $0.erasures.contains { ids.contains($0) }
            }
            let named = Set(erased.flatMap(\.erasures))
            let erasures = BundleErasures(
                erasedLeaves: BundleErasures.runs(erased.map(\.leaf)), erasedSpans: erased.count,
                receipts: receipts.filter { named.contains($0.id) })
            rest.append(.init(AuditBundle.erasures, [Array(try BundleJSON.encoder().encode(erasures))], records: 1))
        }
        try files.add(rest)

        // The manifest, then the statement over every file, signed.
        var selection = BundleManifest.Selection(kind: "range", since: request.since, until: request.until)
        switch request.selection {
        case .run(let id):
            selection.kind = "run"
            selection.runId = id
        case .filter(let expression):
            selection.kind = "where"
            selection.where = expression
        case .range: break
        }
        let manifest = BundleManifest(
            format: AuditBundle.format, created: ISO8601DateFormatter().string(from: now), tenants: plan.tenants,
            selection: selection,
            range: request.selection == .range
                ? .init(
                    start: plan.start?.checkpoint.size ?? 0, end: size, startTime: plan.start?.time,
                    endTime: plan.target.time ?? UInt64(now.timeIntervalSince1970))
                : nil,
            files: files.listed, spans: indices.count, runs: runs.count,
            redactionPolicySha256: redactionPolicyDigest, keyId: snapshot.signer.verifier.encoded,
            runIdentityKeys: identityKeys, findingRules: findingRules)
        try files.add(
            [.init(AuditBundle.manifest, [Array(try BundleJSON.encoder().encode(manifest))], records: 1)], listed: false
        )
        let statement = BundleStatement(
            _type: AuditBundle.statementType,
            subject: files.all.map { .init(name: $0.name, digest: ["sha256": $0.sha256]) },
            predicateType: AuditBundle.predicateType,
            predicate: .init(format: AuditBundle.format, checkpointSize: size, spans: indices.count))
        let envelope = try DSSEEnvelope(signing: Array(try BundleJSON.plain().encode(statement)), by: snapshot.signer)
        try files.add(
            [.init(AuditBundle.envelope, [Array(try BundleJSON.plain().encode(envelope))], records: 1)], listed: false)
        read.files = files
        var bundle = PreparedBundle(
            directory: files.directory, members: files.all.map { ($0.name, $0.size) }, spans: indices.count,
            runs: runs.count, mtime: Int(now.timeIntervalSince1970))
        bundle.held = files.held
        bundle.id = files.all.first { $0.name == AuditBundle.manifest }?.sha256 ?? ""
        bundle.runDigests = runs.map { Erasure.digest(tenant: $0.tenant, run: $0.runID) }
        bundle.tenants = Array(Set(runs.map(\.tenant) + plan.tenants)).sorted()
        return bundle
    }

    /// Takes `value` and drops it on a background thread: for large structures whose
    /// deallocation would otherwise hold up a response. Freed there when the caller held the
    /// only reference.
    static func release<T>(_ value: inout T?) {
        let held = Released(value)
        value = nil
        DispatchQueue.global(qos: .utility).async { held.value = nil }
    }

    /// Unchecked: written once more, by the one closure holding it.
    private final class Released<T>: @unchecked Sendable {
        var value: T?
        init(_ value: T?) { self.value = value }
    }

    /// `proof.json`: the multiproof of the exported leaves, the consistency proofs from older
    /// checkpoints and, for a range, from its start.
    static func proofJSON(
        indices: [UInt64], salts: [LeafSalt], leaves: LeafCache, plan: Plan, snapshot: EvidenceSnapshot,
        request: AuditExportRequest
    ) throws -> [UInt8] {
        let size = plan.target.checkpoint.size
        let nodes = CachedNodes(leaves: leaves, tree: snapshot)
        let hashes = size == 0 ? [] : try Multiproof.prove(indices: indices, size: size, nodes)
        let older = olderSizes(snapshot.history, requested: request.consistencyFrom, below: size)
        var olderNodes: [String: String] = [:]
        for m in older {
            for r in MerkleTree.consistencyRanges(old: m, size: size) where olderNodes["\(r.start)-\(r.end)"] == nil {
                olderNodes["\(r.start)-\(r.end)"] = try MerkleTree.hash(nodes, r.start, r.end).base64
            }
        }
        var saltBytes: [UInt8] = []
        if salts.contains(where: { !$0.isNone }) {
            saltBytes.reserveCapacity(salts.count * LeafSalt.size)
            for s in salts { s.withUnsafeBytes { saltBytes += $0 } }
        }
        var proof = BundleProof(
            treeSize: size, root: plan.target.checkpoint.root.base64, leafIndices: indices,
            leafSalts: saltBytes.isEmpty ? nil : Data(saltBytes).base64EncodedString(), hashes: hashes.map(\.base64),
            consistency: nil, olderSizes: older, olderNodes: olderNodes)
        if request.selection == .range {
            let old = plan.start?.checkpoint.size ?? 0
            proof.consistency = try MerkleTree.consistencyProof(old: old, size: size, nodes).map(\.base64)
        }
        var w = JSONWriter(capacity: indices.count * 12 + saltBytes.count * 4 / 3 + hashes.count * 48 + 4096)
        proof.writeJSON(to: &w)
        return w.bytes
    }

    /// The earlier tree sizes the bundle proves consistency from: those requested, the last 100
    /// checkpoints' and the first of each UTC day's (so a checkpoint pinned from an earlier
    /// bundle or `flightrec verify` usually needs no request).
    static func olderSizes(_ history: [EvidenceSnapshot.Signed], requested: [UInt64], below size: UInt64) -> [UInt64] {
        var sizes = Set(requested)
        for h in history.suffix(100) { sizes.insert(h.checkpoint.size) }
        var day: UInt64?
        for h in history where h.time / 86_400 != day {
            day = h.time / 86_400
            sizes.insert(h.checkpoint.size)
        }
        return sizes.filter { $0 > 0 && $0 < size }.sorted()
    }

    /// The run each span names itself (`RunIdentity.explicitRunID`), if any: read on every
    /// core, before the index is asked for the rest.
    static func namedRuns(_ chunks: [[SpanRecord]], identity: RunIdentity) -> [[String?]] {
        let named = Mutex([[String?]](repeating: [], count: chunks.count))
        DispatchQueue.concurrentPerform(iterations: chunks.count) { c in
            let chunk = chunks[c]
            // By index, the fields read in place (a copy of a record retains each of its parts).
            let part = chunk.indices.map {
                identity.explicitRunID(span: chunk[$0].attributes, resource: chunk[$0].resource.attributes)
            }
            named.withLock { $0[c] = part }
        }
        return named.withLock { $0 }
    }

    /// For a range: the runs the spans belong to (as every query resolves them), each with the
    /// traces its spans here are in, in the order they first appear; `chunkNames` is `namedRuns`.
    static func rangeRuns(
        _ chunks: [[SpanRecord]], named chunkNames: [[String?]], resolver: RunResolver, reader r: IndexReader
    ) throws -> [BundleViews.Run] {
        var traceRun: [TenantTrace: String] = [:]
        var order: [TenantRun: Int] = [:]
        var runs: [BundleViews.Run] = []
        var listed: Set<TenantRunTrace> = []
        precondition(chunkNames.map(\.count) == chunks.map(\.count), "one explicit run (or none) per span")
        // Spans of one run and trace mostly follow each other: the last one's run is checked
        // first, before any hashing.
        // By index, the fields read in place: a `for s in spans` copy retained each part of
        // every record (the loop was a fifth of a second of one thread, `perf`).
        var last: (tenant: String, trace: TraceID, explicit: String?, index: Int)?
        for (spans, named) in zip(chunks, chunkNames) {
            for k in spans.indices {
                let (explicit, trace, tenant) = (named[k], spans[k].traceID, spans[k].tenant)
                // The same trace and tenant, and the same explicit run or none (then the trace's):
                // the same run, already listed with this trace.
                if let l = last, l.trace == trace, l.explicit == explicit, l.tenant == tenant { continue }
                let key = TenantTrace(tenant: tenant, trace: trace)
                // The index is asked only for spans that do not name their run (the rule
                // `RunResolver.run` applies, with the trace's run looked up once).
                let runID: String
                if let explicit {
                    runID = explicit
                } else {
                    // `RunResolver.run` with the span's own run known to be absent (`named`).
                    if let known = traceRun[key] {
                        runID = known
                    } else {
                        runID = try resolver.traceRun(trace, tenant: tenant, reader: r)
                        traceRun[key] = runID
                    }
                }
                let run = TenantRun(tenant: tenant, run: runID)
                let i =
                    order[run]
                    ?? {
                        order[run] = runs.count
                        runs.append(BundleViews.Run(runID: run.run, tenant: run.tenant, traces: []))
                        return runs.count - 1
                    }()
                if listed.insert(TenantRunTrace(run: i, trace: trace)).inserted { runs[i].traces.append(trace) }
                last = (tenant, trace, explicit, i)
            }
        }
        return runs
    }
}

/// The bundle's files as they are written: each one's digest, size and record count.
struct BundleFiles {
    let directory: String
    var all: [BundleManifest.File] = []
    var listed: [BundleManifest.File] = []

    struct Open {
        var name: String
        var handle: FileHandle
        var hasher = SHA256()
        var size = 0
        var buffer: [UInt8] = []

        /// `bytes` buffered when small (written a megabyte at a time); hashed and written as
        /// they are when not (a block's lines copied into the buffer first were 1.4 % of an
        /// export's reading, `perf`).
        mutating func add(_ bytes: [UInt8]) throws {
            guard bytes.count < 1 << 16 else { return try write(bytes) }
            buffer += bytes
            if buffer.count >= 1 << 20 { try flush() }
        }

        /// `bytes` hashed and written as they are (after anything buffered).
        mutating func write(_ bytes: [UInt8]) throws {
            try flush()
            hasher.update(data: bytes)
            size += bytes.count
            try handle.write(contentsOf: bytes)
        }

        mutating func flush() throws {
            hasher.update(data: buffer)
            size += buffer.count
            try handle.write(contentsOf: buffer)
            buffer.removeAll(keepingCapacity: true)
        }
    }

    /// `message` preceded by its length as a varint (protobuf's delimited format).
    static func appendDelimited(_ message: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        var n = UInt64(message.count)
        while n >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: n) | 0x80)
            n >>= 7
        }
        out.append(UInt8(n))
        out.append(contentsOf: message)
    }

    func open(_ name: String) throws -> Open { try Self.open(name, in: directory) }

    static func open(_ name: String, in directory: String) throws -> Open {
        let path = directory + "/" + name
        guard FileManager.default.createFile(atPath: path, contents: nil), let h = FileHandle(forWritingAtPath: path)
        else { throw AuditExportError(kind: .unavailable, description: "cannot create \(path)") }
        return Open(name: name, handle: h)
    }

    mutating func close(_ f: inout Open, records: Int, listed isListed: Bool = true) throws {
        // No fsync: a bundle is streamed out and deleted; a crash only fails the export.
        try f.flush()
        try f.handle.close()
        let entry = BundleManifest.File(
            name: f.name, sha256: Hex.encode(f.hasher.finalize()), size: f.size, records: records)
        all.append(entry)
        if isListed { listed.append(entry) }
    }

    /// A member made in memory (`add`).
    struct Made: Sendable {
        var name: String
        var pieces: [[UInt8]]
        var records: Int

        init(_ name: String, _ pieces: [[UInt8]], records: Int) {
            (self.name, self.pieces, self.records) = (name, pieces, records)
        }
    }

    /// Members kept in memory, by name (`PreparedBundle.held`), and their bytes.
    var held: [String: [[UInt8]]] = [:]
    var heldBytes = 0
    /// How much of a bundle is kept in memory until it is sent (a slow client keeps it for as
    /// long as it takes to read the archive); members past it are written to files.
    var heldLimit = 256 << 20

    /// Adds `members`, in order: kept in memory up to `heldLimit` (sent from there: no file
    /// written and read back), written to files past it; each hashed (and written) on a core
    /// of its own.
    mutating func add(_ members: [Made], listed isListed: Bool = true) throws {
        let sizes = members.map { $0.pieces.reduce(0) { $0 + $1.count } }
        var kept: [Bool] = []
        for size in sizes {
            kept.append(heldBytes + size <= heldLimit)
            if kept.last! { heldBytes += size }
        }
        let (keep, directory) = (kept, directory)
        let digests = Mutex([Result<String, any Error>?](repeating: nil, count: members.count))
        DispatchQueue.concurrentPerform(iterations: members.count) { i in
            let digest = Result { () throws -> String in
                guard keep[i] else {
                    var f = try BundleFiles.open(members[i].name, in: directory)
                    for p in members[i].pieces { try f.write(p) }
                    try f.handle.close()
                    return Hex.encode(f.hasher.finalize())
                }
                var hasher = SHA256()
                for p in members[i].pieces { hasher.update(data: p) }
                return Hex.encode(hasher.finalize())
            }
            digests.withLock { $0[i] = digest }
        }
        for (i, (m, digest)) in zip(members, digests.withLock { $0 }).enumerated() {
            let entry = BundleManifest.File(name: m.name, sha256: try digest!.get(), size: sizes[i], records: m.records)
            all.append(entry)
            if isListed { listed.append(entry) }
            if kept[i] { held[m.name] = m.pieces }
        }
    }
}

/// The leaf hashes of the blocks an export read, by first leaf: the proof's nodes below the
/// tiles come from here instead of reading and hashing those blocks a second time. One flat
/// array, so a subtree within consecutive blocks is a slice of it.
struct LeafCache {
    /// Each block's first leaf and where its hashes start in `hashes`.
    var firsts: [UInt64] = []
    var offsets: [Int] = []
    var hashes: [TreeHash] = []
    /// Leaves whose entries in `hashes` are placeholders (`BlockOutput.unhashed`), in order.
    var unhashed: [Range<UInt64>] = []

    mutating func add(firstLeaf: UInt64, _ leaves: [TreeHash], unhashed holes: [Range<UInt64>] = []) {
        firsts.append(firstLeaf)
        offsets.append(hashes.count)
        hashes += leaves
        unhashed += holes
    }

    /// Whether a leaf in `start ..< end` was not hashed.
    func meetsUnhashed(_ start: UInt64, _ end: UInt64) -> Bool {
        // The first range ending after `start`: the only one that can begin before `end`.
        var lo = 0
        var hi = unhashed.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if unhashed[mid].upperBound <= start { lo = mid + 1 } else { hi = mid }
        }
        return lo < unhashed.count && unhashed[lo].lowerBound < end
    }

    /// Where leaf `leaf` is in `hashes`, if a cached block holds it.
    func position(_ leaf: UInt64) -> Int? {
        var lo = 0
        var hi = firsts.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if firsts[mid] <= leaf { lo = mid + 1 } else { hi = mid }
        }
        let i = lo - 1
        guard i >= 0 else { return nil }
        let end = i + 1 < offsets.count ? offsets[i + 1] : hashes.count
        let at = offsets[i] + Int(leaf - firsts[i])
        return at < end ? at : nil
    }

    /// Leaves `start ..< end` when the cached blocks hold them all.
    func leaves(_ start: UInt64, _ end: UInt64) -> ArraySlice<TreeHash>? {
        guard end > start, let first = position(start), let last = position(end - 1),
            last - first == Int(end - 1 - start),  // no leaf in between missing (positions run on)
            !meetsUnhashed(start, end)
        else { return nil }
        return hashes[first...last]
    }
}

/// The snapshot's tree, with nodes below the tiles taken from the export's `LeafCache`.
struct CachedNodes: TreeNodes {
    let leaves: LeafCache
    let tree: EvidenceSnapshot

    func node(level: Int, index: UInt64) throws -> TreeHash {
        if level < 8 {
            let start = index << UInt64(level)
            if let hashes = leaves.leaves(start, start + (1 << UInt64(level))) { return LeafList.subtree(hashes) }
        }
        return try tree.node(level: level, index: index)
    }
}
