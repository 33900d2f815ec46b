import FlightRecorderCore
import FlightRecorderGuardPolicy
import FlightRecorderOTLP
import FlightRecorderRedaction
import Foundation
import Logging

/// Redaction of what the sidecar shows: tool results, arguments on spans, free text.
extension GuardService {
    /// Free text (a prompt, an approver's note) through the detectors, hits counted.
    func redactText(_ text: String, tenant: String) -> String {
        var hits = Hits()
        let out = redactor.redactText(text, set: ruleSet(tenant), hits: &hits)
        redactor.record(hits)
        return out
    }

    func ruleSet(_ tenant: String) -> Int {
        redactor.ruleSet { key in
            key == "service.name" ? GuardSpanEncoder.serviceName : (key == GuardSpans.tenant ? tenant : nil)
        }
    }

    /// Every string in a tool result (and every number a key rule names) goes through the
    /// collector's redaction engine under its dotted JSON path, e.g. `user.recovery_code`.
    func redact(_ value: JSONValue, tenant: String) -> JSONValue {
        var hits = Hits()
        let set = ruleSet(tenant)
        func walk(_ v: JSONValue, _ path: String) -> JSONValue? {
            switch v {
            case .object(let o):
                var out: [String: JSONValue] = [:]
                for (k, child) in o {
                    if let r = walk(child, path.isEmpty ? k : path + "." + k) { out[k] = r }
                }
                return .object(out)
            case .array(let a): return .array(a.compactMap { walk($0, path) })
            case .string(let s): return redactor.redactValue(s, key: path, set: set, hits: &hits).map(JSONValue.string)
            case .int, .uint, .double:
                let text = v.scalarText ?? ""
                guard let r = redactor.redactValue(text, key: path, set: set, hits: &hits) else { return nil }
                return r == text ? v : .string(r)
            case .null, .bool: return v
            }
        }
        let out = walk(value, "") ?? .null
        redactor.record(hits)
        return out
    }

    /// The call's arguments after redaction, as JSON text: what spans and approval records
    /// show. Computed once per request, so each redaction hit is counted once.
    func shown(_ r: GuardRequest, tenant: String) -> String { Self.text(redact(r.arguments, tenant: tenant)) }
}
