import FlightRecorderStorage
import Foundation

/// The runs the run analyser has no room for in memory (`PendingRuns`), in a file it appends to
/// and reads back in order (`DATA/stats.spill`). Each record: the tenant and the run ID, each a
/// u32 little-endian length and its bytes, then the time of the touch (a `Double`'s bits, u64
/// little-endian). Once every record is read back the file is emptied.
///
/// Only the analyser's storing thread uses it. A record torn by a crash is the file's end: the
/// runs after it were touched within the crash's last moments, and the start-up's requeue of
/// recent runs finds them. A file left by an earlier process is read back like any other.
///
/// Written by hand: a FIFO of small records on disk is all it needs, and the store's SQLite
/// would add a write per spilled run to the hot path it is there to relieve.
// @unchecked: its state is used by one thread at a time, the analyser's storing thread.
final class RunSpill: @unchecked Sendable {
    let path: String
    private var readOffset: UInt64 = 0
    private var size: UInt64

    init(path: String) {
        self.path = path
        var st = stat()
        size = stat(path, &st) == 0 ? UInt64(st.st_size) : 0
    }

    /// Records not read back yet.
    var isEmpty: Bool { readOffset >= size }

    /// Appends `runs`.
    func append(_ runs: [(PendingRuns.RunRef, Double)]) throws {
        guard !runs.isEmpty else { return }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(runs.count * 48)
        func put(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        for (ref, t) in runs {
            put(UInt32(ref.tenant.utf8.count))
            bytes.append(contentsOf: ref.tenant.utf8)
            put(UInt32(ref.run.utf8.count))
            bytes.append(contentsOf: ref.run.utf8)
            withUnsafeBytes(of: t.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SpillError(path: path, errno: errno) }
        defer { close(fd) }
        let written = bytes.withUnsafeBytes { b in (try? SegmentFile.writeFully(fd, b)) != nil }
        guard written else { throw SpillError(path: path, errno: errno) }
        size += UInt64(bytes.count)
    }

    /// Up to `limit` records from where the last read stopped; when the file is read to its
    /// end, it is emptied.
    func read(limit: Int) throws -> [(PendingRuns.RunRef, Double)] {
        guard limit > 0, !isEmpty else { return [] }
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            // Gone (removed by hand): nothing to read back.
            (readOffset, size) = (0, 0)
            return []
        }
        defer { close(fd) }
        var out: [(PendingRuns.RunRef, Double)] = []
        let chunk = 1 << 20
        var buffer = [UInt8](repeating: 0, count: chunk)
        readLoop: while out.count < limit && readOffset < size {
            let n = buffer.withUnsafeMutableBytes { SegmentFile.preadFully(fd, $0, at: Int(readOffset)) }
            guard n > 0 else { break }
            var at = 0
            func u32(_ i: Int) -> Int {
                Int(
                    UInt32(buffer[i]) | UInt32(buffer[i + 1]) << 8 | UInt32(buffer[i + 2]) << 16 | UInt32(buffer[i + 3])
                        << 24)
            }
            while out.count < limit {
                guard at + 4 <= n else { break }
                let tenantLength = u32(at)
                guard at + 4 + tenantLength + 4 <= n else { break }
                let runLength = u32(at + 4 + tenantLength)
                let end = at + 8 + tenantLength + runLength + 8
                guard end <= n else {
                    // A record longer than a chunk cannot be one this file holds: a torn end.
                    if tenantLength + runLength + 16 > chunk { readOffset = size }
                    break
                }
                let tenant = String(decoding: buffer[(at + 4)..<(at + 4 + tenantLength)], as: UTF8.self)
                let run = String(decoding: buffer[(at + 8 + tenantLength)..<(end - 8)], as: UTF8.self)
                var bits: UInt64 = 0
                for k in 0..<8 { bits |= UInt64(buffer[end - 8 + k]) << (8 * k) }
                out.append((PendingRuns.RunRef(tenant: tenant, run: run), Double(bitPattern: bits)))
                at = end
            }
            if at == 0 {
                // No whole record left: the end was torn by a crash.
                readOffset = size
                break readLoop
            }
            readOffset += UInt64(at)
        }
        if readOffset >= size {
            _ = ftruncate(fd, 0)
            (readOffset, size) = (0, 0)
        }
        return out
    }

    struct SpillError: Error, CustomStringConvertible {
        var path: String
        var errno: Int32
        var description: String { "\(path): \(String(cString: strerror(errno)))" }
    }
}
