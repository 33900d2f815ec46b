import COTLP
import CProtobufC
package import FlightRecorderOTLP

#if canImport(Glibc)
import Glibc
#endif

/// The evidence log's leaves: one per stored span, the RFC 9162 leaf hash of that span alone
/// as an OTLP `TracesData` (its resource, its scope, the span), protobuf-encoded as
/// protobuf-c encodes it.
///
/// One leaf per span, not per block, so an export proves each span it contains without
/// revealing the other spans (other runs, other tenants) stored next to it. The message is
/// what one line of an export's `spans.otlp.jsonl` holds, so a verifier recomputes the leaf
/// from the line. Unknown fields are never part of it: ingest strips them
/// (`UnknownFields`), since the JSON a verifier reads cannot carry them.
package enum SpanLeaves {
    /// The leaf hash of every span of `request`, in the order the spans appear, each salted
    /// with its salt in `salts` (none when `salts` is empty).
    package static func hashes(_ request: UnsafePointer<CExportRequest>, salts: [LeafSalt] = []) -> [TreeHash] {
        var out: [TreeHash] = []
        var i = 0
        forEachMessage(request) {
            out.append(TreeHash.leaf(salt: i < salts.count ? salts[i] : .none, $0))
            i += 1
        }
        return out
    }

    /// `hashes(request, salts:)` as one array of 32-byte hashes (what an `IngestBatch` carries).
    package static func hashBytes(_ request: UnsafePointer<CExportRequest>, salts: [LeafSalt] = []) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        forEachMessage(request) { message in
            TreeHash.leaf(salt: i < salts.count ? salts[i] : .none, message).withUnsafeBytes {
                out.append(contentsOf: $0)
            }
            i += 1
        }
        return out
    }

    /// The single-span `TracesData` of each span of `request`, in order (what the leaves hash).
    package static func messages(_ request: UnsafePointer<CExportRequest>) -> [[UInt8]] {
        var out: [[UInt8]] = []
        forEachMessage(request) { out.append(Array($0)) }
        return out
    }

    /// `hashBytes` of a payload protobuf-c encoded itself (a request ingest re-encoded): each
    /// span's bytes in it are already what protobuf-c would encode, so the leaves are hashed
    /// from the payload with no second encoding. nil when the payload is not such a request.
    package static func hashBytes(canonicalPayload raw: UnsafeRawBufferPointer, salts: [LeafSalt] = []) -> [UInt8]? {
        guard let groups = wireGroups(raw) else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(raw.count / 8)
        var message: [UInt8] = []
        message.reserveCapacity(4096)
        var next = 0
        for group in groups {
            group.forEachLeaf(raw, salts: salts, next: &next, into: &message) { _, _, hash in
                hash.withUnsafeBytes { out.append(contentsOf: $0) }
            }
        }
        return out
    }

    /// `hashBytes(canonicalPayload:salts:)` as hashes: the leaves of a block logged as
    /// canonical (`EvidenceLog`), read back.
    package static func hashes(canonicalPayload raw: UnsafeRawBufferPointer, salts: [LeafSalt] = []) -> [TreeHash]? {
        guard let groups = wireGroups(raw) else { return nil }
        var out: [TreeHash] = []
        var message: [UInt8] = []
        message.reserveCapacity(4096)
        var next = 0
        for group in groups {
            group.forEachLeaf(raw, salts: salts, next: &next, into: &message) { _, _, hash in out.append(hash) }
        }
        return out
    }

    /// Where one resource group (`ResourceSpans`, field 1 of the request) of a payload is, and
    /// its parts: what a span's leaf is assembled from, without unpacking.
    package struct WireResourceGroup {
        /// The whole field, tag included: a request holding this group alone.
        package var field: Range<Int>
        package var resource: Range<Int>?
        package var schema: Range<Int>?
        package var scopes: [WireScopeGroup] = []

        /// Each span's leaf (its scope group's index, the span's range, its hash), in order;
        /// `message` is scratch space kept from call to call. The span numbered `next` (then
        /// counted on) is salted with `salts[next]`, none past the end of `salts`.
        ///
        /// With `hashing`, a span it answers false for (asked with the span's number) is
        /// passed over: `body` is not called for it.
        package func forEachLeaf(
            _ raw: UnsafeRawBufferPointer, salts: [LeafSalt], next: inout Int, into message: inout [UInt8],
            hashing: (Int) -> Bool = { _ in true }, _ body: (Int, Range<Int>, TreeHash) -> Void
        ) {
            func part(_ r: Range<Int>?) -> UnsafeRawBufferPointer? {
                r.map { UnsafeRawBufferPointer(rebasing: raw[$0]) }
            }
            for (s, scope) in scopes.enumerated() {
                for span in scope.spans {
                    if !hashing(next) {
                        next += 1
                        continue
                    }
                    message.removeAll(keepingCapacity: true)
                    assemble(
                        resource: part(resource), scope: part(scope.scope), span: part(span)!,
                        scopeSchema: part(scope.schema), schema: part(schema), into: &message)
                    let salt = next < salts.count ? salts[next] : .none
                    next += 1
                    body(s, span, message.withUnsafeBytes { TreeHash.leaf(salt: salt, $0) })
                }
            }
        }
    }

    /// One scope group (`ScopeSpans`) of a `WireResourceGroup`.
    package struct WireScopeGroup {
        package var scope: Range<Int>?
        package var spans: [Range<Int>] = []
        package var schema: Range<Int>?
    }

    /// The resource groups of `raw`, one request protobuf-c encoded or several one after
    /// another (a stored block); nil when a group holds a field no such request has. Fields of
    /// the request other than its groups are passed over, as protobuf-c's reading would.
    package static func wireGroups(_ raw: UnsafeRawBufferPointer) -> [WireResourceGroup]? {
        var groups: [WireResourceGroup] = []
        var request = WireCursor(raw, 0..<raw.count)
        while !request.atEnd {
            guard let rs = request.field() else { return nil }
            guard rs.number == 1, rs.wireType == 2 else { continue }
            var g = WireResourceGroup(field: rs.range)
            var group = WireCursor(raw, rs.payload)
            while !group.atEnd {
                guard let f = group.field() else { return nil }
                switch (f.number, f.wireType) {
                case (1, 2): g.resource = f.payload
                case (3, 2): g.schema = f.payload
                case (2, 2):
                    var scope = WireScopeGroup()
                    var c = WireCursor(raw, f.payload)
                    while !c.atEnd {
                        guard let f = c.field() else { return nil }
                        switch (f.number, f.wireType) {
                        case (1, 2): scope.scope = f.payload
                        case (2, 2): scope.spans.append(f.payload)
                        case (3, 2): scope.schema = f.payload
                        default: return nil
                        }
                    }
                    g.scopes.append(scope)
                default: return nil  // canonical requests hold nothing else
                }
            }
            groups.append(g)
        }
        return groups
    }

    /// The leaf message: a `TracesData` holding one `ResourceSpans` (the resource, one
    /// `ScopeSpans` of the scope and the span, their schema URLs), from the encoded parts, in
    /// the field order and form protobuf-c encodes: a message part when present (nil: absent),
    /// a schema URL only when not empty. The one definition both ways of hashing use; a unit
    /// test checks it against protobuf-c encoding the whole `TracesData`.
    package static func assemble(
        resource: UnsafeRawBufferPointer?, scope: UnsafeRawBufferPointer?, span: UnsafeRawBufferPointer,
        scopeSchema: UnsafeRawBufferPointer?, schema: UnsafeRawBufferPointer?, into out: inout [UInt8]
    ) {
        assemble(
            resource: resource, scope: scope, spansSize: 1 + varintCount(span.count) + span.count,
            spans: { out in appendSpanField(span, to: &out) }, scopeSchema: scopeSchema, schema: schema, into: &out)
    }

    /// A group message: a `TracesData` holding one `ResourceSpans` with one `ScopeSpans` of
    /// several spans, as protobuf-c encodes it (the parts as `assemble` takes them; `spanFields`
    /// the spans already encoded as field 2, one after another). Its leaves are `assemble`'s of
    /// each span with the same parts.
    package static func assembleGroup(
        resource: [UInt8]?, scope: [UInt8]?, spanFields: [UInt8], scopeSchema: [UInt8]?, schema: [UInt8]?,
        into out: inout [UInt8]
    ) {
        assemble(
            resource: resource, scope: scope, spansSize: spanFields.count,
            spans: { out in out.append(contentsOf: spanFields) }, scopeSchema: scopeSchema, schema: schema, into: &out)
    }

    /// Both forms, over parts held in any kind of buffer: `spans` appends the encoded span
    /// fields, `spansSize` bytes of them.
    @inline(__always)
    static func assemble<Part: Collection<UInt8>>(
        resource: Part?, scope: Part?, spansSize: Int, spans: (inout [UInt8]) -> Void, scopeSchema: Part?,
        schema: Part?, into out: inout [UInt8]
    ) {
        func size(_ p: Part?) -> Int { p.map { 1 + varintCount($0.count) + $0.count } ?? 0 }
        func string(_ p: Part?) -> Part? { p?.isEmpty == false ? p : nil }
        func append(_ number: UInt8, _ p: Part?) {
            guard let p else { return }
            field(number, p.count, into: &out)
            out.append(contentsOf: p)
        }
        let (scopeSchema, schema) = (string(scopeSchema), string(schema))
        let scopeSpans = size(scope) + spansSize + size(scopeSchema)
        let resourceSpans = size(resource) + 1 + varintCount(scopeSpans) + scopeSpans + size(schema)
        field(1, resourceSpans, into: &out)
        append(1, resource)
        field(2, scopeSpans, into: &out)
        append(1, scope)
        spans(&out)
        append(3, scopeSchema)
        append(3, schema)
    }

    /// `span` as field 2 of a `ScopeSpans` (its key, length and bytes), appended to `out`.
    package static func appendSpanField(_ span: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        field(2, span.count, into: &out)
        out.append(contentsOf: span)
    }

    /// Field `number` with wire type 2 and a payload of `payloadCount` bytes (its key and length).
    package static func field(_ number: UInt8, _ payloadCount: Int, into out: inout [UInt8]) {
        out.append(number << 3 | 2)
        var v = UInt(payloadCount)
        while v >= 0x80 {
            out.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    package static func varintCount(_ n: Int) -> Int {
        var v = UInt(n)
        var count = 1
        while v >= 0x80 {
            v >>= 7
            count += 1
        }
        return count
    }

    /// Each span's leaf message, in order, as protobuf-c encodes its resource, scope and span:
    /// the resource and scope once per group, the span into a buffer reused span to span.
    package static func forEachMessage(
        _ request: UnsafePointer<CExportRequest>, _ body: (UnsafeRawBufferPointer) -> Void
    ) {
        forEachSpan(request) { message, _, _, _ in body(message) }
    }

    /// `forEachMessage`, with each message's resource group, scope group and span as unpacked.
    package static func forEachSpan(
        _ request: UnsafePointer<CExportRequest>,
        _ body: (
            UnsafeRawBufferPointer, UnsafePointer<CResourceSpans>, UnsafePointer<CScopeSpans>,
            UnsafeMutablePointer<CSpan>
        ) -> Void
    ) {
        forEachSpanWithParts(request) { message, _, rs, ss, span in body(message, rs, ss, span) }
    }

    /// The encoded parts a leaf message is assembled from (`assemble`).
    package struct Parts {
        package var resource: UnsafeRawBufferPointer?
        package var scope: UnsafeRawBufferPointer?
        package var span: UnsafeRawBufferPointer
        package var scopeSchema: UnsafeRawBufferPointer?
        package var schema: UnsafeRawBufferPointer?

        package init(
            resource: UnsafeRawBufferPointer?, scope: UnsafeRawBufferPointer?, span: UnsafeRawBufferPointer,
            scopeSchema: UnsafeRawBufferPointer?, schema: UnsafeRawBufferPointer?
        ) {
            (self.resource, self.scope, self.span) = (resource, scope, span)
            (self.scopeSchema, self.schema) = (scopeSchema, schema)
        }
    }

    /// `forEachSpan`, with the encoded parts of each message too.
    package static func forEachSpanWithParts(
        _ request: UnsafePointer<CExportRequest>,
        _ body: (
            UnsafeRawBufferPointer, Parts, UnsafePointer<CResourceSpans>, UnsafePointer<CScopeSpans>,
            UnsafeMutablePointer<CSpan>
        ) -> Void
    ) {
        var message: [UInt8] = []
        var span: [UInt8] = []
        let req = request.pointee
        for r in 0..<req.n_resource_spans {
            guard let rsp = req.resource_spans[r] else { continue }
            let rs = rsp.pointee
            let resource = rs.resource.map { pack($0) }
            for s in 0..<rs.n_scope_spans {
                guard let ssp = rs.scope_spans[s] else { continue }
                let ss = ssp.pointee
                let scope = ss.scope.map { pack($0) }
                for i in 0..<ss.n_spans {
                    guard let p = ss.spans[i] else { continue }
                    pack(p, into: &span)
                    message.removeAll(keepingCapacity: true)
                    withBytes(resource) { resource in
                        withBytes(scope) { scope in
                            withString(ss.schema_url) { scopeSchema in
                                withString(rs.schema_url) { schema in
                                    span.withUnsafeBytes { spanBytes in
                                        assemble(
                                            resource: resource, scope: scope, span: spanBytes,
                                            scopeSchema: scopeSchema, schema: schema, into: &message)
                                        let parts = Parts(
                                            resource: resource, scope: scope, span: spanBytes,
                                            scopeSchema: scopeSchema, schema: schema)
                                        message.withUnsafeBytes { body($0, parts, rsp, ssp, p) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    static func pack(_ message: UnsafeRawPointer) -> [UInt8] {
        var out: [UInt8] = []
        pack(message, into: &out)
        return out
    }

    /// protobuf-c's encoding of `message`, replacing what `out` held (its storage kept).
    static func pack(_ message: UnsafeRawPointer, into out: inout [UInt8]) {
        let m = message.assumingMemoryBound(to: ProtobufCMessage.self)
        let size = protobuf_c_message_get_packed_size(m)
        out.removeAll(keepingCapacity: true)
        out.append(contentsOf: repeatElement(0, count: size))
        let written = out.withUnsafeMutableBufferPointer { protobuf_c_message_pack(m, $0.baseAddress!) }
        precondition(written == size, "protobuf-c packed a different size than it measured")
    }

    static func withBytes<R>(_ bytes: [UInt8]?, _ body: (UnsafeRawBufferPointer?) -> R) -> R {
        guard let bytes else { return body(nil) }
        return bytes.withUnsafeBytes { body($0) }
    }

    static func withString<R>(_ s: UnsafePointer<CChar>?, _ body: (UnsafeRawBufferPointer?) -> R) -> R {
        guard let s else { return body(nil) }
        return body(UnsafeRawBufferPointer(start: s, count: strlen(s)))
    }
}
