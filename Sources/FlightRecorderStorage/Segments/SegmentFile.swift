import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Naming, header and raw I/O of segment files.
///
/// A segment is `segment-<12-digit id>.frs`: a 16-byte header ("FRSEG001" and the id as
/// u64 little endian), then framed blocks (`BlockCodec`) appended until the segment reaches
/// its sealing size. A sealed segment is never written again.
public enum SegmentFile {
    public static let headerSize = 16
    static let magic: [UInt8] = Array("FRSEG001".utf8)

    public static func name(_ id: Int64) -> String {
        let digits = String(id)
        return "segment-" + String(repeating: "0", count: max(0, 12 - digits.count)) + digits + ".frs"
    }

    public static func path(_ directory: String, _ id: Int64) -> String { directory + "/" + name(id) }

    /// Segment ids present in `directory`, ascending.
    public static func list(_ directory: String) -> [Int64] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var ids: [Int64] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            guard name.hasPrefix("segment-"), name.hasSuffix(".frs"),
                let id = Int64(name.dropFirst(8).dropLast(4))
            else { continue }
            ids.append(id)
        }
        return ids.sorted()
    }

    static func header(id: Int64) -> [UInt8] {
        var h = magic
        var v = UInt64(id).littleEndian
        withUnsafeBytes(of: &v) { h.append(contentsOf: $0) }
        return h
    }

    /// Whether the segment file at `path` starts with segment `id`'s own header (false when it
    /// cannot be read or is shorter than one).
    static func hasOwnHeader(path: String, id: Int64) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: headerSize)
        let n = bytes.withUnsafeMutableBytes { preadFully(fd, $0, at: 0) }
        return n == headerSize && bytes == header(id: id)
    }

    /// The size of the file at `path`; 0 when there is none.
    static func fileSize(path: String) -> Int {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : 0
    }

    static func fileSize(_ fd: Int32) throws(StorageError) -> Int {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io("fstat") }
        return Int(st.st_size)
    }

    package static func preadFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            done += n
        }
        return done
    }

    package static func writeFully(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(StorageError) {
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .io("write to segment") }
            done += n
        }
    }

    /// `value` as JSON (sorted keys, indented) replacing the file at `path` durably
    /// (`replaceDurably`): the store's small records, the legal holds and the erasures.
    static func replaceDurably(_ path: String, json value: some Encodable, what: String) throws(StorageError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        guard let data = try? encoder.encode(value) else { throw .corrupt("cannot encode the \(what)") }
        try replaceDurably(path, with: [UInt8](data))
    }

    /// The JSON file at `path` decoded; nil when there is none. One that does not parse stops
    /// start-up (`why`: what would be lost by going on without it).
    static func readJSON<T: Decodable>(_ type: T.Type, at path: String, why: String) throws(StorageError) -> T? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch {
            throw .corrupt("\(path) does not parse (\(error)); fix or restore it: \(why)")
        }
    }

    /// fsyncs a directory so a newly created file's name is durable too.
    /// Replaces the file at `path` with `bytes` durably: a temporary file, synced, renamed over
    /// `path`, and the directory synced. A crash leaves the old file or the new one.
    static func replaceDurably(_ path: String, with bytes: [UInt8]) throws(StorageError) {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw .io("create \(temporary)") }
        var failure = bytes.withUnsafeBytes { b in
            (try? writeFully(fd, b)) == nil ? errno : 0
        }
        if failure == 0 && fsync(fd) != 0 { failure = errno }
        close(fd)
        guard failure == 0 else {
            unlink(temporary)
            throw .io("write \(temporary)", errno: failure)
        }
        guard rename(temporary, path) == 0 else {
            unlink(temporary)
            throw .io("rename \(temporary)")
        }
        var directory = path
        while let last = directory.last, last != "/" { directory.removeLast() }
        try syncDirectory(directory.isEmpty ? "." : directory)
    }

    static func syncDirectory(_ path: String) throws(StorageError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else { throw .io("open \(path)") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw .io("fsync \(path)") }
    }
}

/// Appends blocks to the active segment. Used only by the store's writer thread.
final class SegmentWriter {
    let directory: String
    let id: Int64
    fileprivate let fd: Int32
    fileprivate(set) var size: Int

    /// Opens segment `id` for appending, creating it (with header) if it does not exist or
    /// holds less than a header (a creation cut short). When writing the header fails, the
    /// descriptor is closed and a file this call created is removed again, so a failed roll
    /// leaves no empty or zero-filled segment behind.
    init(directory: String, id: Int64) throws(StorageError) {
        self.directory = directory
        self.id = id
        let path = SegmentFile.path(directory, id)
        let existing = access(path, F_OK) == 0
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw .io("open \(path)") }
        do throws(StorageError) {
            if let fault = FaultInjection.take(.segmentCreate, path: path) { throw .io("create \(path)", errno: fault) }
            size = try SegmentFile.fileSize(fd)
            if size < SegmentFile.headerSize {
                guard ftruncate(fd, 0) == 0 else { throw .io("truncate \(path)") }
                let header = SegmentFile.header(id: id)
                try header.withUnsafeBytes { b in
                    Result { () throws(StorageError) in try SegmentFile.writeFully(fd, b) }
                }
                .get()
                size = header.count
                guard fsync(fd) == 0 else { throw .io("fsync \(path)") }
                try SegmentFile.syncDirectory(directory)
            }
        } catch {
            Glibc.close(fd)
            if !existing { unlink(path) }
            throw error
        }
        self.fd = fd
    }

    /// Appends `bytes` (one or more framed blocks); returns the offset they start at.
    func append(_ bytes: [UInt8]) throws(StorageError) -> Int {
        if let fault = FaultInjection.take(.segmentWrite, path: directory) {
            throw .io("write to segment \(id)", errno: fault)
        }
        let offset = size
        try bytes.withUnsafeBytes { b in Result { () throws(StorageError) in try SegmentFile.writeFully(fd, b) } }.get()
        size += bytes.count
        return offset
    }

    /// Makes everything appended so far durable.
    func sync() throws(StorageError) {
        if let fault = FaultInjection.take(.segmentSync, path: directory) {
            throw .io("fdatasync segment \(id)", errno: fault)
        }
        guard fdatasync(fd) == 0 else { throw .io("fdatasync segment \(id)") }
    }

    func close() {
        _ = Glibc.close(fd)
    }
}

extension SegmentWriter {
    /// Cuts off a failed, partial append so the next append starts on a block boundary.
    func truncate(to length: Int) {
        if ftruncate(fd, off_t(length)) == 0 { size = length }
    }
}
