package import COTLP

#if canImport(Glibc)
import Glibc
#endif

/// A bump allocator for one unpacked request, passed to protobuf-c as its allocator. Freeing
/// arena memory is a no-op; the chunks go when the arena does. Used on one thread, inside
/// `with`, which makes it the thread's current arena (for ingest's `CMessage`).
///
/// Hand-written: protobuf-c takes an allocator of this C shape, and no package here has one.
package final class UnpackArena {
    /// The bump state, behind a stable pointer that protobuf-c's callback receives as its
    /// data: allocating then touches no Swift object. Calling into the class from the callback
    /// cost a retain, a release and an exclusivity check per field, 6 % of ingest CPU on the
    /// captured SDK workload (`perf`).
    private struct Bump {
        var cursor: UnsafeMutableRawPointer?
        var remaining = 0
        var nextChunk: Int
        var chunks: [(base: UnsafeMutableRawPointer, size: Int)] = []

        mutating func allocate(_ size: Int) -> UnsafeMutableRawPointer? {
            let need = (max(size, 1) + 15) & ~15
            if need > remaining {
                let chunk = max(need, nextChunk)
                guard let base = malloc(chunk) else { return nil }
                chunks.append((base, chunk))
                cursor = base
                remaining = chunk
                nextChunk = min(chunk * 2, 64 << 20)
            }
            let p = cursor!
            cursor = p + need
            remaining -= need
            return p
        }
    }

    private let bump = UnsafeMutablePointer<Bump>.allocate(capacity: 1)
    /// protobuf-c's view of this arena; allocated by hand so that its address is stable and
    /// taking it is no Swift access to a property.
    package let allocator = UnsafeMutablePointer<ProtobufCAllocator>.allocate(capacity: 1)

    package init(expectedBytes: Int) {
        bump.initialize(to: Bump(nextChunk: max(64 << 10, expectedBytes)))
        allocator.initialize(
            to: ProtobufCAllocator(
                alloc: { data, size in data!.assumingMemoryBound(to: Bump.self).pointee.allocate(size) },
                // Everything protobuf-c frees here came from the arena.
                free: { _, _ in },
                allocator_data: UnsafeMutableRawPointer(bump)))
    }

    deinit {
        for c in bump.pointee.chunks { Glibc.free(c.base) }
        bump.deinitialize(count: 1)
        bump.deallocate()
        allocator.deallocate()
    }

    package func allocate(_ size: Int) -> UnsafeMutableRawPointer? { bump.pointee.allocate(size) }

    /// Runs `body` with this arena current on this thread (`CMessage`) and its protobuf-c allocator.
    package func with<R, E: Error>(_ body: (UnsafeMutablePointer<ProtobufCAllocator>) throws(E) -> R) throws(E) -> R {
        let previous = pthread_getspecific(Self.key)
        pthread_setspecific(Self.key, Unmanaged.passUnretained(self).toOpaque())
        defer { pthread_setspecific(Self.key, previous) }
        return try body(allocator)
    }

    /// Runs `body` on `bytes` unpacked as an `ExportTraceServiceRequest` (or a `TracesData`,
    /// which has the same layout), after `WireDepthGuard` bounded its nesting, in an arena
    /// freed when `body` returns; nil when the bytes are not such a message. For reading stored
    /// or exported bytes: nothing may keep a pointer into the message.
    package static func withRequest<R>(
        _ bytes: UnsafeRawBufferPointer, _ body: (UnsafeMutablePointer<CExportRequest>) -> R
    ) -> R? {
        let arena = UnpackArena(expectedBytes: bytes.count * 4)
        return withExtendedLifetime(arena) {
            guard (try? WireDepthGuard.check(bytes)) != nil,
                let request = opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
                    arena.allocator, bytes.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self))
            else { return nil }
            return body(request)
        }
    }

    package static var current: UnpackArena? {
        pthread_getspecific(key).map { Unmanaged<UnpackArena>.fromOpaque($0).takeUnretainedValue() }
    }

    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k, nil)
        return k
    }()
}
