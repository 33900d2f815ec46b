package import COTLP
import CProtobufC

#if canImport(Glibc)
import Glibc
#endif

package typealias CKeyValue = Opentelemetry__Proto__Common__V1__KeyValue
package typealias CAnyValue = Opentelemetry__Proto__Common__V1__AnyValue
typealias CKeyValueList = UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>

/// Applies a `Redactor` to a protobuf-c `ExportTraceServiceRequest` in place: resource,
/// scope, span, event and link attributes (recursively through arrays and key-value lists),
/// span names, event names and status messages. Changed spans get `flightrec.redacted.count`
/// and `flightrec.redacted.rules` (rule names, never values).
///
/// Memory: protobuf-c's default allocator is malloc/free, so replaced strings are freed and
/// new ones `strdup`ed; dropped attributes are freed with `protobuf_c_message_free_unpacked`.
/// The request is then freed by the caller's `free_unpacked` as usual.
public struct RequestRedactor: Sendable {
    public let redactor: Redactor

    public init(redactor: Redactor) { self.redactor = redactor }

    public static let countKey = "flightrec.redacted.count"
    public static let rulesKey = "flightrec.redacted.rules"

    /// Redacts the request; returns the hits (empty when nothing changed).
    public func redact(_ request: UnsafeMutableRawPointer) -> Hits {
        let req = request.assumingMemoryBound(to: Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest.self)
        var total = Hits()
        for r in 0..<req.pointee.n_resource_spans {
            guard let rs = req.pointee.resource_spans[r] else { continue }
            let resource = rs.pointee.resource
            let set = redactor.ruleSet { key in
                guard let res = resource else { return nil }
                return Self.stringValue(of: key, in: res.pointee.attributes, res.pointee.n_attributes)
            }
            var shared = Hits()
            if let res = resource {
                redactList(&res.pointee.attributes, &res.pointee.n_attributes, prefix: nil, set: set, hits: &shared)
            }
            total.merge(shared)
            for s in 0..<rs.pointee.n_scope_spans {
                guard let ss = rs.pointee.scope_spans[s] else { continue }
                var scopeOwn = Hits()
                if let scope = ss.pointee.scope {
                    redactList(&scope.pointee.attributes, &scope.pointee.n_attributes, prefix: nil, set: set, hits: &scopeOwn)
                    redactString(&scope.pointee.name, set: set, hits: &scopeOwn)
                }
                total.merge(scopeOwn)
                for i in 0..<ss.pointee.n_spans {
                    guard let span = ss.pointee.spans[i] else { continue }
                    var hits = Hits()
                    redactSpan(span, set: set, hits: &hits)
                    total.merge(hits)
                    // A span's evidence counts what was redacted in it and in its resource and scope.
                    var evidence = shared
                    evidence.merge(scopeOwn)
                    evidence.merge(hits)
                    if evidence.count > 0 { addEvidence(span, evidence) }
                }
            }
        }
        redactor.record(total)
        return total
    }

    func redactSpan(_ span: UnsafeMutablePointer<Opentelemetry__Proto__Trace__V1__Span>, set: Int, hits: inout Hits) {
        redactString(&span.pointee.name, set: set, hits: &hits)
        redactList(&span.pointee.attributes, &span.pointee.n_attributes, prefix: nil, set: set, hits: &hits)
        for e in 0..<span.pointee.n_events {
            guard let ev = span.pointee.events[e] else { continue }
            redactString(&ev.pointee.name, set: set, hits: &hits)
            redactList(&ev.pointee.attributes, &ev.pointee.n_attributes, prefix: nil, set: set, hits: &hits)
        }
        for l in 0..<span.pointee.n_links {
            guard let link = span.pointee.links[l] else { continue }
            redactList(&link.pointee.attributes, &link.pointee.n_attributes, prefix: nil, set: set, hits: &hits)
        }
        if let status = span.pointee.status {
            redactString(&status.pointee.message, set: set, hits: &hits)
        }
    }

    /// Free text (names, messages): detectors only.
    func redactString(_ field: inout UnsafeMutablePointer<CChar>?, set: Int, hits: inout Hits) {
        guard let p = field, p.pointee != 0 else { return }
        let n = strlen(p)
        let replaced = p.withMemoryRebound(to: UInt8.self, capacity: n) {
            redactor.redactBytes(UnsafeBufferPointer(start: $0, count: n), set: set, hits: &hits)
        }
        guard let replaced else { return }
        free(p)
        field = Self.cString(replaced)
    }

    /// Applies key rules and detectors to a list of key-values, dropping entries as told.
    func redactList(_ list: inout CKeyValueList?, _ count: inout Int, prefix: String?, set: Int, hits: inout Hits) {
        guard let items = list, count > 0 else { return }
        let needKeys = redactor.sets[set].selectsKeys
        var kept = 0
        for i in 0..<count {
            guard let kv = items[i] else { continue }
            // Keys are only built when a rule or allowlist can match them (not on the default policy).
            var path = ""
            if needKeys {
                let key = kv.pointee.key.map { String(cString: $0) } ?? ""
                path = prefix.map { $0 + "." + key } ?? key
            }
            if redactValue(kv.pointee.value, key: path, set: set, hits: &hits) {
                items[kept] = kv
                kept += 1
            } else {
                protobuf_c_message_free_unpacked(UnsafeMutableRawPointer(kv).assumingMemoryBound(to: ProtobufCMessage.self), nil)
            }
        }
        count = kept
    }

    /// Returns false when the attribute must be dropped.
    func redactValue(_ value: UnsafeMutablePointer<CAnyValue>?, key: String, set: Int, hits: inout Hits) -> Bool {
        guard let v = value else { return true }
        switch v.pointee.value_case.rawValue {
        case 1:  // string
            guard let p = v.pointee.string_value, p.pointee != 0 else { return true }
            switch redactor.decision(key: key, set: set) {
            case .detect:
                // The common case: scan the bytes without making a Swift string.
                redactString(&v.pointee.string_value, set: set, hits: &hits)
                return true
            case .allowed:
                return true
            default:
                let original = String(cString: p)
                guard let out = redactor.redactValue(original, key: key, set: set, hits: &hits) else { return false }
                if out != original {
                    free(p)
                    v.pointee.string_value = Self.cString(Array(out.utf8))
                }
                return true
            }
        case 5:  // array: elements share the key
            guard let arr = v.pointee.array_value else { return true }
            for i in 0..<arr.pointee.n_values {
                if !redactValue(arr.pointee.values[i], key: key, set: set, hits: &hits) {
                    Self.replaceWithString(arr.pointee.values[i], "[REDACTED]")
                }
            }
            return true
        case 6:  // key-value list: nested keys are matched as `outer.inner`
            guard let kvl = v.pointee.kvlist_value else { return true }
            redactList(&kvl.pointee.values, &kvl.pointee.n_values, prefix: key, set: set, hits: &hits)
            return true
        case 0:
            return true
        default:  // bool, int, double, bytes: key rules apply; detectors do not
            switch redactor.decision(key: key, set: set) {
            case .rule(let r):
                let rule = redactor.sets[set].rules[r]
                switch rule.action {
                case .keep, .truncate: return true
                case .drop:
                    hits.add(rule.name)
                    return false
                case .mask, .hash:
                    hits.add(rule.name)
                    Self.replaceWithString(v, "[REDACTED:\(rule.name)]")
                    return true
                }
            case .notAllowed where v.pointee.value_case.rawValue == 7:
                hits.add("allowlist")
                Self.replaceWithString(v, "[REDACTED:allowlist]")
                return true
            default:
                return true
            }
        }
    }

    /// Turns any value into a string value (freeing what it held).
    package static func replaceWithString(_ value: UnsafeMutablePointer<CAnyValue>?, _ text: String) {
        guard let v = value else { return }
        let kind = v.pointee.value_case.rawValue
        if kind == 1, let p = v.pointee.string_value { free(p) }
        if kind == 7, let d = v.pointee.bytes_value.data { free(d) }
        if kind == 5, let a = v.pointee.array_value {
            protobuf_c_message_free_unpacked(UnsafeMutableRawPointer(a).assumingMemoryBound(to: ProtobufCMessage.self), nil)
        }
        if kind == 6, let l = v.pointee.kvlist_value {
            protobuf_c_message_free_unpacked(UnsafeMutableRawPointer(l).assumingMemoryBound(to: ProtobufCMessage.self), nil)
        }
        v.pointee.value_case = Opentelemetry__Proto__Common__V1__AnyValue__ValueCase(rawValue: 1)
        v.pointee.string_value = cString(Array(text.utf8))
    }

    package static func cString(_ bytes: [UInt8]) -> UnsafeMutablePointer<CChar> {
        let p = malloc(bytes.count + 1)!.assumingMemoryBound(to: CChar.self)
        bytes.withUnsafeBytes { b in
            if b.count > 0 { memcpy(p, b.baseAddress!, b.count) }
        }
        p[bytes.count] = 0
        return p
    }

    static func stringValue(of key: String, in list: CKeyValueList?, _ n: Int) -> String? {
        guard let list else { return nil }
        for i in 0..<n {
            guard let kv = list[i], let k = kv.pointee.key, String(cString: k) == key,
                let v = kv.pointee.value, v.pointee.value_case.rawValue == 1, let s = v.pointee.string_value
            else { continue }
            return String(cString: s)
        }
        return nil
    }

    /// Appends (or replaces) the evidence attributes on a changed span.
    func addEvidence(_ span: UnsafeMutablePointer<Opentelemetry__Proto__Trace__V1__Span>, _ hits: Hits) {
        // A client must not be able to forge evidence: drop any it sent.
        var n = span.pointee.n_attributes
        if let list = span.pointee.attributes {
            var kept = 0
            for i in 0..<n {
                guard let kv = list[i] else { continue }
                let key = kv.pointee.key.map { String(cString: $0) }
                if key == Self.countKey || key == Self.rulesKey {
                    protobuf_c_message_free_unpacked(UnsafeMutableRawPointer(kv).assumingMemoryBound(to: ProtobufCMessage.self), nil)
                } else {
                    list[kept] = kv
                    kept += 1
                }
            }
            n = kept
        }
        let grown = realloc(span.pointee.attributes, (n + 2) * MemoryLayout<UnsafeMutablePointer<CKeyValue>?>.stride)!
            .assumingMemoryBound(to: UnsafeMutablePointer<CKeyValue>?.self)
        grown[n] = Self.newKeyValue(Self.countKey) { v in
            v.pointee.value_case = Opentelemetry__Proto__Common__V1__AnyValue__ValueCase(rawValue: 3)
            v.pointee.int_value = Int64(hits.count)
        }
        grown[n + 1] = Self.newKeyValue(Self.rulesKey) { v in
            let arr = malloc(MemoryLayout<Opentelemetry__Proto__Common__V1__ArrayValue>.size)!
                .assumingMemoryBound(to: Opentelemetry__Proto__Common__V1__ArrayValue.self)
            opentelemetry__proto__common__v1__array_value__init(arr)
            let rules = hits.rules
            let values = malloc(max(1, rules.count) * MemoryLayout<UnsafeMutablePointer<CAnyValue>?>.stride)!
                .assumingMemoryBound(to: UnsafeMutablePointer<CAnyValue>?.self)
            for (i, rule) in rules.enumerated() {
                let item = malloc(MemoryLayout<CAnyValue>.size)!.assumingMemoryBound(to: CAnyValue.self)
                opentelemetry__proto__common__v1__any_value__init(item)
                item.pointee.value_case = Opentelemetry__Proto__Common__V1__AnyValue__ValueCase(rawValue: 1)
                item.pointee.string_value = Self.cString(Array(rule.utf8))
                values[i] = item
            }
            arr.pointee.values = values
            arr.pointee.n_values = rules.count
            v.pointee.value_case = Opentelemetry__Proto__Common__V1__AnyValue__ValueCase(rawValue: 5)
            v.pointee.array_value = arr
        }
        span.pointee.attributes = grown
        span.pointee.n_attributes = n + 2
    }

    package static func newKeyValue(_ key: String, _ fill: (UnsafeMutablePointer<CAnyValue>) -> Void) -> UnsafeMutablePointer<CKeyValue> {
        let kv = malloc(MemoryLayout<CKeyValue>.size)!.assumingMemoryBound(to: CKeyValue.self)
        opentelemetry__proto__common__v1__key_value__init(kv)
        kv.pointee.key = cString(Array(key.utf8))
        let v = malloc(MemoryLayout<CAnyValue>.size)!.assumingMemoryBound(to: CAnyValue.self)
        opentelemetry__proto__common__v1__any_value__init(v)
        fill(v)
        kv.pointee.value = v
        return kv
    }
}
