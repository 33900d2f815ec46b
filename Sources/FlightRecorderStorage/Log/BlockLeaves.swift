import COTLP
import FlightRecorderEvidence
import FlightRecorderOTLP

/// The evidence log's leaves of a stored block, recomputed from its bytes: the block's raw
/// bytes are its requests one after another, which protobuf reads as one request, so its
/// spans come out in the order they were logged.
enum BlockLeaves {
    static func of(raw: [UInt8]) throws(StorageError) -> [TreeHash] {
        let leaves: [TreeHash]? = raw.withUnsafeBytes { b in
            let arena = UnpackArena(expectedBytes: b.count * 4)
            return withExtendedLifetime(arena) {
                guard (try? WireDepthGuard.check(b)) != nil,
                    let request = opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
                        arena.allocator, b.count, b.baseAddress?.assumingMemoryBound(to: UInt8.self))
                else { return nil }
                return SpanLeaves.hashes(request)
            }
        }
        guard let leaves else { throw .corrupt("block does not decode as OTLP spans") }
        return leaves
    }

    static func of(frame: [UInt8]) throws(StorageError) -> [TreeHash] {
        let decoded = frame.withUnsafeBytes { b in Result { () throws(StorageError) in try BlockCodec.decode(frame: b) }
        }
        return try of(raw: decoded.get())
    }
}
