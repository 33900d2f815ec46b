/// Finds sensitive substrings in a UTF-8 string in one pass.
///
/// Hand-written rather than one regular expression per detector: every string value of every
/// span is scanned on the ingest path, and running ten regex engines over each value would cost
/// several times the whole ingest budget. The scan walks the bytes once; each detector is tried
/// only where its first byte can start a match at a token boundary (a digit, `@`, `+`, `(`, `-`,
/// `:`, `=`, or the first letter of a known prefix), so ordinary text costs one table lookup a
/// byte. Custom detectors (regular expressions from the policy) run after this scan.
public struct ValueScanner: Sendable {
    /// Only flags, so that a copy costs nothing (the scanner is on every string's path).
    let email, ssn, card, phone, jwt, auth, apiKey, pem, url, ip: Bool

    public var enabled: Set<Detector> {
        let flags: [(Detector, Bool)] = [
            (.email, email), (.ssn, ssn), (.paymentCard, card), (.phone, phone), (.jwt, jwt),
            (.authorization, auth), (.apiKey, apiKey), (.privateKey, pem), (.urlCredentials, url),
            (.ipAddress, ip),
        ]
        return Set(flags.filter(\.1).map(\.0))
    }

    public init(enabled: Set<Detector> = Detector.defaults) {
        email = enabled.contains(.email)
        ssn = enabled.contains(.ssn)
        card = enabled.contains(.paymentCard)
        phone = enabled.contains(.phone)
        jwt = enabled.contains(.jwt)
        auth = enabled.contains(.authorization)
        apiKey = enabled.contains(.apiKey)
        pem = enabled.contains(.privateKey)
        url = enabled.contains(.urlCredentials)
        ip = enabled.contains(.ipAddress)
    }

    // Byte classes.
    @inline(__always) static func isDigit(_ c: UInt8) -> Bool { c &- 48 < 10 }
    @inline(__always) static func isAlpha(_ c: UInt8) -> Bool { (c | 0x20) &- 97 < 26 }
    @inline(__always) static func isAlnum(_ c: UInt8) -> Bool { isDigit(c) || isAlpha(c) }
    @inline(__always) static func isHex(_ c: UInt8) -> Bool { isDigit(c) || (c | 0x20) &- 97 < 6 }
    @inline(__always) static func isBase64URL(_ c: UInt8) -> Bool { isAlnum(c) || c == 45 || c == 95 }
    @inline(__always) static func isEmailLocal(_ c: UInt8) -> Bool {
        isAlnum(c) || c == 46 || c == 95 || c == 37 || c == 43 || c == 45  // . _ % + -
    }
    @inline(__always) static func isDomain(_ c: UInt8) -> Bool { isAlnum(c) || c == 46 || c == 45 }

    /// Per byte: 1 when it can begin a match, 2 when it can begin a disguise that
    /// `TextNormalizer` undoes (`%`, `\`, and the lead bytes of no-break and zero-width
    /// characters); anything else is skipped with one lookup.
    static let classes: [UInt8] = {
        var t = [UInt8](repeating: 0, count: 256)
        for c in UInt8(48)...57 { t[Int(c)] = 1 }
        for c in "@+(-:?&BbAsgxe".utf8 { t[Int(c)] = 1 }
        for c in TextNormalizer.disguiseStarts { t[Int(c)] |= 2 }
        return t
    }()

    /// All matches, sorted and non-overlapping (the earliest, then longest, wins).
    public func scan(_ s: UnsafeBufferPointer<UInt8>) -> [DetectorMatch] {
        var disguised = false
        return scan(s, sawDisguise: &disguised)
    }

    /// The matches, and in the same pass whether the text may hide a form behind a disguise
    /// (then the caller scans the normalized text too).
    public func scan(_ s: UnsafeBufferPointer<UInt8>, sawDisguise: inout Bool) -> [DetectorMatch] {
        // The table through a pointer: one load a byte, no lazy-global check or bounds check.
        Self.classes.withUnsafeBufferPointer { classes in scan(s, classes: classes, sawDisguise: &sawDisguise) }
    }

    private func scan(
        _ s: UnsafeBufferPointer<UInt8>, classes: UnsafeBufferPointer<UInt8>, sawDisguise: inout Bool
    ) -> [DetectorMatch] {
        var out: [DetectorMatch] = []
        let n = s.count
        var i = 0
        while i < n {
            let c = s[i]
            let kind = classes[Int(c)]
            guard kind & 1 != 0 else {
                if kind != 0 { sawDisguise = true }
                i += 1
                continue
            }
            if kind & 2 != 0 { sawDisguise = true }
            let boundary = i == 0 || !Self.isAlnum(s[i - 1])
            if let m = match(s, at: i, byte: c, boundary: boundary) {
                // Detectors that look left (email) may start before i.
                if let last = out.last, m.range.lowerBound < last.range.upperBound {
                    i += 1
                    continue
                }
                out.append(m)
                // The bytes a match covers are skipped, so look at them for disguises here.
                if !sawDisguise { sawDisguise = s[m.range].contains { classes[Int($0)] & 2 != 0 } }
                i = m.range.upperBound
            } else {
                i += 1
            }
        }
        return out
    }

    @inline(__always)
    func match(_ s: UnsafeBufferPointer<UInt8>, at i: Int, byte c: UInt8, boundary: Bool) -> DetectorMatch? {
        switch c {
        case 64:  // @
            return email ? matchEmail(s, at: i) : nil
        case 48...57:
            guard boundary else { return nil }
            if ssn, let r = matchSSN(s, i) { return DetectorMatch(range: r, rule: Detector.ssn.rawValue) }
            if card, let r = matchCard(s, i) { return DetectorMatch(range: r, rule: Detector.paymentCard.rawValue) }
            if phone, let r = matchNationalPhone(s, i) { return DetectorMatch(range: r, rule: Detector.phone.rawValue) }
            if ip, let r = matchIPv4(s, i) { return DetectorMatch(range: r, rule: Detector.ipAddress.rawValue) }
            return nil
        case 43:  // +
            guard phone, boundary else { return nil }
            return matchE164(s, i).map { DetectorMatch(range: $0, rule: Detector.phone.rawValue) }
        case 40:  // (
            guard phone else { return nil }
            return matchNationalPhone(s, i).map { DetectorMatch(range: $0, rule: Detector.phone.rawValue) }
        case 45:  // -
            guard pem else { return nil }
            return matchPEM(s, i).map { DetectorMatch(range: $0, rule: Detector.privateKey.rawValue) }
        case 58:  // :
            guard url else { return nil }
            return matchURLUserInfo(s, i).map { DetectorMatch(range: $0, rule: Detector.urlCredentials.rawValue) }
        case 63, 38:  // ? &
            guard url else { return nil }
            return matchSecretParameter(s, i).map { DetectorMatch(range: $0, rule: Detector.urlCredentials.rawValue) }
        default:
            guard boundary else { return nil }
            if jwt, c == 101, let r = matchJWT(s, i) { return DetectorMatch(range: r, rule: Detector.jwt.rawValue) }
            if auth, c == 66 || c == 98, let r = matchAuthorization(s, i) {
                return DetectorMatch(range: r, rule: Detector.authorization.rawValue)
            }
            if apiKey, let r = matchAPIKey(s, i) { return DetectorMatch(range: r, rule: Detector.apiKey.rawValue) }
            return nil
        }
    }

    // MARK: Detectors

    func matchEmail(_ s: UnsafeBufferPointer<UInt8>, at: Int) -> DetectorMatch? {
        var start = at
        while start > 0 && Self.isEmailLocal(s[start - 1]) { start -= 1 }
        guard start < at, s[start] != 46 else { return nil }
        var end = at + 1
        var lastDot = -1
        while end < s.count && Self.isDomain(s[end]) {
            if s[end] == 46 { lastDot = end }
            end += 1
        }
        // Trailing dots belong to the sentence, not the domain.
        while end > at + 1 && s[end - 1] == 46 { end -= 1 }
        if lastDot >= end { lastDot = -1; for k in (at + 1)..<end where s[k] == 46 { lastDot = k } }
        guard lastDot > at + 1, end - lastDot - 1 >= 2 else { return nil }
        for k in (lastDot + 1)..<end where !Self.isAlpha(s[k]) { return nil }
        return DetectorMatch(range: start..<end, rule: Detector.email.rawValue)
    }

    /// Digits at `i` of exactly `count`, then the index after them; nil otherwise.
    @inline(__always)
    func digits(_ s: UnsafeBufferPointer<UInt8>, _ i: Int, _ count: Int) -> Int? {
        guard i + count <= s.count else { return nil }
        for k in i..<(i + count) where !Self.isDigit(s[k]) { return nil }
        return i + count
    }

    @inline(__always)
    func endsToken(_ s: UnsafeBufferPointer<UInt8>, _ i: Int) -> Bool {
        i >= s.count || !(Self.isAlnum(s[i]) || s[i] == 45 && i + 1 < s.count && Self.isDigit(s[i + 1]))
    }

    /// US SSN `AAA-GG-SSSS`, excluding area 000, 666, 9xx, group 00 and serial 0000.
    func matchSSN(_ s: UnsafeBufferPointer<UInt8>, _ i: Int) -> Range<Int>? {
        guard let a = digits(s, i, 3), a < s.count, s[a] == 45, let g = digits(s, a + 1, 2), g < s.count, s[g] == 45,
            let e = digits(s, g + 1, 4), endsToken(s, e)
        else { return nil }
        let area = s[i...(i + 2)].reduce(0) { $0 * 10 + Int($1 - 48) }
        let group = s[(a + 1)...(a + 2)].reduce(0) { $0 * 10 + Int($1 - 48) }
        let serial = s[(g + 1)..<e].reduce(0) { $0 * 10 + Int($1 - 48) }
        guard area != 0, area != 666, area < 900, group != 0, serial != 0 else { return nil }
        return i..<e
    }

    /// 13-19 digits, optionally grouped by single spaces or dashes, passing the Luhn check.
    func matchCard(_ s: UnsafeBufferPointer<UInt8>, _ i: Int) -> Range<Int>? {
        var k = i
        var digits: [UInt8] = []
        digits.reserveCapacity(19)
        var separator: UInt8 = 0
        var lastDigitEnd = i
        while k < s.count && digits.count < 20 {
            let c = s[k]
            if Self.isDigit(c) {
                digits.append(c - 48)
                k += 1
                lastDigitEnd = k
            } else if (c == 32 || c == 45) && k + 1 < s.count && Self.isDigit(s[k + 1])
                && (separator == 0 || separator == c)
            {
                separator = c
                k += 1
            } else {
                break
            }
        }
        guard (13...19).contains(digits.count), endsToken(s, lastDigitEnd) else { return nil }
        // Cards start 2-6; ungrouped runs that are also plausible timestamps or IDs are left alone.
        guard digits[0] >= 2 && digits[0] <= 6 else { return nil }
        var sum = 0
        for (n, d) in digits.reversed().enumerated() {
            var v = Int(d)
            if n % 2 == 1 {
                v *= 2
                if v > 9 { v -= 9 }
            }
            sum += v
        }
        return sum % 10 == 0 ? i..<lastDigitEnd : nil
    }

    /// `+` and 8-15 digits, optionally separated by single spaces, dashes or dots.
    func matchE164(_ s: UnsafeBufferPointer<UInt8>, _ i: Int) -> Range<Int>? {
        var k = i + 1
        var count = 0
        var end = k
        while k < s.count {
            if Self.isDigit(s[k]) {
                count += 1
                k += 1
                end = k
            } else if (s[k] == 32 || s[k] == 45 || s[k] == 46) && k + 1 < s.count && Self.isDigit(s[k + 1]) {
                k += 1
            } else if s[k] == 40 || s[k] == 41 {
                k += 1
            } else {
                break
            }
        }
        guard (8...15).contains(count), i + 1 < s.count, Self.isDigit(s[i + 1]), endsToken(s, end) else { return nil }
        return i..<end
    }

    /// North American `(415) 555-2671`, `415-555-2671`, `415.555.2671`, `415 555 2671`.
    func matchNationalPhone(_ s: UnsafeBufferPointer<UInt8>, _ i: Int) -> Range<Int>? {
        var k = i
        if s[k] == 40 {
            guard let a = digits(s, k + 1, 3), a < s.count, s[a] == 41 else { return nil }
            k = a + 1
            if k < s.count && s[k] == 32 { k += 1 }
        } else {
            guard let a = digits(s, k, 3), a < s.count, s[a] == 45 || s[a] == 46 || s[a] == 32 else { return nil }
            k = a + 1
        }
        guard let b = digits(s, k, 3), b < s.count else { return nil }
        let sep = s[b]
        guard sep == 45 || sep == 46 || sep == 32, let e = digits(s, b + 1, 4), endsToken(s, e) else { return nil }
        // Exchange codes start 2-9: "2024-01-15"-like runs cannot match (and are 4-2-2 anyway).
        guard s[k] >= 50 else { return nil }
        return i..<e
    }

    func matchIPv4(_ s: UnsafeBufferPointer<UInt8>, _ i: Int) -> Range<Int>? {
        if i > 0 && s[i - 1] == 46 { return nil }  // inside a longer dotted number
        var k = i
        for octet in 0..<4 {
            var value = 0
            var n = 0
            while k < s.count && Self.isDigit(s[k]) && n < 4 {
                value = value * 10 + Int(s[k] - 48)
                n += 1
                k += 1
            }
            guard n >= 1, n <= 3, value <= 255 else { return nil }
            if octet < 3 {
                guard k < s.count, s[k] == 46, k + 1 < s.count, Self.isDigit(s[k + 1]) else { return nil }
                k += 1
            }
        }
        guard k >= s.count || !(Self.isAlnum(s[k]) || s[k] == 46 && k + 1 < s.count && Self.isDigit(s[k + 1])) else {
            return nil
        }
        return i..<k
    }

    /// `eyJ…` header, payload and signature in base64url.
    func matchJWT(_ s: UnsafeBufferPointer<UInt8>, _ i: Int) -> Range<Int>? {
        guard i + 3 < s.count, s[i + 1] == 121, s[i + 2] == 74 else { return nil }  // "yJ"
        var k = i
        for part in 0..<3 {
            let start = k
            while k < s.count && Self.isBase64URL(s[k]) { k += 1 }
            guard k - start >= (part == 2 ? 8 : 10) else { return nil }
            if part < 2 {
                guard k < s.count, s[k] == 46 else { return nil }
                k += 1
            }
        }
        return i..<k
    }

    static let bearer = Array("bearer ".utf8)
    static let basic = Array("basic ".utf8)

    /// `Bearer <token>` and `Basic <base64>`: the credential is masked, the scheme kept.
    func matchAuthorization(_ s: UnsafeBufferPointer<UInt8>, _ i: Int) -> Range<Int>? {
        for prefix in [Self.bearer, Self.basic] {
            guard i + prefix.count < s.count else { continue }
            var ok = true
            for (n, p) in prefix.enumerated() where (s[i + n] | 0x20) != p {
                ok = false
                break
            }
            guard ok else { continue }
            let start = i + prefix.count
            var k = start
            while k < s.count
                && (Self.isBase64URL(s[k]) || s[k] == 46 || s[k] == 43 || s[k] == 47 || s[k] == 61 || s[k] == 126)
            {
                k += 1
            }
            if k - start >= 8 { return start..<k }
        }
        return nil
    }

    static let keyPrefixes: [(prefix: [UInt8], minBody: Int, upperOnly: Bool)] = [
        (Array("sk-".utf8), 20, false), (Array("sk_live_".utf8), 16, false), (Array("sk_test_".utf8), 16, false),
        (Array("AKIA".utf8), 16, true), (Array("ASIA".utf8), 16, true), (Array("ghp_".utf8), 30, false),
        (Array("gho_".utf8), 30, false), (Array("ghu_".utf8), 30, false), (Array("ghs_".utf8), 30, false),
        (Array("ghr_".utf8), 30, false), (Array("github_pat_".utf8), 30, false), (Array("xoxb-".utf8), 10, false),
        (Array("xoxp-".utf8), 10, false), (Array("xoxa-".utf8), 10, false), (Array("xoxr-".utf8), 10, false),
        (Array("xoxs-".utf8), 10, false),
    ]

    func matchAPIKey(_ s: UnsafeBufferPointer<UInt8>, _ i: Int) -> Range<Int>? {
        for (prefix, minBody, upperOnly) in Self.keyPrefixes where prefix[0] == s[i] && i + prefix.count < s.count {
            var ok = true
            for n in 1..<prefix.count where s[i + n] != prefix[n] {
                ok = false
                break
            }
            guard ok else { continue }
            var k = i + prefix.count
            while k < s.count
                && (upperOnly ? (Self.isDigit(s[k]) || s[k] &- 65 < 26) : (Self.isBase64URL(s[k])))
            {
                k += 1
            }
            if k - i - prefix.count >= minBody { return i..<k }
        }
        return nil
    }

    static let pemBegin = Array("-----BEGIN ".utf8)
    static let pemEnd = Array("-----END ".utf8)
    static let privateKeyMarker = Array("PRIVATE KEY-----".utf8)

    /// A PEM private-key block, from its BEGIN line to the end of its END line (or the string).
    func matchPEM(_ s: UnsafeBufferPointer<UInt8>, _ i: Int) -> Range<Int>? {
        guard has(s, i, Self.pemBegin) else { return nil }
        // The BEGIN label must name a private key: "-----BEGIN [RSA |EC |OPENSSH ]PRIVATE KEY-----".
        var k = i + Self.pemBegin.count
        let limit = min(s.count, k + 40)
        var labelEnd = -1
        while k < limit {
            if has(s, k, Self.privateKeyMarker) {
                labelEnd = k + Self.privateKeyMarker.count
                break
            }
            k += 1
        }
        guard labelEnd > 0 else { return nil }
        k = labelEnd
        while k < s.count {
            if has(s, k, Self.pemEnd) {
                var e = k + Self.pemEnd.count
                while e < s.count && !has(s, e, Array("-----".utf8)) { e += 1 }
                return i..<min(s.count, e + 5)
            }
            k += 1
        }
        return i..<s.count  // an unterminated key is still a key
    }

    @inline(__always)
    func has(_ s: UnsafeBufferPointer<UInt8>, _ i: Int, _ p: [UInt8]) -> Bool {
        guard i + p.count <= s.count else { return false }
        for n in 0..<p.count where s[i + n] != p[n] { return false }
        return true
    }

    /// `scheme://user:password@host`: masks `user:password`.
    func matchURLUserInfo(_ s: UnsafeBufferPointer<UInt8>, _ i: Int) -> Range<Int>? {
        guard i + 3 < s.count, s[i + 1] == 47, s[i + 2] == 47 else { return nil }
        let start = i + 3
        var k = start
        var colon = -1
        while k < s.count {
            let c = s[k]
            if c == 64 { break }
            if c == 58 { colon = k }
            if c == 47 || c == 32 || c == 34 || c == 92 || c == 63 || c == 35 { return nil }
            k += 1
        }
        guard k < s.count, colon > start, k > colon + 1 else { return nil }
        return start..<k
    }

    static let secretParameters: [[UInt8]] = [
        "password", "passwd", "pwd", "token", "access_token", "refresh_token", "id_token", "api_key", "apikey",
        "secret", "client_secret", "auth", "sig", "signature",
    ].map { Array($0.utf8) }

    /// `?password=…`, `&token=…` and similar query parameters: masks the value.
    func matchSecretParameter(_ s: UnsafeBufferPointer<UInt8>, _ i: Int) -> Range<Int>? {
        for name in Self.secretParameters {
            let eq = i + 1 + name.count
            guard eq < s.count, s[eq] == 61 else { continue }
            var ok = true
            for n in 0..<name.count where (s[i + 1 + n] | 0x20) != name[n] {
                ok = false
                break
            }
            guard ok else { continue }
            var k = eq + 1
            while k < s.count {
                let c = s[k]
                if c == 38 || c == 32 || c == 34 || c == 39 || c == 92 || c == 35 || c == 10 || c == 13 { break }
                k += 1
            }
            return k > eq + 1 ? (eq + 1)..<k : nil
        }
        return nil
    }
}
