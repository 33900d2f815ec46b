import COTLP
import FlightRecorderCore
import Foundation

/// OTLP/JSON of a serialized `TracesData`, as the OpenTelemetry file exporter writes it: one
/// object, lowerCamelCase field names, trace and span IDs in hex, 64-bit integers as decimal
/// strings, enums as integers, bytes in base64.
///
/// The inverse of `OTLPJSONTranscoder`: a line it writes transcodes back to a message that
/// protobuf-c unpacks into the same content, so an audit bundle's reader can recompute each
/// span's evidence leaf from its line (a test checks the round trip). Hand-written, as the
/// transcoder is: the Swift protobuf packages this project may use do not read protobuf-c's
/// structs.
public enum OTLPJSONEncoder {
    /// The JSON of `bytes` (a `TracesData`); nil when they do not unpack.
    public static func tracesData(_ bytes: [UInt8]) -> [UInt8]? {
        bytes.withUnsafeBytes { raw in
            let arena = UnpackArena(expectedBytes: raw.count * 4)
            return withExtendedLifetime(arena) {
                guard (try? WireDepthGuard.check(raw)) != nil,
                    let data = opentelemetry__proto__trace__v1__traces_data__unpack(
                        arena.allocator, raw.count, raw.baseAddress?.assumingMemoryBound(to: UInt8.self))
                else { return nil }
                var w = JSONWriter(capacity: raw.count * 3)
                write(data.pointee, &w)
                return w.bytes
            }
        }
    }

    static func write(_ d: CTracesData, _ w: inout JSONWriter) {
        w.beginObject()
        w.key("resourceSpans")
        w.beginArray()
        for r in 0..<d.n_resource_spans {
            guard let rs = d.resource_spans[r]?.pointee else { continue }
            w.beginObject()
            if let resource = rs.resource?.pointee {
                w.key("resource")
                w.beginObject()
                attributes("attributes", resource.attributes, resource.n_attributes, &w)
                count("droppedAttributesCount", resource.dropped_attributes_count, &w)
                if resource.n_entity_refs > 0 {
                    w.key("entityRefs")
                    w.beginArray()
                    for e in 0..<resource.n_entity_refs {
                        guard let ref = resource.entity_refs[e]?.pointee else { continue }
                        w.beginObject()
                        string("schemaUrl", ref.schema_url, &w)
                        string("type", ref.type, &w)
                        strings("idKeys", ref.id_keys, ref.n_id_keys, &w)
                        strings("descriptionKeys", ref.description_keys, ref.n_description_keys, &w)
                        w.endObject()
                    }
                    w.endArray()
                }
                w.endObject()
            }
            w.key("scopeSpans")
            w.beginArray()
            for s in 0..<rs.n_scope_spans {
                guard let ss = rs.scope_spans[s]?.pointee else { continue }
                w.beginObject()
                if let scope = ss.scope?.pointee {
                    w.key("scope")
                    w.beginObject()
                    string("name", scope.name, &w)
                    string("version", scope.version, &w)
                    attributes("attributes", scope.attributes, scope.n_attributes, &w)
                    count("droppedAttributesCount", scope.dropped_attributes_count, &w)
                    w.endObject()
                }
                w.key("spans")
                w.beginArray()
                for i in 0..<ss.n_spans {
                    if let span = ss.spans[i]?.pointee { write(span, &w) }
                }
                w.endArray()
                string("schemaUrl", ss.schema_url, &w)
                w.endObject()
            }
            w.endArray()
            string("schemaUrl", rs.schema_url, &w)
            w.endObject()
        }
        w.endArray()
        w.endObject()
    }

    static func write(_ s: CSpan, _ w: inout JSONWriter) {
        w.beginObject()
        hex("traceId", s.trace_id, &w)
        hex("spanId", s.span_id, &w)
        string("traceState", s.trace_state, &w)
        hex("parentSpanId", s.parent_span_id, &w)
        if s.flags != 0 {
            w.key("flags")
            w.int(Int64(s.flags))
        }
        string("name", s.name, &w)
        if s.kind.rawValue != 0 {
            w.key("kind")
            w.int(Int64(s.kind.rawValue))
        }
        fixed64("startTimeUnixNano", s.start_time_unix_nano, &w)
        fixed64("endTimeUnixNano", s.end_time_unix_nano, &w)
        attributes("attributes", s.attributes, s.n_attributes, &w)
        count("droppedAttributesCount", s.dropped_attributes_count, &w)
        if s.n_events > 0 {
            w.key("events")
            w.beginArray()
            for e in 0..<s.n_events {
                guard let event = s.events[e]?.pointee else { continue }
                w.beginObject()
                fixed64("timeUnixNano", event.time_unix_nano, &w)
                string("name", event.name, &w)
                attributes("attributes", event.attributes, event.n_attributes, &w)
                count("droppedAttributesCount", event.dropped_attributes_count, &w)
                w.endObject()
            }
            w.endArray()
        }
        count("droppedEventsCount", s.dropped_events_count, &w)
        if s.n_links > 0 {
            w.key("links")
            w.beginArray()
            for l in 0..<s.n_links {
                guard let link = s.links[l]?.pointee else { continue }
                w.beginObject()
                hex("traceId", link.trace_id, &w)
                hex("spanId", link.span_id, &w)
                string("traceState", link.trace_state, &w)
                attributes("attributes", link.attributes, link.n_attributes, &w)
                count("droppedAttributesCount", link.dropped_attributes_count, &w)
                if link.flags != 0 {
                    w.key("flags")
                    w.int(Int64(link.flags))
                }
                w.endObject()
            }
            w.endArray()
        }
        count("droppedLinksCount", s.dropped_links_count, &w)
        if let status = s.status?.pointee {
            w.key("status")
            w.beginObject()
            string("message", status.message, &w)
            if status.code.rawValue != 0 {
                w.key("code")
                w.int(Int64(status.code.rawValue))
            }
            w.endObject()
        }
        w.endObject()
    }

    static func attributes(
        _ key: StaticString, _ list: UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>?, _ n: Int,
        _ w: inout JSONWriter
    ) {
        guard let list, n > 0 else { return }
        w.key(key)
        keyValues(list, n, &w)
    }

    static func keyValues(
        _ list: UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>, _ n: Int, _ w: inout JSONWriter
    ) {
        w.beginArray()
        for i in 0..<n {
            guard let kv = list[i]?.pointee else { continue }
            w.beginObject()
            string("key", kv.key, &w)
            if let v = kv.value?.pointee {
                w.key("value")
                value(v, &w)
            }
            w.endObject()
        }
        w.endArray()
    }

    static func value(_ v: CAnyValue, _ w: inout JSONWriter) {
        w.beginObject()
        switch v.value_case.rawValue {
        case 1:
            w.key("stringValue")
            w.string(v.string_value.map { String(cString: $0) } ?? "")
        case 2:
            w.key("boolValue")
            w.bool(v.bool_value != 0)
        case 3:
            w.key("intValue")
            w.string(String(v.int_value))
        case 4:
            w.key("doubleValue")
            let d = v.double_value
            if d.isNaN {
                w.string("NaN")
            } else if d.isInfinite {
                w.string(d > 0 ? "Infinity" : "-Infinity")
            } else if d == 0 && d.sign == .minus {
                w.string("-0")  // a JSON number -0.0 reads back as an integer zero: keep the sign
            } else {
                w.raw(Array("\(d)".utf8))
            }
        case 5:
            w.key("arrayValue")
            w.beginObject()
            if let array = v.array_value?.pointee, array.n_values > 0 {
                w.key("values")
                w.beginArray()
                for i in 0..<array.n_values {
                    if let e = array.values[i]?.pointee { value(e, &w) } else { w.beginObject(); w.endObject() }
                }
                w.endArray()
            }
            w.endObject()
        case 6:
            w.key("kvlistValue")
            w.beginObject()
            if let list = v.kvlist_value?.pointee, list.n_values > 0, let values = list.values {
                w.key("values")
                keyValues(values, list.n_values, &w)
            }
            w.endObject()
        case 7:
            w.key("bytesValue")
            let b = v.bytes_value
            w.string((b.len > 0 && b.data != nil ? Data(bytes: b.data!, count: b.len) : Data()).base64EncodedString())
        default:
            break
        }
        w.endObject()
    }

    static func string(_ key: StaticString, _ s: UnsafeMutablePointer<CChar>?, _ w: inout JSONWriter) {
        guard let s, s.pointee != 0 else { return }
        w.key(key)
        w.string(String(cString: s))
    }

    static func strings(
        _ key: StaticString, _ list: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ n: Int,
        _ w: inout JSONWriter
    ) {
        guard let list, n > 0 else { return }
        w.key(key)
        w.beginArray()
        for i in 0..<n { w.string(list[i].map { String(cString: $0) } ?? "") }
        w.endArray()
    }

    static func hex(_ key: StaticString, _ b: ProtobufCBinaryData, _ w: inout JSONWriter) {
        guard b.len > 0, let data = b.data else { return }
        w.key(key)
        w.string(Hex.encode(UnsafeBufferPointer(start: data, count: b.len)))
    }

    static func fixed64(_ key: StaticString, _ v: UInt64, _ w: inout JSONWriter) {
        guard v != 0 else { return }
        w.key(key)
        w.string(String(v))
    }

    static func count(_ key: StaticString, _ v: UInt32, _ w: inout JSONWriter) {
        guard v != 0 else { return }
        w.key(key)
        w.int(Int64(v))
    }
}
