import COTLP
import CProtobufC
import FlightRecorderOTLP

#if canImport(Glibc)
import Glibc
#endif

/// Memory of unpacked protobuf-c messages, which the ingest stages edit in place. protobuf-c's
/// default allocator is malloc/free, so what a stage removes is freed with
/// `protobuf_c_message_free_unpacked`, what it adds is malloc'd, and the caller's
/// `free_unpacked` frees the whole request as usual.
enum CMessage {
    static func free<T>(_ p: UnsafeMutablePointer<T>) {
        protobuf_c_message_free_unpacked(UnsafeMutableRawPointer(p).assumingMemoryBound(to: ProtobufCMessage.self), nil)
    }

    /// Appends `kv` to a protobuf-c key-value list, growing it.
    static func append(
        _ list: inout UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>?, _ n: inout Int,
        _ kv: UnsafeMutablePointer<CKeyValue>
    ) {
        let grown = realloc(list, (n + 1) * MemoryLayout<UnsafeMutablePointer<CKeyValue>?>.stride)!
            .assumingMemoryBound(to: UnsafeMutablePointer<CKeyValue>?.self)
        grown[n] = kv
        list = grown
        n += 1
    }
}
