import FlightRecorderAnalysis
import Foundation
import Testing

/// The run analyser's threads: jobs run one at a time, on a thread at the nice value
/// asked for, and each reports the CPU time it took on that thread.
@Suite struct WorkerThreadTests {
    @Test func runsJobsOneAtATimeAtItsNiceValueAndCountsTheirCPU() async {
        let worker = WorkerThread(name: "test-worker", nice: 19)
        defer { worker.stop() }
        // getpriority of the worker's own thread, read on it.
        let (nice, _) = await worker.run { () -> Int32 in
            errno = 0
            return getpriority(__priority_which_t(PRIO_PROCESS.rawValue), WorkerThread.threadID() ?? 0)
        }
        #expect(nice == 19)
        // The caller's own priority is untouched.
        #expect(getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) != 19)
        // A busy job reports the CPU it burned on the thread (30 ms of it, however long the
        // scheduler takes to give a nice-19 thread that much).
        let ((x, burned), cpu) = await worker.run { () -> (UInt64, Duration) in
            let start = WorkerThread.threadCPU()
            var x: UInt64 = 1
            while WorkerThread.threadCPU() - start < .milliseconds(30) { x = x &* 6_364_136_223_846_793_005 &+ 1 }
            return (x, WorkerThread.threadCPU() - start)
        }
        #expect(x != 0 && cpu >= burned && cpu < burned + .milliseconds(20))
        // Jobs handed over at once run one at a time, every one of them.
        let log = Log()
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<20 { group.addTask { _ = await worker.run { log.run(i) } } }
        }
        #expect(log.values.sorted() == Array(0..<20) && log.overlapped == false)
    }

    final class Log: @unchecked Sendable {  // touched by the worker's jobs; read after they are done
        private(set) var values: [Int] = []
        private(set) var overlapped = false
        private var running = false

        func run(_ i: Int) {
            if running { overlapped = true }
            running = true
            usleep(1000)
            values.append(i)
            running = false
        }
    }
}
