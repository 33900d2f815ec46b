/// The exposition a token bound to some tenants may read: only the samples labelled with one
/// of its tenants (`tenant="…"`), and the HELP and TYPE lines of the families that keep a
/// sample. A sample without a `tenant` label (the daemon's own families: spans accepted,
/// bytes stored, series per family; and a family's overflow series) counts every tenant, so
/// it is kept only with `keepUntenanted` (an admin's: the operator of the daemon). A token
/// for every tenant (`tenants: ['*']`) reads the whole registry.
///
/// Hand-written: swift-prometheus emits a whole registry, with no filter on label values.
/// Every label value the registry holds passed `MetricLabel` (identifier characters only),
/// so a value holds no quote or brace and a sample's labels end at its first `}`.
public enum TenantExposition {
    public static func keeping(_ text: [UInt8], tenants: Set<String>, keepUntenanted: Bool = false) -> [UInt8] {
        let allowed = Set(tenants.map { Array($0.utf8) })
        let key = Array("tenant=\"".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(text.count / 4)
        // The current family's comment lines, written before its first kept sample.
        var header: [UInt8] = []
        var headerWritten = false
        var lastWasComment = false
        text.withUnsafeBufferPointer { t in
            var start = 0
            while start < t.count {
                var end = start
                while end < t.count && t[end] != 0x0A { end += 1 }
                let line = UnsafeBufferPointer(rebasing: t[start..<min(end + 1, t.count)])
                defer { start = end + 1 }
                guard !line.isEmpty else { continue }
                if line[0] == UInt8(ascii: "#") {
                    if !lastWasComment {
                        header.removeAll(keepingCapacity: true)
                        headerWritten = false
                    }
                    header.append(contentsOf: line)
                    lastWasComment = true
                    continue
                }
                lastWasComment = false
                if let tenant = tenant(of: line, key: key) {
                    guard allowed.contains(Array(tenant)) else { continue }
                } else if !keepUntenanted {
                    continue
                }
                if !headerWritten {
                    out.append(contentsOf: header)
                    headerWritten = true
                }
                out.append(contentsOf: line)
            }
        }
        return out
    }

    /// The value of the sample's `tenant` label, if it has one.
    static func tenant(of line: UnsafeBufferPointer<UInt8>, key: [UInt8]) -> UnsafeBufferPointer<UInt8>.SubSequence? {
        guard let open = line.firstIndex(of: UInt8(ascii: "{")) else { return nil }
        var i = open + 1
        while i + key.count < line.count {
            // A label starts after `{` or `,`.
            if line[i - 1] == UInt8(ascii: "{") || line[i - 1] == UInt8(ascii: ",") {
                if line[i] == UInt8(ascii: "}") { return nil }
                if line[i..<i + key.count].elementsEqual(key) {
                    let from = i + key.count
                    guard let close = line[from...].firstIndex(of: UInt8(ascii: "\"")) else { return nil }
                    return line[from..<close]
                }
            }
            if line[i] == UInt8(ascii: "}") { return nil }
            i += 1
        }
        return nil
    }
}
