import COTLP

/// Drops the fields this version of the OTLP schema does not know from an unpacked request.
///
/// protobuf-c keeps them and would encode them again, but nothing reads them, and the export's
/// OTLP/JSON cannot carry them: a stored span must be exactly what an export shows, so the
/// evidence log's leaf (`SpanLeaves`) can be recomputed from the export. The walk reads one
/// count per message; requests from current SDKs have none to drop.
package enum UnknownFields {
    /// Whether anything was dropped (the request must then be encoded again).
    package static func strip(_ request: UnsafeMutablePointer<CExportRequest>) -> Bool {
        var dropped = clear(&request.pointee.base)
        let req = request.pointee
        for r in 0..<req.n_resource_spans {
            guard let rs = req.resource_spans[r] else { continue }
            dropped = clear(&rs.pointee.base) || dropped
            if let resource = rs.pointee.resource {
                dropped = clear(&resource.pointee.base) || dropped
                dropped = attributes(resource.pointee.attributes, resource.pointee.n_attributes) || dropped
                for e in 0..<resource.pointee.n_entity_refs {
                    if let ref = resource.pointee.entity_refs[e] { dropped = clear(&ref.pointee.base) || dropped }
                }
            }
            for s in 0..<rs.pointee.n_scope_spans {
                guard let ss = rs.pointee.scope_spans[s] else { continue }
                dropped = clear(&ss.pointee.base) || dropped
                if let scope = ss.pointee.scope {
                    dropped = clear(&scope.pointee.base) || dropped
                    dropped = attributes(scope.pointee.attributes, scope.pointee.n_attributes) || dropped
                }
                for i in 0..<ss.pointee.n_spans {
                    guard let span = ss.pointee.spans[i] else { continue }
                    dropped = self.span(span) || dropped
                }
            }
        }
        return dropped
    }

    static func span(_ span: UnsafeMutablePointer<CSpan>) -> Bool {
        var dropped = clear(&span.pointee.base)
        dropped = attributes(span.pointee.attributes, span.pointee.n_attributes) || dropped
        for e in 0..<span.pointee.n_events {
            guard let event = span.pointee.events[e] else { continue }
            dropped = clear(&event.pointee.base) || dropped
            dropped = attributes(event.pointee.attributes, event.pointee.n_attributes) || dropped
        }
        for l in 0..<span.pointee.n_links {
            guard let link = span.pointee.links[l] else { continue }
            dropped = clear(&link.pointee.base) || dropped
            dropped = attributes(link.pointee.attributes, link.pointee.n_attributes) || dropped
        }
        if let status = span.pointee.status { dropped = clear(&status.pointee.base) || dropped }
        return dropped
    }

    static func attributes(_ list: UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>?, _ count: Int) -> Bool {
        guard let list else { return false }
        var dropped = false
        for a in 0..<count {
            guard let kv = list[a] else { continue }
            dropped = clear(&kv.pointee.base) || dropped
            if let value = kv.pointee.value { dropped = self.value(value) || dropped }
        }
        return dropped
    }

    /// Values nest no deeper than `WireDepthGuard` allowed.
    static func value(_ v: UnsafeMutablePointer<CAnyValue>) -> Bool {
        var dropped = clear(&v.pointee.base)
        switch v.pointee.value_case.rawValue {
        case 5:
            if let array = v.pointee.array_value {
                dropped = clear(&array.pointee.base) || dropped
                for i in 0..<array.pointee.n_values {
                    if let e = array.pointee.values[i] { dropped = value(e) || dropped }
                }
            }
        case 6:
            if let list = v.pointee.kvlist_value {
                dropped = clear(&list.pointee.base) || dropped
                dropped = attributes(list.pointee.values, list.pointee.n_values) || dropped
            }
        default: break
        }
        return dropped
    }

    @inline(__always)
    static func clear(_ base: inout ProtobufCMessage) -> Bool {
        guard base.n_unknown_fields > 0 else { return false }
        base.n_unknown_fields = 0
        base.unknown_fields = nil
        return true
    }
}
