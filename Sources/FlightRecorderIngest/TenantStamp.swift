import COTLP
import CProtobufC
import FlightRecorderOTLP

#if canImport(Glibc)
import Glibc
#endif

/// Stage 3 of ingest: the token decides the tenant, never the payload. Every `tenant.id` on
/// a resource, scope or span is overwritten and a resource without one gets one.
enum TenantStamp {
    static let tenantKey = CKey("tenant.id")

    /// Makes `tenant` the only tenant the request names: every `tenant.id` attribute on a
    /// resource, scope or span is overwritten, and a resource without one gets one. Returns
    /// whether anything changed.
    static func apply(_ req: UnsafeMutablePointer<CExportRequest>, tenant: String) -> Bool {
        var changed = false
        for r in 0..<req.pointee.n_resource_spans {
            guard let rs = req.pointee.resource_spans[r] else { continue }
            if rs.pointee.resource == nil {
                let res = CMessage.allocate(Opentelemetry__Proto__Resource__V1__Resource.self)
                opentelemetry__proto__resource__v1__resource__init(res)
                rs.pointee.resource = res
                changed = true
            }
            let res = rs.pointee.resource!
            if overwrite(res.pointee.attributes, res.pointee.n_attributes, tenant: tenant, changed: &changed) == 0 {
                CMessage.append(
                    &res.pointee.attributes, &res.pointee.n_attributes,
                    RequestRedactor.newKeyValue(tenantKey.name) { v in setString(v, tenant) })
                changed = true
            }
            for s in 0..<rs.pointee.n_scope_spans {
                guard let ss = rs.pointee.scope_spans[s] else { continue }
                if let scope = ss.pointee.scope {
                    _ = overwrite(
                        scope.pointee.attributes, scope.pointee.n_attributes, tenant: tenant, changed: &changed)
                }
                for i in 0..<ss.pointee.n_spans {
                    guard let span = ss.pointee.spans[i] else { continue }
                    _ = overwrite(span.pointee.attributes, span.pointee.n_attributes, tenant: tenant, changed: &changed)
                }
            }
        }
        return changed
    }

    /// Overwrites each `tenant.id` in `list` with `tenant`; returns how many there were.
    private static func overwrite(
        _ list: UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>?, _ n: Int, tenant: String, changed: inout Bool
    ) -> Int {
        guard let list else { return 0 }
        var found = 0
        for i in 0..<n {
            guard let kv = list[i], tenantKey.matches(kv.pointee.key) else { continue }
            found += 1
            if let v = kv.pointee.value, v.pointee.value_case.rawValue == 1, let s = v.pointee.string_value,
                String(cString: s) == tenant
            {
                continue
            }
            if kv.pointee.value == nil {
                let v = CMessage.allocate(CAnyValue.self)
                opentelemetry__proto__common__v1__any_value__init(v)
                kv.pointee.value = v
            }
            RequestRedactor.replaceWithString(kv.pointee.value, tenant)
            changed = true
        }
        return found
    }

    private static func setString(_ v: UnsafeMutablePointer<CAnyValue>, _ text: String) {
        v.pointee.value_case = Opentelemetry__Proto__Common__V1__AnyValue__ValueCase(rawValue: 1)
        v.pointee.string_value = RequestRedactor.cString(Array(text.utf8))
    }
}
