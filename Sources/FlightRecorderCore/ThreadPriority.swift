#if canImport(Glibc)
import Glibc
#endif

/// The calling thread's nice value, set by hand: neither GCD nor NIO's thread pool sets a
/// thread's nice value on Linux (QoS classes map to no priority there), and `setpriority` on
/// a thread ID of our own is what Linux offers. For dedicated threads only (a pooled thread
/// would keep it for whatever ran on it next).
package enum ThreadPriority {
    /// Sets the calling thread's nice value; false when it could not.
    @discardableResult
    package static func setNice(_ nice: Int32) -> Bool {
        guard let tid = threadID() else { return false }
        return setpriority(__priority_which_t(PRIO_PROCESS.rawValue), tid, nice) == 0
    }

    /// This thread's kernel ID, from `/proc/thread-self` ("PID/task/TID"): Glibc's
    /// `gettid` is not visible to Swift, and `syscall` is variadic.
    package static func threadID() -> UInt32? {
        var buffer = [CChar](repeating: 0, count: 64)
        let n = readlink("/proc/thread-self", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        let link = String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return link.split(separator: "/").last.flatMap { UInt32($0) }
    }
}
