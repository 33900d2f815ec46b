import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension NoteSigner {
    /// The key in `path`, made there (mode 0600, its directory 0700) when the file does not
    /// exist and `create` is set. A new key is named `flightrec.local/<16 random hex digits>`:
    /// the log's origin, unique per store.
    public static func load(path: String, create: Bool) throws(EvidenceError) -> (signer: NoteSigner, created: Bool) {
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            var st = stat()
            if stat(path, &st) == 0 && st.st_mode & 0o077 != 0 {
                throw .malformed(
                    "\(path): the signing key is readable by others (mode \(String(st.st_mode & 0o777, radix: 8))); chmod 600 it"
                )
            }
            do {
                return (try NoteSigner(encoded: text), false)
            } catch {
                throw .malformed("\(path): \(error.description)")
            }
        }
        guard create else {
            throw .malformed("\(path): cannot read the signing key (\(String(cString: strerror(errno))))")
        }
        let directory = (path as NSString).deletingLastPathComponent
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw .malformed("\(directory): cannot create (\(String(cString: strerror(errno))))")
        }
        var random = SystemRandomNumberGenerator()
        let signer = try NoteSigner.generate(
            name: "flightrec.local/" + String(format: "%016llx", random.next() as UInt64))
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw .malformed("\(path): cannot create the signing key (\(String(cString: strerror(errno))))")
        }
        defer { close(fd) }
        let bytes = Array((signer.encoded + "\n").utf8)
        guard write(fd, bytes, bytes.count) == bytes.count, fsync(fd) == 0 else {
            unlink(path)
            throw .malformed("\(path): cannot write the signing key (\(String(cString: strerror(errno))))")
        }
        let dir = open(directory, O_RDONLY | O_CLOEXEC)
        if dir >= 0 {
            fsync(dir)
            close(dir)
        }
        return (signer, true)
    }
}
