import FlightRecorderEvidence
import FlightRecorderOTLP

/// The evidence log's leaves of a stored block, recomputed from its bytes: the block's raw
/// bytes are its requests one after another, which protobuf reads as one request, so its
/// spans come out in the order they were logged.
enum BlockLeaves {
    static func of(raw: [UInt8]) throws(StorageError) -> [TreeHash] {
        let leaves = raw.withUnsafeBytes { UnpackArena.withRequest($0) { SpanLeaves.hashes($0) } }
        guard let leaves else { throw .corrupt("block does not decode as OTLP spans") }
        return leaves
    }

    static func of(frame: [UInt8]) throws(StorageError) -> [TreeHash] {
        let decoded = frame.withUnsafeBytes { b in Result { () throws(StorageError) in try BlockCodec.decode(frame: b) }
        }
        return try of(raw: decoded.get())
    }
}
