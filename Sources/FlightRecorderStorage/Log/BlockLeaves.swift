import FlightRecorderEvidence
import FlightRecorderOTLP

/// The evidence log's leaves of a stored block, recomputed from its bytes: the block's raw
/// bytes are its requests one after another, which protobuf reads as one request, so its
/// spans come out in the order they were logged.
///
/// A block logged as canonical (every request in it protobuf-c's own encoding, its leaves
/// hashed from those bytes at ingest) is hashed the same way, from its bytes as they stand;
/// any other is unpacked and each span encoded again. For a canonical block both give the
/// same leaves; the first needs no unpacking.
///
/// A salted block's leaves are salted with its spans' salts (`SpanSalts`, in its frame).
enum BlockLeaves {
    static func of(raw: [UInt8], canonical: Bool, salts: SpanSalts?) throws(StorageError) -> [TreeHash] {
        let all = salts?.all() ?? []
        let leaves = raw.withUnsafeBytes { raw in
            canonical
                ? SpanLeaves.hashes(canonicalPayload: raw, salts: all)
                : UnpackArena.withRequest(raw) { SpanLeaves.hashes($0, salts: all) }
        }
        guard let leaves else { throw .corrupt("block does not decode as OTLP spans") }
        guard salts == nil || leaves.count == all.count else {
            throw .corrupt("block holds \(leaves.count) spans but \(all.count) salts")
        }
        return leaves
    }

    static func of(frame: [UInt8], canonical: Bool) throws(StorageError) -> [TreeHash] {
        let decoded = try BlockCodec.decodeSalted(frame: frame)
        return try of(raw: decoded.raw, canonical: canonical, salts: decoded.salts)
    }
}
