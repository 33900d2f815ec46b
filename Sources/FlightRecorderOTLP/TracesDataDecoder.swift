import COTLP

/// Decodes a stored block payload (a serialized `TracesData`) into `SpanRecord`s for queries.
public enum TracesDataDecoder {

    /// Decodes the spans for which `include` answers true; the filter runs before any Swift
    /// values are built, so unrelated spans in the block cost almost nothing.
    /// With `traces`, the block is first cut down to those traces at the wire level
    /// (`TraceWireFilter`), so only their spans are unpacked at all.
    public static func decode(
        _ payload: UnsafeRawBufferPointer, traces: Set<TraceID>? = nil, include: (TraceID, SpanID) -> Bool
    ) throws(TracesDataError) -> [SpanRecord] {
        if let traces, let filtered = TraceWireFilter.filter(payload, traces: traces) {
            if filtered.isEmpty { return [] }
            let result: Result<[SpanRecord], TracesDataError> = filtered.withUnsafeBytes { b in
                do throws(TracesDataError) {
                    return .success(try decode(b, traces: nil, include: include))
                } catch {
                    return .failure(error)
                }
            }
            return try result.get()
        }
        // Unpacked into an arena: nothing here edits the message, so all of it goes at once
        // with the arena, without a walk to free each field.
        let arena = UnpackArena(expectedBytes: payload.count * 4)
        defer { withExtendedLifetime(arena) {} }
        guard
            let data = opentelemetry__proto__trace__v1__traces_data__unpack(
                arena.allocator, payload.count, payload.baseAddress?.assumingMemoryBound(to: UInt8.self))
        else { throw TracesDataError(description: "stored block is not a valid TracesData message") }
        var out: [SpanRecord] = []
        var strings = StringInterner()
        for r in 0..<data.pointee.n_resource_spans {
            guard let rs = data.pointee.resource_spans[r]?.pointee else { continue }
            var resourceAttributes: [Attribute]?
            for s in 0..<rs.n_scope_spans {
                guard let ss = rs.scope_spans[s]?.pointee else { continue }
                var resource: ResourceRecord?
                for i in 0..<ss.n_spans {
                    guard let span = ss.spans[i]?.pointee,
                        let traceID = TraceID(bytes: span.trace_id.rawBuffer),
                        let spanID = SpanID(bytes: span.span_id.rawBuffer),
                        include(traceID, spanID)
                    else { continue }
                    if resource == nil {
                        if resourceAttributes == nil {
                            resourceAttributes = attributes(
                                rs.resource?.pointee.attributes, rs.resource?.pointee.n_attributes ?? 0, &strings)
                        }
                        let scope = ss.scope?.pointee
                        resource = ResourceRecord(
                            attributes: resourceAttributes!, scopeName: string(scope?.name),
                            scopeVersion: string(scope?.version))
                    }
                    out.append(
                        record(span, traceID: traceID, spanID: spanID, resource: resource!, strings: &strings))
                }
            }
        }
        return out
    }

    /// The resource record the spans of scope group `ss` in resource group `rs` share.
    package static func resource(
        _ rs: UnsafePointer<CResourceSpans>, _ ss: UnsafePointer<CScopeSpans>
    ) -> ResourceRecord {
        let scope = ss.pointee.scope?.pointee
        return ResourceRecord(
            attributes: attributes(
                rs.pointee.resource?.pointee.attributes, rs.pointee.resource?.pointee.n_attributes ?? 0),
            scopeName: string(scope?.name), scopeVersion: string(scope?.version))
    }

    /// One span's record; its names and attribute keys shared through `strings` with the spans
    /// decoded before it.
    package static func record(
        _ span: CSpan, traceID: TraceID, spanID: SpanID, resource: ResourceRecord, strings: inout StringInterner
    ) -> SpanRecord {
        var events: [SpanRecord.Event] = []
        for i in 0..<span.n_events {
            guard let e = span.events[i]?.pointee else { continue }
            events.append(
                .init(
                    timeUnixNano: e.time_unix_nano, name: name(e.name, &strings),
                    attributes: attributes(e.attributes, e.n_attributes, &strings)))
        }
        var links: [SpanRecord.Link] = []
        for i in 0..<span.n_links {
            guard let l = span.links[i]?.pointee, let t = TraceID(bytes: l.trace_id.rawBuffer),
                let s = SpanID(bytes: l.span_id.rawBuffer)
            else { continue }
            links.append(
                .init(
                    traceID: t, spanID: s, traceState: string(l.trace_state),
                    attributes: attributes(l.attributes, l.n_attributes, &strings)))
        }
        let parent = SpanID(bytes: span.parent_span_id.rawBuffer)
        return SpanRecord(
            traceID: traceID, spanID: spanID, parentSpanID: parent?.isZero == false ? parent : nil,
            traceState: string(span.trace_state), name: name(span.name, &strings), kind: Int(span.kind.rawValue),
            startNanos: span.start_time_unix_nano, endNanos: span.end_time_unix_nano,
            attributes: attributes(span.attributes, span.n_attributes, &strings),
            droppedAttributesCount: span.dropped_attributes_count, events: events, links: links,
            statusCode: SpanRecord.StatusCode(rawValue: Int(span.status?.pointee.code.rawValue ?? 0)) ?? .unset,
            statusMessage: string(span.status?.pointee.message), resource: resource)
    }

    /// A name or key: interned.
    static func name(_ p: UnsafeMutablePointer<CChar>?, _ strings: inout StringInterner) -> String {
        guard let p else { return "" }
        return strings.string(p)
    }

    package static func string(_ p: UnsafeMutablePointer<CChar>?) -> String {
        guard let p else { return "" }
        return String(cString: p)
    }

    package static func attributes(
        _ list: UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>?, _ n: Int
    ) -> [Attribute] {
        var strings = StringInterner()
        return attributes(list, n, &strings)
    }

    static func attributes(
        _ list: UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>?, _ n: Int, _ strings: inout StringInterner
    ) -> [Attribute] {
        guard let list, n > 0 else { return [] }
        var out: [Attribute] = []
        out.reserveCapacity(n)
        for i in 0..<n {
            guard let kv = list[i]?.pointee else { continue }
            out.append(Attribute(name(kv.key, &strings), value(kv.value, &strings)))
        }
        return out
    }

    static func value(_ p: UnsafeMutablePointer<CAnyValue>?, _ strings: inout StringInterner) -> AttributeValue {
        guard let v = p?.pointee else { return .empty }
        switch v.value_case.rawValue {
        case 1: return .string(string(v.string_value))
        case 2: return .bool(v.bool_value != 0)
        case 3: return .int(v.int_value)
        case 4: return .double(v.double_value)
        case 5:
            guard let a = v.array_value?.pointee else { return .array([]) }
            return .array((0..<a.n_values).map { value(a.values[$0], &strings) })
        case 6:
            guard let kv = v.kvlist_value?.pointee else { return .kvlist([]) }
            return .kvlist(attributes(kv.values, kv.n_values, &strings))
        case 7: return .bytes(Array(v.bytes_value.rawBuffer))
        default: return .empty
        }
    }
}

public struct TracesDataError: Error, CustomStringConvertible {
    public var description: String
}
