import Foundation

/// OpenMetrics 1.0 text, for scrapers that ask for it (Prometheus does by default): the
/// registry's Prometheus text with counter families named without `_total`, run-ID exemplars
/// on histogram buckets, and the closing `# EOF`.
///
/// Hand-written because swift-prometheus emits the Prometheus text format only and has no
/// exemplars; the series and their values still come from its registry, so this only
/// rewrites the family lines and appends exemplars to the bucket lines that have one.
public enum OpenMetrics {
    public static let contentType = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    public static let prometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

    /// Whether an `Accept` header prefers OpenMetrics to the Prometheus text format.
    public static func wanted(accept: String?) -> Bool {
        guard let accept else { return false }
        var best: (om: Double, text: Double) = (-1, -1)
        for part in accept.split(separator: ",") {
            let fields = part.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
            guard let type = fields.first else { continue }
            var q = 1.0
            for f in fields.dropFirst() where f.hasPrefix("q=") { q = Double(f.dropFirst(2)) ?? 1 }
            if type == "application/openmetrics-text" {
                best.om = max(best.om, q)
            } else if type == "text/plain" || type == "*/*" {
                best.text = max(best.text, q)
            }
        }
        return best.om >= 0 && best.om >= best.text
    }

    /// A label value escaped for the text formats.
    static func escape(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// OpenMetrics text from the registry's Prometheus text; `exemplars` maps a bucket line's
    /// series (`name_bucket{labels,le="…"}`) to the exemplar text appended to it.
    public static func convert(_ text: [UInt8], exemplars: [String: String]) -> [UInt8] {
        let lines = text.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true)
        var counters: Set<Substring> = []
        for line in lines where line.starts(with: "# TYPE ".utf8) && line.reversed().starts(with: "retnuoc ".utf8) {
            let s = Substring(decoding: line, as: UTF8.self)
            counters.insert(s.dropFirst(7).dropLast(8))
        }
        var out: [UInt8] = []
        out.reserveCapacity(text.count + exemplars.count * 64 + 8)
        for line in lines {
            if line.starts(with: "# HELP ".utf8) || line.starts(with: "# TYPE ".utf8) {
                let s = Substring(decoding: line, as: UTF8.self)
                let rest = s.dropFirst(7)
                let name = rest.prefix { $0 != " " }
                if counters.contains(name) && name.hasSuffix("_total") {
                    out += s.prefix(7).utf8
                    out += name.dropLast(6).utf8
                    out += rest.dropFirst(name.count).utf8
                    out.append(UInt8(ascii: "\n"))
                    continue
                }
            } else if !exemplars.isEmpty, let close = line.lastIndex(of: UInt8(ascii: "}")),
                line[line.startIndex..<close].contains(UInt8(ascii: "{"))
            {
                let series = String(decoding: line[line.startIndex...close], as: UTF8.self)
                if let e = exemplars[series] {
                    out += line
                    out += e.utf8
                    out.append(UInt8(ascii: "\n"))
                    continue
                }
            }
            out += line
            out.append(UInt8(ascii: "\n"))
        }
        out += "# EOF\n".utf8
        return out
    }
}
