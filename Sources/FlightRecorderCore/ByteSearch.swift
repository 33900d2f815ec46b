extension String {
    /// Whether `needle`'s UTF-8 bytes occur in this string's: a plain byte search.
    /// `String.contains(_:)` (StringProcessing) compares by grapheme, which the run analyser
    /// and the audit verifier paid several per cent of their time for on ASCII keys (`perf`);
    /// the values searched here are attribute values matched as bytes anyway.
    @inlinable
    package func containsBytes(_ needle: String) -> Bool {
        var haystack = self
        var needle = needle
        return haystack.withUTF8 { h in
            needle.withUTF8 { n in
                guard n.count <= h.count else { return false }
                guard let first = n.first else { return true }
                var i = 0
                let last = h.count - n.count
                while i <= last {
                    if h[i] == first {
                        var j = 1
                        while j < n.count && h[i + j] == n[j] { j += 1 }
                        if j == n.count { return true }
                    }
                    i += 1
                }
                return false
            }
        }
    }
}
