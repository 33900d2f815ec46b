import COTLP
package import FlightRecorderCore
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
            UnpackArena.withRequest(raw) { data in
                var w = JSONWriter(capacity: raw.count * 3)
                write(data.pointee, &w)
                return w.bytes
            }
        }
    }

    /// The JSON of a `TracesData` of one resource group with one scope group, around its spans
    /// array: everything before it (`{"resourceSpans":[{"resource":…,"scopeSpans":[{"scope":…,
    /// "spans":`) and everything after it. The spans of one scope group share it, so it is
    /// written once per group; `prefix + [span, …] + suffix` is byte for byte what
    /// `tracesData` writes for such a message.
    package struct GroupFrame: Sendable {
        package var prefix: [UInt8]
        package var suffix: [UInt8]
    }

    /// `rs` and `ss` written as a request holding only them (their fields pointing at the
    /// originals) with no span, cut around the empty spans array: the frame is `write`'s own.
    package static func frame(_ rs: UnsafePointer<CResourceSpans>, _ ss: UnsafePointer<CScopeSpans>) -> GroupFrame {
        var scope = ss.pointee
        scope.n_spans = 0
        let json: [UInt8] = withUnsafeMutablePointer(to: &scope) { scopePointer in
            var scopeList: UnsafeMutablePointer<CScopeSpans>? = scopePointer
            return withUnsafeMutablePointer(to: &scopeList) { scopes in
                var resource = rs.pointee
                resource.n_scope_spans = 1
                resource.scope_spans = scopes
                return withUnsafeMutablePointer(to: &resource) { resourcePointer in
                    var resourceList: UnsafeMutablePointer<CResourceSpans>? = resourcePointer
                    return withUnsafeMutablePointer(to: &resourceList) { resources in
                        var d = CExportRequest()
                        d.n_resource_spans = 1
                        d.resource_spans = resources
                        var w = JSONWriter(capacity: 1024)
                        write(d, &w)
                        return w.bytes
                    }
                }
            }
        }
        // The one unquoted `"spans":[]`: a string's quotes are escaped, and no other object
        // here has a member of that name.
        let marker = Array(#""spans":[]"#.utf8)
        var at = json.count - marker.count
        while at >= 0, !json[at..<at + marker.count].elementsEqual(marker) { at -= 1 }
        precondition(at >= 0, "write gave a group without its spans array")
        let cut = at + marker.count - 2
        return GroupFrame(prefix: Array(json[..<cut]), suffix: Array(json[(cut + 2)...]))
    }

    /// A span's object (`{…}`), as `tracesData` writes it in its spans array (`w` holding that
    /// array open, so spans after the first are separated by commas).
    package static func span(_ span: UnsafePointer<CSpan>, into w: inout JSONWriter) {
        w.beginObject()
        write(span.pointee, &w)
        w.endObject()
    }

    /// `span(_:into:)` compared with bytes already written (`m` at where the span should start).
    package static func span(_ span: UnsafePointer<CSpan>, matching m: inout JSONMatcher) {
        m.beginObject()
        write(span.pointee, &m)
        m.endObject()
    }

    static func write<W: JSONOutput>(_ d: CExportRequest, _ w: inout W) {
        w.beginObject()
        array("resourceSpans", d.resource_spans, d.n_resource_spans, &w, evenIfEmpty: true) { rs, w in
            if let resource = rs.resource?.pointee {
                w.key("resource")
                w.beginObject()
                attributes("attributes", resource.attributes, resource.n_attributes, &w)
                nonZero("droppedAttributesCount", resource.dropped_attributes_count, &w)
                array("entityRefs", resource.entity_refs, resource.n_entity_refs, &w) { ref, w in
                    string("schemaUrl", ref.schema_url, &w)
                    string("type", ref.type, &w)
                    strings("idKeys", ref.id_keys, ref.n_id_keys, &w)
                    strings("descriptionKeys", ref.description_keys, ref.n_description_keys, &w)
                }
                w.endObject()
            }
            array("scopeSpans", rs.scope_spans, rs.n_scope_spans, &w, evenIfEmpty: true) { ss, w in
                if let scope = ss.scope?.pointee {
                    w.key("scope")
                    w.beginObject()
                    string("name", scope.name, &w)
                    string("version", scope.version, &w)
                    attributes("attributes", scope.attributes, scope.n_attributes, &w)
                    nonZero("droppedAttributesCount", scope.dropped_attributes_count, &w)
                    w.endObject()
                }
                array("spans", ss.spans, ss.n_spans, &w, evenIfEmpty: true) { span, w in write(span, &w) }
                string("schemaUrl", ss.schema_url, &w)
            }
            string("schemaUrl", rs.schema_url, &w)
        }
        w.endObject()
    }

    /// A span's members (the caller opens and closes its object).
    static func write<W: JSONOutput>(_ s: CSpan, _ w: inout W) {
        hex("traceId", s.trace_id, &w)
        hex("spanId", s.span_id, &w)
        string("traceState", s.trace_state, &w)
        hex("parentSpanId", s.parent_span_id, &w)
        nonZero("flags", s.flags, &w)
        string("name", s.name, &w)
        nonZero("kind", s.kind.rawValue, &w)
        fixed64("startTimeUnixNano", s.start_time_unix_nano, &w)
        fixed64("endTimeUnixNano", s.end_time_unix_nano, &w)
        attributes("attributes", s.attributes, s.n_attributes, &w)
        nonZero("droppedAttributesCount", s.dropped_attributes_count, &w)
        array("events", s.events, s.n_events, &w) { event, w in
            fixed64("timeUnixNano", event.time_unix_nano, &w)
            string("name", event.name, &w)
            attributes("attributes", event.attributes, event.n_attributes, &w)
            nonZero("droppedAttributesCount", event.dropped_attributes_count, &w)
        }
        nonZero("droppedEventsCount", s.dropped_events_count, &w)
        array("links", s.links, s.n_links, &w) { link, w in
            hex("traceId", link.trace_id, &w)
            hex("spanId", link.span_id, &w)
            string("traceState", link.trace_state, &w)
            attributes("attributes", link.attributes, link.n_attributes, &w)
            nonZero("droppedAttributesCount", link.dropped_attributes_count, &w)
            nonZero("flags", link.flags, &w)
        }
        nonZero("droppedLinksCount", s.dropped_links_count, &w)
        if let status = s.status?.pointee {
            w.key("status")
            w.beginObject()
            string("message", status.message, &w)
            nonZero("code", status.code.rawValue, &w)
            w.endObject()
        }
    }

    /// `key`: an array of objects, one per message `items` points at (null entries skipped),
    /// each object's members written by `body`; nothing when there are none, unless `evenIfEmpty`.
    static func array<T, W: JSONOutput>(
        _ key: StaticString, _ items: UnsafeMutablePointer<UnsafeMutablePointer<T>?>?, _ n: Int,
        _ w: inout W, evenIfEmpty: Bool = false, _ body: (T, inout W) -> Void
    ) {
        guard n > 0 || evenIfEmpty else { return }
        w.key(key)
        w.beginArray()
        for i in 0..<n {
            guard let item = items?[i]?.pointee else { continue }
            w.beginObject()
            body(item, &w)
            w.endObject()
        }
        w.endArray()
    }

    static func attributes<W: JSONOutput>(
        _ key: StaticString, _ list: UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>?, _ n: Int,
        _ w: inout W
    ) {
        guard let list, n > 0 else { return }
        w.key(key)
        keyValues(list, n, &w)
    }

    static func keyValues<W: JSONOutput>(
        _ list: UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>, _ n: Int, _ w: inout W
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

    static func value<W: JSONOutput>(_ v: CAnyValue, _ w: inout W) {
        w.beginObject()
        switch v.value_case.rawValue {
        case 1:
            w.key("stringValue")
            if let p = v.string_value { w.string(cString: p) } else { w.string("") }
        case 2:
            w.key("boolValue")
            w.bool(v.bool_value != 0)
        case 3:
            w.key("intValue")
            if v.int_value >= 0 { w.decimalString(UInt64(v.int_value)) } else { w.string(String(v.int_value)) }
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

    static func string<W: JSONOutput>(_ key: StaticString, _ s: UnsafeMutablePointer<CChar>?, _ w: inout W) {
        guard let s, s.pointee != 0 else { return }
        w.key(key)
        w.string(cString: s)
    }

    static func strings<W: JSONOutput>(
        _ key: StaticString, _ list: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ n: Int,
        _ w: inout W
    ) {
        guard let list, n > 0 else { return }
        w.key(key)
        w.beginArray()
        for i in 0..<n {
            if let p = list[i] { w.string(cString: p) } else { w.string("") }
        }
        w.endArray()
    }

    static func hex<W: JSONOutput>(_ key: StaticString, _ b: ProtobufCBinaryData, _ w: inout W) {
        guard b.len > 0, let data = b.data else { return }
        w.key(key)
        w.hexString(UnsafeBufferPointer(start: data, count: b.len))
    }

    static func fixed64<W: JSONOutput>(_ key: StaticString, _ v: UInt64, _ w: inout W) {
        guard v != 0 else { return }
        w.key(key)
        w.decimalString(v)
    }

    static func nonZero<W: JSONOutput>(_ key: StaticString, _ v: UInt32, _ w: inout W) {
        guard v != 0 else { return }
        w.key(key)
        w.int(Int64(v))
    }
}
