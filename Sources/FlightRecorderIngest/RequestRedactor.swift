import COTLP
import CProtobufC
package import FlightRecorderOTLP
public import FlightRecorderRedaction

#if canImport(Glibc)
import Glibc
#endif

typealias CKeyValueList = UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>

/// Applies a `Redactor` to a protobuf-c `ExportTraceServiceRequest` in place, over every
/// string and bytes field a client controls:
/// - attribute keys and values of resources, scopes, spans, events and links, recursively
///   through arrays and key-value lists; `bytes` values are scanned as text
/// - span, event and scope names, scope versions, status messages
/// - `trace_state` of spans and links, `schema_url` of resource and scope spans
/// - the resource's entity references (schema URL, type, key names)
///
/// IDs (fixed-size bytes) and numbers are not text and are left alone. Changed spans get
/// `flightrec.redacted.count` and `flightrec.redacted.rules` (rule names, never values).
///
/// Memory: through `CMessage` (the request lives in an arena): replaced strings and dropped
/// attributes are released there, new ones allocated there. Unset strings point at
/// protobuf-c's static empty string and are never freed.
public struct RequestRedactor: Sendable {
    public let redactor: Redactor

    public init(redactor: Redactor) { self.redactor = redactor }

    public static let countKey = "flightrec.redacted.count"
    public static let rulesKey = "flightrec.redacted.rules"

    /// Redacts the request; returns the hits (empty when nothing changed).
    public func redact(_ request: UnsafeMutableRawPointer) -> Hits {
        let req = request.assumingMemoryBound(
            to: Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest.self)
        var total = Hits()
        for r in 0..<req.pointee.n_resource_spans {
            guard let rs = req.pointee.resource_spans[r] else { continue }
            let resource = rs.pointee.resource
            let set = redactor.ruleSet { key in
                guard let res = resource else { return nil }
                return Self.stringValue(of: key, in: res.pointee.attributes, res.pointee.n_attributes)
            }
            var shared = Hits()
            redactString(&rs.pointee.schema_url, set: set, hits: &shared)
            if let res = resource {
                redactList(&res.pointee.attributes, &res.pointee.n_attributes, prefix: nil, set: set, hits: &shared)
                for e in 0..<res.pointee.n_entity_refs {
                    guard let ref = res.pointee.entity_refs[e] else { continue }
                    redactString(&ref.pointee.schema_url, set: set, hits: &shared)
                    redactString(&ref.pointee.type, set: set, hits: &shared)
                    for k in 0..<ref.pointee.n_id_keys {
                        redactString(&ref.pointee.id_keys[k], set: set, hits: &shared)
                    }
                    for k in 0..<ref.pointee.n_description_keys {
                        redactString(&ref.pointee.description_keys[k], set: set, hits: &shared)
                    }
                }
            }
            total.merge(shared)
            for s in 0..<rs.pointee.n_scope_spans {
                guard let ss = rs.pointee.scope_spans[s] else { continue }
                var scopeOwn = Hits()
                redactString(&ss.pointee.schema_url, set: set, hits: &scopeOwn)
                if let scope = ss.pointee.scope {
                    redactList(
                        &scope.pointee.attributes, &scope.pointee.n_attributes, prefix: nil, set: set, hits: &scopeOwn)
                    redactString(&scope.pointee.name, set: set, hits: &scopeOwn)
                    redactString(&scope.pointee.version, set: set, hits: &scopeOwn)
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
        redactString(&span.pointee.trace_state, set: set, hits: &hits)
        redactList(&span.pointee.attributes, &span.pointee.n_attributes, prefix: nil, set: set, hits: &hits)
        for e in 0..<span.pointee.n_events {
            guard let ev = span.pointee.events[e] else { continue }
            redactString(&ev.pointee.name, set: set, hits: &hits)
            redactList(&ev.pointee.attributes, &ev.pointee.n_attributes, prefix: nil, set: set, hits: &hits)
        }
        for l in 0..<span.pointee.n_links {
            guard let link = span.pointee.links[l] else { continue }
            redactString(&link.pointee.trace_state, set: set, hits: &hits)
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
        CMessage.release(p)
        field = Self.cString(replaced)
    }

    /// Applies key rules and detectors to a list of key-values, dropping entries as told.
    /// Keys are scanned by the detectors too: a key is client text like any other.
    func redactList(_ list: inout CKeyValueList?, _ count: inout Int, prefix: String?, set: Int, hits: inout Hits) {
        guard let items = list, count > 0 else { return }
        let rules = redactor.sets[set]
        var kept = 0
        for i in 0..<count {
            guard let kv = items[i] else { continue }
            let path: () -> String = {
                let key = kv.pointee.key.map { String(cString: $0) } ?? ""
                return prefix.map { $0 + "." + key } ?? key
            }
            let key = UnsafeBufferPointer(
                start: UnsafeRawPointer(kv.pointee.key)?.assumingMemoryBound(to: UInt8.self),
                count: kv.pointee.key.map { strlen($0) } ?? 0)
            // The key path is only built when a rule or allowlist can match it.
            let decision = rules.decision(forKeyBytes: key, path: path)
            if redactValue(kv.pointee.value, decision: decision, path: path, set: set, hits: &hits) {
                redactString(&kv.pointee.key, set: set, hits: &hits)
                items[kept] = kv
                kept += 1
            } else {
                CMessage.free(kv)
            }
        }
        count = kept
    }

    /// Applies `decision` (made once for the attribute's key) to its value; returns false when
    /// the attribute must be dropped. `path` builds the dotted key for nested lists.
    func redactValue(
        _ value: UnsafeMutablePointer<CAnyValue>?, decision: CompiledSet.Decision, path: () -> String, set: Int,
        hits: inout Hits
    ) -> Bool {
        guard let v = value else { return true }
        let kind = v.pointee.value_case.rawValue
        if case .rule(let r) = decision, kind != 1 {
            // A rule on the key covers the whole value, whatever its type: a credential key
            // holding a list is masked as a whole, not element by element.
            let rule = redactor.sets[set].rules[r]
            switch rule.action {
            case .keep: return true
            case .truncate: break  // strings only; other kinds go on below
            case .drop:
                hits.add(rule.name)
                return false
            case .pseudonym where kind == 3:
                // A numeric user ID is an identity too: its decimal form, pseudonymised.
                hits.add(rule.name)
                Self.replaceWithString(v, redactor.pseudonym(String(v.pointee.int_value)))
                return true
            case .mask, .hash, .pseudonym:
                hits.add(rule.name)
                Self.replaceWithString(v, "[REDACTED:\(rule.name)]")
                return true
            }
        }
        switch kind {
        case 1:  // string
            guard let p = v.pointee.string_value, p.pointee != 0 else { return true }
            switch decision {
            case .detect:
                // The common case: scan the bytes without making a Swift string.
                redactString(&v.pointee.string_value, set: set, hits: &hits)
                return true
            case .allowed:
                return true
            case .notAllowed:
                hits.add("allowlist")
                CMessage.release(p)
                v.pointee.string_value = Self.cString(Array("[REDACTED:allowlist]".utf8))
                return true
            case .rule(let r):
                let original = String(cString: p)
                guard let out = redactor.apply(rule: redactor.sets[set].rules[r], to: original, set: set, hits: &hits)
                else { return false }
                if out != original {
                    CMessage.release(p)
                    v.pointee.string_value = Self.cString(Array(out.utf8))
                }
                return true
            }
        case 5:  // array: elements share the key and its decision
            guard let arr = v.pointee.array_value else { return true }
            for i in 0..<arr.pointee.n_values {
                if !redactValue(arr.pointee.values[i], decision: decision, path: path, set: set, hits: &hits) {
                    Self.replaceWithString(arr.pointee.values[i], "[REDACTED]")
                }
            }
            return true
        case 6:  // key-value list: nested keys are matched as `outer.inner`
            guard let kvl = v.pointee.kvlist_value else { return true }
            let prefix = redactor.sets[set].selectsKeys ? path() : nil
            redactList(&kvl.pointee.values, &kvl.pointee.n_values, prefix: prefix, set: set, hits: &hits)
            return true
        case 7:  // bytes: client text as much as a string is
            switch decision {
            case .allowed: return true
            case .notAllowed:
                hits.add("allowlist")
                Self.replaceWithString(v, "[REDACTED:allowlist]")
                return true
            default:
                let b = v.pointee.bytes_value
                guard b.len > 0, let data = b.data else { return true }
                guard
                    let out = redactor.redactBytes(
                        UnsafeBufferPointer(start: data, count: b.len), set: set, hits: &hits)
                else { return true }
                CMessage.release(data)
                let copy = CMessage.allocate(out.count).assumingMemoryBound(to: UInt8.self)
                out.withUnsafeBytes { if $0.count > 0 { memcpy(copy, $0.baseAddress!, $0.count) } }
                v.pointee.bytes_value = ProtobufCBinaryData(len: out.count, data: copy)
                return true
            }
        default:  // empty, bool, int, double: numbers are not text
            return true
        }
    }

    /// Turns any value into a string value (freeing what it held).
    package static func replaceWithString(_ value: UnsafeMutablePointer<CAnyValue>?, _ text: String) {
        guard let v = value else { return }
        let kind = v.pointee.value_case.rawValue
        if kind == 1, let p = v.pointee.string_value { CMessage.release(p) }
        if kind == 7, let d = v.pointee.bytes_value.data { CMessage.release(d) }
        if kind == 5, let a = v.pointee.array_value { CMessage.free(a) }
        if kind == 6, let l = v.pointee.kvlist_value { CMessage.free(l) }
        v.pointee.value_case = Opentelemetry__Proto__Common__V1__AnyValue__ValueCase(rawValue: 1)
        v.pointee.string_value = cString(Array(text.utf8))
    }

    package static func cString(_ bytes: [UInt8]) -> UnsafeMutablePointer<CChar> {
        let p = CMessage.allocate(bytes.count + 1).assumingMemoryBound(to: CChar.self)
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
                    CMessage.free(kv)
                } else {
                    list[kept] = kv
                    kept += 1
                }
            }
            n = kept
        }
        let grown = CMessage.resize(span.pointee.attributes, oldCount: n, newCount: n + 2)
        grown[n] = Self.newKeyValue(Self.countKey) { v in
            v.pointee.value_case = Opentelemetry__Proto__Common__V1__AnyValue__ValueCase(rawValue: 3)
            v.pointee.int_value = Int64(hits.count)
        }
        grown[n + 1] = Self.newKeyValue(Self.rulesKey) { v in
            let arr = CMessage.allocate(Opentelemetry__Proto__Common__V1__ArrayValue.self)
            opentelemetry__proto__common__v1__array_value__init(arr)
            let rules = hits.rules
            let values = CMessage.allocate(max(1, rules.count) * MemoryLayout<UnsafeMutablePointer<CAnyValue>?>.stride)
                .assumingMemoryBound(to: UnsafeMutablePointer<CAnyValue>?.self)
            for (i, rule) in rules.enumerated() {
                let item = CMessage.allocate(CAnyValue.self)
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

    package static func newKeyValue(
        _ key: String, _ fill: (UnsafeMutablePointer<CAnyValue>) -> Void
    ) -> UnsafeMutablePointer<CKeyValue> {
        let kv = CMessage.allocate(CKeyValue.self)
        opentelemetry__proto__common__v1__key_value__init(kv)
        kv.pointee.key = cString(Array(key.utf8))
        let v = CMessage.allocate(CAnyValue.self)
        opentelemetry__proto__common__v1__any_value__init(v)
        fill(v)
        kv.pointee.value = v
        return kv
    }
}
