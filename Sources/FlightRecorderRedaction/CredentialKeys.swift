/// Attribute keys that say their value is a credential: masked with no configuration at all,
/// because no value detector can recognise `correct-horse-battery-staple-77` as a password
/// while its key says exactly that.
///
/// A key matches when one of its dot-separated segments, compared case-insensitively with
/// `-` and `_` treated alike, is one of `names`, or ends in `_` or `-` followed by one of
/// `suffixNames` (`db_password`, `x-api-key`, `github_token`). So `user.password`,
/// `http.request.header.authorization` and `HTTP.Request.Header.Set-Cookie` match, and
/// `gen_ai.usage.input_tokens` or `password_policy.min_length` do not.
public enum CredentialKeys {
    /// The rule name that masked values carry: `[REDACTED:credential_key]`.
    public static let ruleName = "credential_key"

    /// Whole segments that name a credential.
    public static let names = [
        "password", "passwd", "passphrase", "secret", "token", "api_key", "apikey", "authorization",
        "proxy_authorization", "cookie", "set_cookie", "private_key", "client_secret", "secret_key", "access_key",
        "access_token", "refresh_token", "id_token", "auth_token", "session_token", "bearer", "credential",
        "credentials",
    ]

    /// Endings (after `_` or `-`) that name a credential inside a longer segment.
    public static let suffixNames = [
        "password", "passwd", "passphrase", "secret", "token", "api_key", "apikey", "private_key", "secret_key",
        "access_key", "credentials", "cookie",
    ]

    /// Candidates by their last byte, so most segments are rejected with one lookup.
    private static let byLastByte: [[(name: [UInt8], wholeOnly: Bool)]] = {
        var table = [[(name: [UInt8], wholeOnly: Bool)]](repeating: [], count: 256)
        let suffixes = Set(suffixNames)
        for name in names {
            let bytes = Array(name.utf8)
            table[Int(bytes.last!)].append((bytes, !suffixes.contains(name)))
        }
        for name in suffixNames where !names.contains(name) {
            let bytes = Array(name.utf8)
            table[Int(bytes.last!)].append((bytes, false))
        }
        return table
    }()

    @inline(__always) static func fold(_ c: UInt8) -> UInt8 {
        if c == 45 { return 95 }  // '-' reads as '_'
        return c &- 65 < 26 ? c | 0x20 : c
    }

    /// True when `key` (UTF-8) names a credential.
    public static func matches(_ key: UnsafeBufferPointer<UInt8>) -> Bool {
        var end = key.count
        while end > 0 {
            var start = end
            while start > 0 && key[start - 1] != 46 { start -= 1 }  // '.'
            if segmentMatches(key, start, end) { return true }
            end = start - 1
        }
        return false
    }

    public static func matches(_ key: String) -> Bool {
        var key = key
        return key.withUTF8 { matches($0) }
    }

    private static func segmentMatches(_ key: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> Bool {
        guard end > start else { return false }
        for candidate in byLastByte[Int(fold(key[end - 1]))] {
            let n = candidate.name.count
            guard end - start >= n else { continue }
            var equal = true
            for i in 0..<n where fold(key[end - n + i]) != candidate.name[i] {
                equal = false
                break
            }
            guard equal else { continue }
            if end - start == n { return true }
            if !candidate.wholeOnly && fold(key[end - n - 1]) == 95 { return true }
        }
        return false
    }
}
