import COTLP
import CProtobufC
import FlightRecorderOTLP

#if canImport(Glibc)
import Glibc
#endif

/// Memory of unpacked protobuf-c messages, which the ingest stages edit in place.
///
/// A request is unpacked into an `UnpackArena`: protobuf-c makes thousands of small
/// allocations per request, and freeing them one by one through malloc was about a sixth of
/// the daemon's CPU at full ingest. So the stages allocate and release through here, never
/// with malloc or free directly: with an arena current, `allocate` takes from it, `release`
/// leaves its memory alone, `resize` copies, and the whole request goes with the arena, with
/// no walk over it. Without one (nothing in the daemon), they are malloc, free and realloc,
/// and the owner frees the message with `free_unpacked` as usual.
enum CMessage {
    static func free<T>(_ p: UnsafeMutablePointer<T>) {
        let message = UnsafeMutableRawPointer(p).assumingMemoryBound(to: ProtobufCMessage.self)
        // In an arena, everything in it goes with the arena.
        guard UnpackArena.current == nil else { return }
        protobuf_c_message_free_unpacked(message, nil)
    }

    /// Frees `p`; in an arena, where everything goes with the arena, does nothing.
    static func release(_ p: UnsafeMutableRawPointer?) {
        guard let p, UnpackArena.current == nil else { return }
        Glibc.free(p)
    }

    /// `size` bytes from the current arena, or from malloc.
    static func allocate(_ size: Int) -> UnsafeMutableRawPointer {
        if let arena = UnpackArena.current, let p = arena.allocate(size) { return p }
        return malloc(max(1, size))!
    }

    static func allocate<T>(_ type: T.Type) -> UnsafeMutablePointer<T> {
        allocate(MemoryLayout<T>.size).assumingMemoryBound(to: T.self)
    }

    /// A pointer array of `oldCount` entries grown (or shrunk) to `newCount`.
    static func resize<T>(
        _ list: UnsafeMutablePointer<UnsafeMutablePointer<T>?>?, oldCount: Int, newCount: Int
    ) -> UnsafeMutablePointer<UnsafeMutablePointer<T>?> {
        let stride = MemoryLayout<UnsafeMutablePointer<T>?>.stride
        guard UnpackArena.current != nil else {
            return realloc(list, max(1, newCount) * stride)!.assumingMemoryBound(to: UnsafeMutablePointer<T>?.self)
        }
        let grown = allocate(max(1, newCount) * stride).assumingMemoryBound(to: UnsafeMutablePointer<T>?.self)
        if let list { grown.update(from: list, count: min(oldCount, newCount)) }
        return grown
    }

    /// Appends `kv` to a protobuf-c key-value list, growing it.
    static func append(
        _ list: inout UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>?, _ n: inout Int,
        _ kv: UnsafeMutablePointer<CKeyValue>
    ) {
        let grown = resize(list, oldCount: n, newCount: n + 1)
        grown[n] = kv
        list = grown
        n += 1
    }
}
