import Foundation
import Testing

@testable import FlightRecorderAnalysis

/// The run analyser's queue of runs waiting to settle: due in the order they settle, a touch
/// delays a run, a run taken and touched meanwhile comes back, and past its capacity the runs
/// go through the spill file and come back, none lost and none held twice.
@Suite struct PendingRunsTests {
    typealias Ref = PendingRuns.RunRef
    func ref(_ i: Int) -> Ref { Ref(tenant: i % 2 == 0 ? "acme" : "globex", run: "run-\(i)-of-a-longer-name") }

    @Test func runsFallDueInTheOrderTheySettleAndATouchDelaysOne() {
        var p = PendingRuns(capacity: 100)
        p.touch(ref(1), at: 0, settle: 10)
        p.touch(ref(2), at: 1, settle: 10)
        p.touch(ref(3), at: 2, settle: 10)
        #expect(p.takeDue(now: 9, settle: 10, limit: 10).isEmpty)
        #expect(p.lag(now: 9, settle: 10) == 0)
        // Run 1 touched again at 5: due at 15, after 2 and 3.
        p.touch(ref(1), at: 5, settle: 10)
        #expect(p.lag(now: 12, settle: 10) == 2)
        #expect(p.takeDue(now: 12, settle: 10, limit: 10) == [ref(2), ref(3)])
        #expect(p.takeDue(now: 14, settle: 10, limit: 10).isEmpty)
        #expect(p.takeDue(now: 15, settle: 10, limit: 10) == [ref(1)])
        #expect(p.count == 3)
        for r in [ref(1), ref(2), ref(3)] { p.finish(r, now: 15, settle: 10) }
        #expect(p.count == 0)
        #expect(p.takeDue(now: 100, settle: 10, limit: 10).isEmpty)
    }

    @Test func aRunTouchedWhileTakenOrToldToWaitComesBack() {
        var p = PendingRuns(capacity: 100)
        p.touch(ref(1), at: 0, settle: 10)
        p.touch(ref(2), at: 0, settle: 10)
        #expect(p.takeDue(now: 10, settle: 10, limit: 1) == [ref(1)])
        // Touched while it was being observed: back in line for 21.
        p.touch(ref(1), at: 11, settle: 10)
        p.finish(ref(1), now: 12, settle: 10)
        #expect(p.takeDue(now: 12, settle: 10, limit: 10) == [ref(2)])
        // No root yet: looked at again a settle time later.
        p.later(ref(2), now: 12, settle: 10)
        #expect(p.waited(ref(2), now: 12) == 12)
        #expect(p.takeDue(now: 21, settle: 10, limit: 10) == [ref(1)])
        #expect(p.takeDue(now: 21.5, settle: 10, limit: 10).isEmpty)
        #expect(p.takeDue(now: 22, settle: 10, limit: 10) == [ref(2)])
    }

    @Test func pastItsCapacityRunsGoThroughTheSpillAndComeBack() throws {
        let dir = NSTemporaryDirectory() + "pending-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spill = RunSpill(path: dir + "/stats.spill")
        var p = PendingRuns(capacity: 1_000)
        // 5,000 runs, each touched three times.
        for round in 0..<3 {
            for i in 0..<5_000 { p.touch(ref(i), at: Double(round), settle: 10) }
            try spill.append(p.takeSpill())
        }
        #expect(p.count == 5_000)
        #expect(p.entries.count == 1_000)
        // Spilled once each: later touches of a spilled run are not written again.
        var size = stat()
        stat(dir + "/stats.spill", &size)
        #expect(size.st_size > 4_000 * 30 && size.st_size < 4_000 * 60)
        #expect(p.lag(now: 20, settle: 10) == 10)
        // Drained in memory, refilled from the spill, until every run was seen once.
        var seen: [Ref: Int] = [:]
        var t = 20.0
        while p.count > 0 {
            if p.room > 0 { p.admit(try spill.read(limit: p.room), settle: 10) }
            let due = p.takeDue(now: t, settle: 10, limit: 300)
            for r in due {
                seen[r, default: 0] += 1
                p.finish(r, now: t, settle: 10)
            }
            t += 1
        }
        #expect(seen.count == 5_000)
        #expect(seen.values.allSatisfy { $0 == 1 })
        #expect(spill.isEmpty)
        stat(dir + "/stats.spill", &size)
        #expect(size.st_size == 0)
        #expect(p.lag(now: t, settle: 10) == 0)
    }

    @Test func aSpillTornByACrashEndsAtItsLastWholeRecord() throws {
        let dir = NSTemporaryDirectory() + "pending-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/stats.spill"
        try RunSpill(path: path).append((0..<10).map { (ref($0), Double($0)) })
        let h = try #require(FileHandle(forUpdatingAtPath: path))
        let end = try h.seekToEnd()
        try h.truncate(atOffset: end - 5)
        try h.close()
        // A new process reads back what the old one left.
        let spill = RunSpill(path: path)
        let back = try spill.read(limit: 100)
        #expect(back.map(\.0) == (0..<9).map(ref))
        #expect(back.map(\.1) == (0..<9).map(Double.init))
        #expect(spill.isEmpty)
    }
}
