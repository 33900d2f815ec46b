import FlightRecorderCore
package import Foundation
import Synchronization

/// A dedicated thread that runs the jobs handed to it one at a time, at a nice value of its
/// own. The run analyser reads and computes its batches on one at nice 19, so that work gets
/// little CPU while ingest wants it, and stores them (and catches up) on one at the daemon's
/// own priority.
///
/// Written by hand: neither GCD nor NIO's thread pool sets a thread's nice value on Linux (QoS
/// classes map to no priority there), and a nice value raised on a pooled thread would stay
/// with whatever ran on it next; `setpriority` on a thread ID of our own is what Linux offers.
package final class WorkerThread: Sendable {
    private let jobs = Mutex<[@Sendable () -> Void]>([])
    private let ready = DispatchSemaphore(value: 0)
    private let stopped = Atomic<Bool>(false)

    package init(name: String, nice: Int32) {
        // The thread holds the worker until `stop`.
        let thread = Thread { [self] in
            // Named through /proc: Foundation names only the Thread object on Linux, and
            // `pthread_setname_np` is not visible to Swift.
            let comm = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
            if comm >= 0 {
                _ = write(comm, String(name.prefix(15)), min(name.utf8.count, 15))
                close(comm)
            }
            // Only this thread: on Linux the "process" of PRIO_PROCESS is a thread ID. Failure
            // (a sandbox forbidding it) leaves the thread at the daemon's priority.
            if nice != 0, let tid = Self.threadID() {
                _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), tid, nice)
            }
            while true {
                ready.wait()
                guard let job = jobs.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else {
                    if stopped.load(ordering: .acquiring) { return }
                    continue
                }
                job()
            }
        }
        thread.start()
    }

    /// Runs `body` on the thread and returns its result with the thread's CPU time it took.
    package func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> (T, cpu: Duration) {
        await withCheckedContinuation { c in
            jobs.withLock {
                $0.append {
                    let before = Self.threadCPU()
                    let result = body()
                    c.resume(returning: (result, Self.threadCPU() - before))
                }
            }
            ready.signal()
        }
    }

    /// Ends the thread once the jobs queued are done.
    package func stop() {
        stopped.store(true, ordering: .releasing)
        ready.signal()
    }

    package static func threadID() -> id_t? { ThreadPriority.threadID() }

    /// The CPU time this thread has used.
    package static func threadCPU() -> Duration {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return .seconds(t.tv_sec) + .nanoseconds(t.tv_nsec)
    }
}
