import Crypto
import FlightRecorderCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension RedactionPolicy.HMACKey {
    /// The pseudonym key in `path` (64 hex digits, mode 0600), made there at first start
    /// (its directory 0700). Its ID, which every pseudonym carries, is `p` and the first 8 hex
    /// digits of its SHA-256, so a pseudonym names the key that made it.
    public static func pseudonymKey(path: String, create: Bool) throws(RedactionError) -> RedactionPolicy.HMACKey {
        func fail(_ reason: String) -> RedactionError { RedactionError(rule: "identity", reason: "\(path): \(reason)") }
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            var st = stat()
            if stat(path, &st) == 0 && st.st_mode & 0o077 != 0 {
                throw fail("the pseudonym key is readable by others; chmod 600 it")
            }
            guard let key = Hex.decode(text.trimmingCharacters(in: .whitespacesAndNewlines)), key.count >= 16 else {
                throw fail("expected at least 32 hex digits")
            }
            return Self(id: id(of: key), key: key)
        }
        guard create else { throw fail("cannot read the pseudonym key (\(String(cString: strerror(errno))))") }
        let directory = (path as NSString).deletingLastPathComponent
        if mkdir(directory, 0o700) != 0 && errno != EEXIST { throw fail("cannot create \(directory)") }
        let key = SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw fail("cannot create (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        let bytes = Array((Hex.encode(key) + "\n").utf8)
        guard write(fd, bytes, bytes.count) == bytes.count, fsync(fd) == 0 else {
            unlink(path)
            throw fail("cannot write (\(String(cString: strerror(errno))))")
        }
        return Self(id: id(of: key), key: key)
    }

    static func id(of key: [UInt8]) -> String { "p" + Hex.encode(Array(SHA256.hash(data: key).prefix(4))) }
}
