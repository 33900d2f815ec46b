import Crypto
import FlightRecorderCore
import FlightRecorderTesting
import Foundation
import NIOCore
import Testing

@testable import FlightRecorderAudit

/// The members an export makes in memory (the derived files and those after them) are kept
/// there up to a limit and written to files past it; either way the archive holds them byte
/// for byte, after the members written as files, with the digests the manifest lists.
@Suite struct BundleFilesTests {
    @Test func membersPastTheLimitAreWrittenAndTheArchiveHoldsThemAll() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var files = BundleFiles(directory: dir.path)
        files.heldLimit = 40
        var spans = try files.open("spans.otlp.jsonl")
        try spans.write(Array("{\"resourceSpans\":[]}\n".utf8))
        try files.close(&spans, records: 1)
        let made: [BundleFiles.Made] = [
            .init("small.jsonl", [Array("a\n".utf8), Array("b\n".utf8)], records: 2),  // 4 bytes: kept
            .init("large.jsonl", [[UInt8](repeating: 0x41, count: 40), Array("\n".utf8)], records: 1),  // 41: past 40
            .init("after.txt", [Array("0123456789".utf8)], records: 1),  // 14 in all: kept
        ]
        try files.add(made)
        #expect(Set(files.held.keys) == ["small.jsonl", "after.txt"])
        #expect(FileManager.default.fileExists(atPath: dir.path + "/large.jsonl"))
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/small.jsonl"))
        for m in made {
            let bytes = m.pieces.flatMap { $0 }
            let entry = try #require(files.listed.first { $0.name == m.name })
            #expect(entry.sha256 == Hex.encode(SHA256.hash(data: bytes)))
            #expect(entry.size == bytes.count && entry.records == m.records)
        }

        var bundle = PreparedBundle(
            directory: dir.path, members: files.all.map { ($0.name, $0.size) }, spans: 0, runs: 0, mtime: 0)
        bundle.held = files.held
        var archive: [UInt8] = []
        try await bundle.forEachChunk(chunk: 7) { chunk in chunk.withUnsafeReadableBytes { archive += $0 } }
        #expect(archive.count == bundle.archiveSize)
        let members = try archive.withUnsafeBytes { try Tar.members($0) }
        #expect(members.map(\.name) == ["spans.otlp.jsonl", "small.jsonl", "large.jsonl", "after.txt"])
        for (m, expected) in zip(members.dropFirst(), made) {
            #expect(Array(archive[m.range]) == expected.pieces.flatMap { $0 })
        }
        #expect(Array(archive[members[0].range]) == Array("{\"resourceSpans\":[]}\n".utf8))
    }
}
