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
        let bytes = UnsafeRawBufferPointer(start: p, count: count)
        // FNV-1a.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }
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
