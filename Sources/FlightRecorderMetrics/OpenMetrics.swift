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
    /// The longest run ID an exemplar may carry: an exemplar's label names and values may not
    /// exceed 128 code points together (OpenMetrics 1.0), and `run_id` takes 6 of them. A
    /// longer ID gets no exemplar rather than a cut one naming no run.
    static let maxExemplarRunID = 128 - "run_id".count

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
    ///
    /// One pass over the bytes: lines are not split into an array, and a bucket line's series
    /// is looked up by a hash of its bytes, so a scrape of 100,000 series makes no string per
    /// line (that had tripled the time of an OpenMetrics scrape against a text one).
    public static func convert(_ text: [UInt8], exemplars: [String: String]) -> [UInt8] {
        var byHash: [Int: [(series: [UInt8], exemplar: String)]] = [:]
        for (series, e) in exemplars {
            let bytes = Array(series.utf8)
            byHash[hash(bytes[...]), default: []].append((bytes, e))
        }
        var out: [UInt8] = []
        out.reserveCapacity(text.count + exemplars.count * 64 + 8)
        let typePrefix = Array("# TYPE ".utf8)
        let helpPrefix = Array("# HELP ".utf8)
        let newline = UInt8(ascii: "\n")
        var start = 0
        while start < text.count {
            let end = text[start...].firstIndex(of: newline) ?? text.count
            defer { start = end + 1 }
            let line = text[start..<end]
            guard !line.isEmpty else { continue }
            if line.starts(with: helpPrefix) || line.starts(with: typePrefix) {
                // The registry writes a family's HELP, then TYPE, then its series: TYPE says
                // whether the family is a counter, whose OpenMetrics name drops `_total`.
                let rest = line.dropFirst(7)
                let name = rest.prefix { $0 != UInt8(ascii: " ") }
                let type = line.starts(with: typePrefix) ? line : Self.line(text, after: end)
                if Self.declaresCounter(type, name) && name.reversed().starts(with: "latot_".utf8) {
                    out += line.prefix(7)
                    out += name.dropLast(6)
                    out += rest.dropFirst(name.count)
                    out.append(newline)
                    continue
                }
            } else if !byHash.isEmpty, let close = line.lastIndex(of: UInt8(ascii: "}")),
                line[line.startIndex..<close].contains(UInt8(ascii: "{")),
                let e = byHash[hash(line[line.startIndex...close])]?.first(where: {
                    $0.series.elementsEqual(line[line.startIndex...close])
                })
            {
                out += line
                out += e.exemplar.utf8
                out.append(newline)
                continue
            }
            out += line
            out.append(newline)
        }
        out += "# EOF\n".utf8
        return out
    }

    static func hash(_ bytes: ArraySlice<UInt8>) -> Int {
        var h = Hasher()
        bytes.withUnsafeBytes { h.combine(bytes: $0) }
        return h.finalize()
    }

    /// The line after the one ending at `end` (empty at the end of `text`).
    static func line(_ text: [UInt8], after end: Int) -> ArraySlice<UInt8> {
        let start = min(end + 1, text.count)
        return text[start..<(text[start...].firstIndex(of: UInt8(ascii: "\n")) ?? text.count)]
    }

    /// Whether `line` is `# TYPE name counter`.
    static func declaresCounter(_ line: ArraySlice<UInt8>, _ name: ArraySlice<UInt8>) -> Bool {
        line.starts(with: "# TYPE ".utf8) && line.dropFirst(7).starts(with: name)
            && line.dropFirst(7 + name.count).elementsEqual(" counter".utf8)
    }
}
