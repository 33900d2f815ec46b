package import COTLP

#if canImport(Glibc)
import Glibc
#endif

// Short names for the protobuf-c generated structs (Schemas/generate.sh).
package typealias CExportRequest = Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest
package typealias CTracesData = Opentelemetry__Proto__Trace__V1__TracesData
package typealias CResourceSpans = Opentelemetry__Proto__Trace__V1__ResourceSpans
package typealias CScopeSpans = Opentelemetry__Proto__Trace__V1__ScopeSpans
package typealias CSpan = Opentelemetry__Proto__Trace__V1__Span
package typealias CKeyValue = Opentelemetry__Proto__Common__V1__KeyValue
package typealias CAnyValue = Opentelemetry__Proto__Common__V1__AnyValue

extension ProtobufCBinaryData {
    package var rawBuffer: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: data, count: len)
    }
}

/// A NUL-terminated key, prepared once, compared against protobuf-c's `char *` keys.
package struct CKey: Sendable {
    package let bytes: [CChar]
    package let name: String

    package init(_ name: String) {
        self.name = name
        self.bytes = Array(name.utf8CString)
    }

    package func matches(_ key: UnsafePointer<CChar>?) -> Bool {
        guard let key else { return false }
        return bytes.withUnsafeBufferPointer { strcmp($0.baseAddress!, key) == 0 }
    }
}

/// Keys matched against protobuf-c's `char *` keys with one pass over the key's bytes and one
/// probe of a small open-addressing table, instead of a `strcmp` per key: ingest compares every
/// attribute key of every span with each indexed key and each run key.
///
/// Hand-written: protobuf-c hands out C strings, and a Swift `Set<String>` would first copy
/// each key into a `String`.
package struct CKeyTable: Sendable {
    package let keys: [CKey]
    private let slots: [Int32]
    private let hashes: [UInt32]
    private let lengths: [Int]
    private let mask: Int

    /// No keys: every lookup misses.
    package static let empty = CKeyTable([])

    package init(_ keys: [CKey]) {
        self.keys = keys
        var size = 8
        while size < keys.count * 4 { size *= 2 }
        var slots = [Int32](repeating: -1, count: size)
        var hashes: [UInt32] = []
        var lengths: [Int] = []
        for (n, k) in keys.enumerated() {
            let (h, length) = k.bytes.withUnsafeBufferPointer { Self.hash($0.baseAddress!) }
            hashes.append(h)
            lengths.append(length)
            var i = Int(h) & (size - 1)
            while slots[i] >= 0 { i = (i + 1) & (size - 1) }
            slots[i] = Int32(n)
        }
        self.slots = slots
        self.hashes = hashes
        self.lengths = lengths
        mask = size - 1
    }

    /// FNV-1a over the key's bytes up to its NUL, and its length.
    @inline(__always)
    package static func hash(_ key: UnsafePointer<CChar>) -> (hash: UInt32, length: Int) {
        var h: UInt32 = 0x811C_9DC5
        var n = 0
        while key[n] != 0 {
            h = (h ^ UInt32(UInt8(truncatingIfNeeded: key[n]))) &* 0x0100_0193
            n += 1
        }
        return (h, n)
    }

    /// The position in `keys` of `key` (whose `hash` is given), if it is one of them.
    @inline(__always)
    package func index(of key: UnsafePointer<CChar>, hash: (hash: UInt32, length: Int)) -> Int? {
        var i = Int(hash.hash) & mask
        while true {
            let s = Int(slots[i])
            if s < 0 { return nil }
            if hashes[s] == hash.hash && lengths[s] == hash.length
                && keys[s].bytes.withUnsafeBufferPointer({ memcmp($0.baseAddress!, key, hash.length) }) == 0
            {
                return s
            }
            i = (i + 1) & mask
        }
    }
}

/// The string form of a scalar attribute value (string or integer), as run IDs use; nil otherwise.
package func scalarString(_ value: UnsafeMutablePointer<CAnyValue>?) -> String? {
    guard let v = value?.pointee else { return nil }
    switch v.value_case.rawValue {
    case 1:
        guard let s = v.string_value, s.pointee != 0 else { return nil }
        return String(cString: s)
    case 3: return String(v.int_value)
    default: return nil
    }
}

/// Finds the first of `keys` present in `attributes` (in the order of `keys`) and returns its value.
package func firstValue(
    of keys: [CKey], in attributes: UnsafeMutablePointer<UnsafeMutablePointer<CKeyValue>?>?, count: Int
) -> String? {
    guard let attributes, count > 0 else { return nil }
    for key in keys {
        for i in 0..<count {
            guard let kv = attributes[i], key.matches(kv.pointee.key) else { continue }
            if let s = scalarString(kv.pointee.value) { return s }
        }
    }
    return nil
}
