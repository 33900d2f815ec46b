/// Answers "does span `y` causally precede span `x`?" exactly as `causalPredecessors(of: x)`
/// would, without building that set: the findings ask it of every write and every policy
/// decision, which on a flat run of 50,000 spans made the set-building quadratic (minutes).
///
/// `causalPredecessors(of: x)` queues `x`'s ancestors and each one's earlier siblings (the
/// "context" of `x`), every span linked from anything queued with its own context, and the
/// children of anything queued that ended before `x` started. So `y` is queued when it, or an
/// ancestor of it, lies in the context of `x` or of a span linked from the queued set, with
/// every node from there down to `y` ended before `x` started. `PredecessorTests` checks that
/// both agree on random graphs.
///
/// One target at a time: `prepare(x)` builds `x`'s context in arrays stamped per target
/// (no hashing: on a flat run of 50,000 spans each write's context holds about a thousand
/// linked policy checks; and a struct, so no dynamic exclusivity checks), then `precedes(y)`
/// answers for that target.
struct Predecessors {
    let g: RunGraph
    /// Spans with at least one link into the run, by end time.
    let linkers: [Int]
    /// `inChain[i] == stamp`: `i` is a source other than the target, or a proper ancestor of one.
    private var inChain: [UInt32]
    /// `seen[i] == stamp`: `i` was added as a source.
    private var seen: [UInt32]
    /// `latestMark[p] == stamp`: `latestStart[p]` is the latest start of a source's
    /// ancestor-or-self under `p` (an earlier sibling of it is queued).
    private var latestMark: [UInt32]
    private var latestStart: [Int64]
    private var stamp: UInt32 = 0
    private(set) var target = -1
    private var latestRootStart: Int64 = .min
    /// Every queued span outside the chain ended by this: the horizon or a chain node's start.
    private(set) var bound: Int64 = .min
    /// The chain nodes of the current target (sources other than it and their ancestors).
    private(set) var chain: [Int] = []

    init(_ g: RunGraph) {
        self.g = g
        let n = g.spans.count
        linkers = g.spans.indices.filter { !g.linksTo[$0].isEmpty }.sorted { (g.end[$0], $0) < (g.end[$1], $1) }
        inChain = [UInt32](repeating: 0, count: n)
        seen = [UInt32](repeating: 0, count: n)
        latestMark = [UInt32](repeating: 0, count: n)
        latestStart = [Int64](repeating: .min, count: n)
    }

    func isInChain(_ i: Int) -> Bool { inChain[i] == stamp }

    /// A span is in the context of the sources.
    func inContext(_ z: Int) -> Bool {
        if inChain[z] == stamp { return true }
        let limit = g.parent[z].map { latestMark[$0] == stamp ? latestStart[$0] : .min } ?? latestRootStart
        return g.end[z] <= limit
    }

    /// Adds source `c`; returns its proper ancestors newly in the chain (each is queued).
    private mutating func add(_ c: Int) -> [Int] {
        if c != target && inChain[c] != stamp {
            inChain[c] = stamp
            chain.append(c)
        }
        var ancestors: [Int] = []
        var a = c
        for _ in 0...g.spans.count {  // bounded: parent IDs may form a cycle
            bound = max(bound, g.start[a])
            guard let p = g.parent[a] else {
                latestRootStart = max(latestRootStart, g.start[a])
                break
            }
            if latestMark[p] != stamp {
                latestMark[p] = stamp
                latestStart[p] = .min
            }
            latestStart[p] = max(latestStart[p], g.start[a])
            if inChain[p] == stamp { break }  // its own ancestors are in already
            inChain[p] = stamp
            chain.append(p)
            ancestors.append(p)
            a = p
        }
        return ancestors
    }

    /// Builds the context of `x`, grown until no queued span links anywhere new. A queued
    /// linker is a chain node, or ended by `bound`: linkers are scanned in end order up to
    /// it, and the ones not (yet) queued are asked again whenever the context grows.
    mutating func prepare(_ x: Int) {
        stamp &+= 1
        if stamp == 0 {  // wrapped: clear the marks once
            for i in inChain.indices { inChain[i] = 0; seen[i] = 0; latestMark[i] = 0 }
            stamp = 1
        }
        target = x
        latestRootStart = .min
        bound = g.start[x]
        chain.removeAll(keepingCapacity: true)
        seen[x] = stamp
        var waiting: [Int] = []
        var next = 0
        var fresh = [x]
        while true {
            var grew = false
            var queuedLinkers: [Int] = []
            while let c = fresh.popLast() {
                let ancestors = add(c)
                queuedLinkers.append(c)  // a source is queued (`x` is not, but its own links count)
                queuedLinkers += ancestors.filter { !g.linksTo[$0].isEmpty }
                grew = true
            }
            while next < linkers.count && g.end[linkers[next]] <= bound {
                waiting.append(linkers[next])
                next += 1
            }
            if grew {
                var still: [Int] = []
                for l in waiting {
                    if l != x && precedes(l) { queuedLinkers.append(l) } else { still.append(l) }
                }
                waiting = still
            }
            for l in queuedLinkers {
                for t in g.linksTo[l] where seen[t] != stamp {
                    seen[t] = stamp
                    fresh.append(t)
                }
            }
            if fresh.isEmpty && !(next < linkers.count && g.end[linkers[next]] <= bound) { return }
        }
    }

    /// `y` is in `causalPredecessors(of: target)`: it is in the context of a source, or its
    /// parent is queued and it ended before the target started (the target itself is never
    /// queued, so nothing is queued through it).
    func precedes(_ y: Int) -> Bool {
        let h = g.start[target]
        var z = y
        for _ in 0...g.spans.count {  // bounded: parent IDs may form a cycle
            if z == target { return false }
            if inContext(z) { return true }
            guard g.end[z] <= h, let p = g.parent[z] else { return false }
            z = p
        }
        return false
    }
}
