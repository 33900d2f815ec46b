#if canImport(Glibc)
import Glibc
#endif

/// Strings made from C strings that repeat from span to span (attribute keys, span and event
/// names), made once and then shared: a reader that decodes many spans keeps one and passes it
/// to each `TracesDataDecoder.record`.
///
/// A key longer than 15 bytes is no small string: made anew for each span, it was a heap
/// allocation, a copy and a UTF-8 check, and about four of a typical agent span's attribute
/// keys are that long (`gen_ai.operation.name`). Direct-mapped on a hash of the bytes, each
/// hit compared byte for byte with the string it returns; a miss makes the string as before
/// and takes the slot. Hand-written: the standard library interns nothing, and a `Dictionary`
/// keyed by `String` would need the string made first.
package struct StringInterner {
    /// Strings longer than this are made each time (values, not names).
    static let maxBytes = 64
    private static let slotCount = 512
    /// Empty until first used, so an interner that is never used costs no allocation.
    private var slots: [String] = []

    package init() {}

    /// `String(cString: p)`, shared with the last equal string this slot held.
    package mutating func string(_ p: UnsafePointer<CChar>) -> String {
        let count = strlen(p)
        guard count > 15, count <= Self.maxBytes else { return String(cString: p) }
        // The length and the first and last eight bytes (at least 16 here): a collision costs
        // only a miss, since a hit is compared in full.
        let bytes = UnsafeRawBufferPointer(start: p, count: count)
        let first = bytes.loadUnaligned(as: UInt64.self)
        let last = bytes.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self)
        var hash = (first &* 0x9E37_79B9_7F4A_7C15) ^ (last &* 0xC2B2_AE3D_27D4_EB4F) ^ UInt64(count)
        hash ^= hash >> 29
        if slots.isEmpty { slots = [String](repeating: "", count: Self.slotCount) }
        let slot = Int(truncatingIfNeeded: hash ^ (hash >> 32)) & (Self.slotCount - 1)
        let same =
            slots[slot].utf8.withContiguousStorageIfAvailable { s in
                s.count == count && memcmp(s.baseAddress!, p, count) == 0
            } ?? false
        if same { return slots[slot] }
        let made = String(cString: p)
        slots[slot] = made
        return made
    }
}
