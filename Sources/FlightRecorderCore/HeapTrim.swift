#if canImport(Glibc)
import Glibc
#endif

/// Hands the heap's free pages back to the system (glibc's `malloc_trim(0)`, every arena), for
/// work that frees large transient structures: without it they stay in RSS, in the free lists
/// of the arena of whichever thread freed them.
package func trimHeap() {
    #if os(Linux)
    _ = glibcMallocTrim(0)
    #endif
}

#if os(Linux)
/// glibc's `malloc_trim` (declared in `malloc.h`, which the Glibc module does not export).
@_silgen_name("malloc_trim")
private func glibcMallocTrim(_ pad: Int) -> Int32
#endif
