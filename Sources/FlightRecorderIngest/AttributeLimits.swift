import COTLP
import CProtobufC
import FlightRecorderOTLP

#if canImport(Glibc)
import Glibc
#endif

/// Stage 5 of ingest: attribute-count and value-length limits (`IngestLimits`), counted so
/// the span and the ingest stats say what was cut.
enum AttributeLimits {
    static let truncatedKey = CKey(IngestLimits.truncatedCountKey)

    struct LimitCounts {
        var truncatedValues = 0
        var droppedAttributes = 0
        var changed: Bool { truncatedValues > 0 || droppedAttributes > 0 }
    }

    /// Applies the attribute-count and value-length limits. `bodyBytes` bounds every value's
    /// length, so when it is within the limit the value walk is skipped.
    static func apply(
        _ req: UnsafeMutablePointer<CExportRequest>, _ limits: IngestLimits, bodyBytes: Int
    ) -> LimitCounts {
        var counts = LimitCounts()
        let checkValues = bodyBytes > limits.maxAttributeValueBytes
        for r in 0..<req.pointee.n_resource_spans {
            guard let rs = req.pointee.resource_spans[r] else { continue }
            if checkValues, let res = rs.pointee.resource {
                counts.truncatedValues += truncate(res.pointee.attributes, res.pointee.n_attributes, limits)
            }
            for s in 0..<rs.pointee.n_scope_spans {
                guard let ss = rs.pointee.scope_spans[s] else { continue }
                if checkValues, let scope = ss.pointee.scope {
                    counts.truncatedValues += truncate(scope.pointee.attributes, scope.pointee.n_attributes, limits)
                }
                for i in 0..<ss.pointee.n_spans {
                    guard let span = ss.pointee.spans[i] else { continue }
                    var (dropped, truncated) = limit(
                        &span.pointee.attributes, &span.pointee.n_attributes, &span.pointee.dropped_attributes_count,
                        limits, checkValues: checkValues)
                    for e in 0..<span.pointee.n_events {
                        guard let event = span.pointee.events[e] else { continue }
                        let (d, t) = limit(
                            &event.pointee.attributes, &event.pointee.n_attributes,
                            &event.pointee.dropped_attributes_count,
                            limits, checkValues: checkValues)
                        dropped += d
                        truncated += t
                    }
                    for l in 0..<span.pointee.n_links {
                        guard let link = span.pointee.links[l] else { continue }
                        let (d, t) = limit(
                            &link.pointee.attributes, &link.pointee.n_attributes,
                            &link.pointee.dropped_attributes_count,
                            limits, checkValues: checkValues)
                        dropped += d
                        truncated += t
                    }
                    if truncated > 0 { markTruncated(span, truncated) }
                    counts.truncatedValues += truncated
                    counts.droppedAttributes += dropped
                }
            }
        }
        return counts
    }

    /// Applies both limits to one attribute list (a span's, an event's or a link's), adding
    /// what it drops to the owner's `dropped_attributes_count`.
    private static func limit(
        _ list: inout UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>?, _ n: inout Int,
        _ droppedCount: inout UInt32, _ limits: IngestLimits, checkValues: Bool
    ) -> (dropped: Int, truncated: Int) {
        let dropped = cap(&list, &n, limits.maxAttributesPerSpan)
        droppedCount &+= UInt32(clamping: dropped)
        return (dropped, checkValues ? truncate(list, n, limits) : 0)
    }

    /// Keeps the first `max` attributes and frees the rest, except the daemon's own
    /// `flightrec.*` evidence (redaction counts), which limits never remove. Returns how many
    /// were dropped.
    private static func cap(
        _ list: inout UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>?, _ n: inout Int, _ max: Int
    ) -> Int {
        guard n > max, let l = list else { return 0 }
        var kept = max
        for i in max..<n {
            guard let kv = l[i] else { continue }
            if let key = kv.pointee.key, strncmp(key, "flightrec.", 10) == 0 {
                l[kept] = kv
                kept += 1
            } else {
                CMessage.free(kv)
            }
        }
        for i in kept..<n { l[i] = nil }
        let dropped = n - kept
        n = kept
        return dropped
    }

    private static func truncate(
        _ list: UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>?, _ n: Int, _ limits: IngestLimits
    ) -> Int {
        guard let list else { return 0 }
        var count = 0
        for i in 0..<n {
            if let kv = list[i] { count += truncate(kv.pointee.value, limits) }
        }
        return count
    }

    private static func truncate(_ value: UnsafeMutablePointer<CAnyValue>?, _ limits: IngestLimits) -> Int {
        guard let v = value else { return 0 }
        let max = limits.maxAttributeValueBytes
        switch v.pointee.value_case.rawValue {
        case 1:
            guard let s = v.pointee.string_value else { return 0 }
            let length = strlen(s)
            guard length > max else { return 0 }
            // Cut at a UTF-8 boundary: never leave a partial character before the marker.
            var cut = max
            while cut > 0 && (UInt8(bitPattern: s[cut]) & 0xC0) == 0x80 { cut -= 1 }
            let kept = Array(UnsafeRawBufferPointer(start: s, count: cut))
            CMessage.release(s)
            v.pointee.string_value = RequestRedactor.cString(kept + Array(IngestLimits.truncationMarker.utf8))
            return 1
        case 5:
            guard let arr = v.pointee.array_value else { return 0 }
            var count = 0
            for i in 0..<arr.pointee.n_values { count += truncate(arr.pointee.values[i], limits) }
            return count
        case 6:
            guard let kvl = v.pointee.kvlist_value else { return 0 }
            return truncate(kvl.pointee.values, kvl.pointee.n_values, limits)
        case 7:
            guard v.pointee.bytes_value.len > max else { return 0 }
            v.pointee.bytes_value.len = max
            return 1
        default:
            return 0
        }
    }

    /// Sets `flightrec.truncated.count` on the span, replacing any value the client sent.
    private static func markTruncated(_ span: UnsafeMutablePointer<CSpan>, _ count: Int) {
        if let list = span.pointee.attributes {
            for i in 0..<span.pointee.n_attributes {
                guard let kv = list[i], truncatedKey.matches(kv.pointee.key), let v = kv.pointee.value else { continue }
                RequestRedactor.replaceWithString(v, "")
                CMessage.release(v.pointee.string_value)
                v.pointee.value_case = Opentelemetry__Proto__Common__V1__AnyValue__ValueCase(rawValue: 3)
                v.pointee.int_value = Int64(count)
                return
            }
        }
        CMessage.append(
            &span.pointee.attributes, &span.pointee.n_attributes,
            RequestRedactor.newKeyValue(truncatedKey.name) { v in
                v.pointee.value_case = Opentelemetry__Proto__Common__V1__AnyValue__ValueCase(rawValue: 3)
                v.pointee.int_value = Int64(count)
            })
    }
}
