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
    /// The leaf hash of every span of `request`, in the order the spans appear.
    package static func hashes(_ request: UnsafePointer<CExportRequest>) -> [TreeHash] {
        var out: [TreeHash] = []
        var scratch = Scratch()
        forEachSpan(request) { rs, ss, span in
            scratch.message(rs, ss, span)
            out.append(scratch.bytes.withUnsafeBytes { TreeHash.leaf($0) })
        }
        return out
    }

    /// `hashes(request)` as one array of 32-byte hashes (what an `IngestBatch` carries).
    package static func hashBytes(_ request: UnsafePointer<CExportRequest>) -> [UInt8] {
        var out: [UInt8] = []
        var scratch = Scratch()
        forEachSpan(request) { rs, ss, span in
            scratch.message(rs, ss, span)
            let leaf = scratch.bytes.withUnsafeBytes { TreeHash.leaf($0) }
            leaf.withUnsafeBytes { out.append(contentsOf: $0) }
        }
        return out
    }

    /// `hashBytes` of a payload protobuf-c encoded itself (a request ingest re-encoded): each
    /// span's bytes in it are already what `Scratch` would encode, so the leaves are hashed
    /// from the payload with no second encoding. nil when the payload is not such a request.
    package static func hashBytes(canonicalPayload raw: UnsafeRawBufferPointer) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count / 8)
        var message: [UInt8] = []
        message.reserveCapacity(4096)
        var request = WireCursor(raw, 0..<raw.count)
        while !request.atEnd {
            guard let rs = request.field() else { return nil }
            guard rs.number == 1, rs.wireType == 2 else { continue }
            var resource: Range<Int>?
            var scopes: [Range<Int>] = []
            var schema: Range<Int>?
            var group = WireCursor(raw, rs.payload)
            while !group.atEnd {
                guard let f = group.field() else { return nil }
                switch (f.number, f.wireType) {
                case (1, 2): resource = f.payload
                case (2, 2): scopes.append(f.payload)
                case (3, 2): schema = f.payload
                default: return nil  // canonical requests hold nothing else
                }
            }
            for ss in scopes {
                var scope: Range<Int>?
                var spans: [Range<Int>] = []
                var scopeSchema: Range<Int>?
                var c = WireCursor(raw, ss)
                while !c.atEnd {
                    guard let f = c.field() else { return nil }
                    switch (f.number, f.wireType) {
                    case (1, 2): scope = f.payload
                    case (2, 2): spans.append(f.payload)
                    case (3, 2): scopeSchema = f.payload
                    default: return nil
                    }
                }
                func part(_ r: Range<Int>?) -> Int { r.map { 1 + Scratch.varintCount($0.count) + $0.count } ?? 0 }
                func append(_ number: UInt8, _ r: Range<Int>?) {
                    guard let r else { return }
                    Scratch.field(number, r.count, into: &message)
                    message.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[r]))
                }
                for span in spans {
                    let scopeSpans = part(scope) + part(span) + part(scopeSchema)
                    let resourceSpans = part(resource) + 1 + Scratch.varintCount(scopeSpans) + scopeSpans + part(schema)
                    message.removeAll(keepingCapacity: true)
                    Scratch.field(1, resourceSpans, into: &message)
                    append(1, resource)
                    Scratch.field(2, scopeSpans, into: &message)
                    append(1, scope)
                    append(2, span)
                    append(3, scopeSchema)
                    append(3, schema)
                    let leaf = message.withUnsafeBytes { TreeHash.leaf($0) }
                    leaf.withUnsafeBytes { out.append(contentsOf: $0) }
                }
            }
        }
        return out
    }

    /// The single-span `TracesData` of each span of `request`, in order (what the leaves hash).
    package static func messages(_ request: UnsafePointer<CExportRequest>) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var scratch = Scratch()
        forEachSpan(request) { rs, ss, span in
            scratch.message(rs, ss, span)
            out.append(scratch.bytes)
        }
        return out
    }

    static func forEachSpan(
        _ request: UnsafePointer<CExportRequest>,
        _ body: (UnsafePointer<CResourceSpans>, UnsafePointer<CScopeSpans>, UnsafePointer<CSpan>) -> Void
    ) {
        let req = request.pointee
        for r in 0..<req.n_resource_spans {
            guard let rs = req.resource_spans[r] else { continue }
            for s in 0..<rs.pointee.n_scope_spans {
                guard let ss = rs.pointee.scope_spans[s] else { continue }
                for i in 0..<ss.pointee.n_spans {
                    guard let span = ss.pointee.spans[i] else { continue }
                    body(rs, ss, span)
                }
            }
        }
    }

    /// Builds the message field by field around protobuf-c's encoding of the resource, the
    /// scope and the span, so a request's resource is encoded once per span group rather
    /// than once per span. A unit test checks it against protobuf-c encoding the whole
    /// `TracesData`.
    struct Scratch {
        var bytes: [UInt8] = []
        var resource: (UnsafePointer<CResourceSpans>, [UInt8])?
        var scope: (UnsafePointer<CScopeSpans>, [UInt8])?

        static func pack(_ message: UnsafeRawPointer) -> [UInt8] {
            let m = message.assumingMemoryBound(to: ProtobufCMessage.self)
            let size = protobuf_c_message_get_packed_size(m)
            return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
                count = protobuf_c_message_pack(m, buffer.baseAddress)
            }
        }

        /// Field `number` with wire type 2 and `payload`.
        static func field(_ number: UInt8, _ payloadCount: Int, into out: inout [UInt8]) {
            out.append(number << 3 | 2)
            var v = UInt(payloadCount)
            while v >= 0x80 {
                out.append(UInt8(v & 0x7F) | 0x80)
                v >>= 7
            }
            out.append(UInt8(v))
        }

        static func varintCount(_ n: Int) -> Int {
            var v = UInt(n)
            var count = 1
            while v >= 0x80 {
                v >>= 7
                count += 1
            }
            return count
        }

        static func stringField(_ number: UInt8, _ s: UnsafePointer<CChar>?, into out: inout [UInt8]) {
            guard let s, s.pointee != 0 else { return }
            let n = strlen(s)
            field(number, n, into: &out)
            s.withMemoryRebound(to: UInt8.self, capacity: n) {
                out.append(contentsOf: UnsafeBufferPointer(start: $0, count: n))
            }
        }

        static func stringCount(_ number: UInt8, _ s: UnsafePointer<CChar>?) -> Int {
            guard let s, s.pointee != 0 else { return 0 }
            let n = strlen(s)
            return 1 + varintCount(n) + n
        }

        mutating func message(
            _ rs: UnsafePointer<CResourceSpans>, _ ss: UnsafePointer<CScopeSpans>, _ s: UnsafePointer<CSpan>
        ) {
            if resource?.0 != rs {
                resource = (rs, rs.pointee.resource.map { Self.pack($0) } ?? [])
            }
            if scope?.0 != ss {
                scope = (ss, ss.pointee.scope.map { Self.pack($0) } ?? [])
            }
            let resourceBytes = resource!.1
            let scopeBytes = scope!.1
            let spanMessage = UnsafeRawPointer(s).assumingMemoryBound(to: ProtobufCMessage.self)
            let spanCount = protobuf_c_message_get_packed_size(spanMessage)
            // ScopeSpans: scope (1), the span (2), schema_url (3).
            var scopeSpans = 1 + Self.varintCount(spanCount) + spanCount
            scopeSpans += Self.stringCount(3, ss.pointee.schema_url)
            if ss.pointee.scope != nil { scopeSpans += 1 + Self.varintCount(scopeBytes.count) + scopeBytes.count }
            // ResourceSpans: resource (1), the scope spans (2), schema_url (3).
            var resourceSpans = 1 + Self.varintCount(scopeSpans) + scopeSpans
            resourceSpans += Self.stringCount(3, rs.pointee.schema_url)
            if rs.pointee.resource != nil {
                resourceSpans += 1 + Self.varintCount(resourceBytes.count) + resourceBytes.count
            }
            bytes.removeAll(keepingCapacity: true)
            Self.field(1, resourceSpans, into: &bytes)
            if rs.pointee.resource != nil {
                Self.field(1, resourceBytes.count, into: &bytes)
                bytes += resourceBytes
            }
            Self.field(2, scopeSpans, into: &bytes)
            if ss.pointee.scope != nil {
                Self.field(1, scopeBytes.count, into: &bytes)
                bytes += scopeBytes
            }
            Self.field(2, spanCount, into: &bytes)
            // The span is encoded straight into the message, not into an array of its own.
            let at = bytes.count
            bytes.append(contentsOf: repeatElement(0, count: spanCount))
            let written = bytes.withUnsafeMutableBufferPointer {
                protobuf_c_message_pack(spanMessage, $0.baseAddress! + at)
            }
            precondition(written == spanCount, "protobuf-c packed a different size than it measured")
            Self.stringField(3, ss.pointee.schema_url, into: &bytes)
            Self.stringField(3, rs.pointee.schema_url, into: &bytes)
        }
    }
}
