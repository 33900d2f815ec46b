import FlightRecorderSQLite
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `flightrec check`: reads everything in a data directory offline and reports each damaged
/// region, without changing anything. Every segment is read whole (header, every block's
/// checksum and decompression), every index is checked (`quick_check`, its length against
/// its segment's), and every attribute filter's checksum.
public enum StoreCheck {
    public struct Finding: Sendable, CustomStringConvertible {
        /// The file, relative to the data directory.
        public var file: String
        public var offset: Int?
        public var bytes: Int?
        public var problem: String

        public var description: String {
            var place = file
            if let offset { place += " at byte \(offset)" }
            if let bytes { place += " (\(bytes) bytes)" }
            return "\(place): \(problem)"
        }
    }

    public struct Report: Sendable {
        public var segments = 0
        public var blocks = 0
        public var bytes = 0
        public var findings: [Finding] = []
    }

    /// Needs the data directory to be free (no running daemon): exits through `locked` otherwise.
    public static func run(configuration: StoreConfiguration) throws(StorageError) -> Report {
        let lock = try sqlite { () throws(SQLiteError) in try DirectoryLock(directory: configuration.directory) }
        defer { lock.release() }
        let dir = configuration.segmentDirectory
        var report = Report()
        let ids = SegmentFile.list(dir)
        let reader = SegmentReader(directory: dir)
        for id in ids {
            let path = SegmentFile.path(dir, id)
            let name = "segments/" + SegmentFile.name(id)
            let size = SegmentFile.fileSize(path: path)
            report.segments += 1
            report.bytes += size
            func finding(_ offset: Int?, _ bytes: Int?, _ problem: String) {
                report.findings.append(.init(file: name, offset: offset, bytes: bytes, problem: problem))
            }
            if !SegmentFile.hasOwnHeader(path: path, id: id) {
                finding(0, SegmentFile.headerSize, "segment header damaged")
            }
            let scan = try SegmentScanner(path: path).scan(from: SegmentFile.headerSize)
            for region in scan.corruptRegions {
                finding(region.offset, region.length, "damaged bytes (no valid block), followed by valid blocks")
            }
            if scan.tornBytes > 0 {
                finding(
                    scan.validEnd, scan.tornBytes,
                    id == ids.last
                        ? "torn tail (an append cut off by a crash; start-up truncates it)"
                        : "damaged end of a sealed segment")
            }
            for block in scan.blocks {
                report.blocks += 1
                do {
                    _ = try reader.readUncached(segment: id, offset: block.offset, length: block.header.frameLength)
                } catch {
                    finding(block.offset, block.header.frameLength, "block does not decompress: \(error.message)")
                }
            }
            let index = IndexSchema.path(dir, id)
            let indexName = "segments/" + (index.split(separator: "/").last.map(String.init) ?? index)
            if access(index, F_OK) != 0 {
                report.findings.append(
                    .init(file: indexName, problem: "missing (start-up or `flightrec reindex` rebuilds it)"))
                continue
            }
            if let reason = IndexSchema.check(index) {
                report.findings.append(
                    .init(file: indexName, problem: "damaged: \(reason) (start-up moves it aside and rebuilds it)"))
                continue
            }
            if let db = try? SQLiteDatabase(path: index, readOnly: true),
                let indexed = (try? SegmentIndexWriter.meta(db, "indexed_bytes")).flatMap({ $0.flatMap { Int($0) } })
            {
                if indexed > size {
                    finding(size, indexed - size, "segment is shorter than its index (truncated): its end is lost")
                } else if indexed < size && id != ids.last {
                    report.findings.append(
                        .init(
                            file: indexName, problem: "covers \(indexed) of \(size) bytes (start-up indexes the rest)"))
                }
            }
            let filter = IndexSchema.attributeFilterPath(index)
            if access(filter, F_OK) == 0, AttributeFilterFile(path: filter) == nil {
                report.findings.append(
                    .init(
                        file: "segments/" + (filter.split(separator: "/").last.map(String.init) ?? filter),
                        problem: "attribute filter damaged (rebuilt from the index when next read)"))
            }
        }
        return report
    }
}
