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
struct Predecessors {
    let g: RunGraph
    let depth: [Int]
    /// Spans with at least one link into the run.
    let linkers: [Int]

    init(_ g: RunGraph) {
        self.g = g
        var depth = [Int](repeating: -1, count: g.spans.count)
        func d(_ i: Int) -> Int {
            if depth[i] >= 0 { return depth[i] }
            var chain: [Int] = []
            var seen: Set<Int> = []
            var j = i
            while depth[j] < 0, seen.insert(j).inserted {
                chain.append(j)
                guard let p = g.parent[j] else { break }
                j = p
            }
            var base = depth[j] >= 0 ? depth[j] : -1
            for k in chain.reversed() {
                base += 1
                depth[k] = base
            }
            return depth[i]
        }
        for i in g.spans.indices { _ = d(i) }
        self.depth = depth
        linkers = g.spans.indices.filter { !g.linksTo[$0].isEmpty }
    }

    /// `x` and every span linked from a queued span: the spans whose context is queued.
    func sources(of x: Int) -> [Int] {
        var out = [x]
        var seen: Set<Int> = [x]
        var n = 0
        while n < out.count {
            n = out.count
            for l in linkers where l == x || queued(l, x, sources: out) {
                for t in g.linksTo[l] where seen.insert(t).inserted { out.append(t) }
            }
        }
        return out
    }

    /// `y` is in `causalPredecessors(of: x)`; `sources` is `sources(of: x)`.
    func precedes(_ y: Int, _ x: Int, sources: [Int]) -> Bool { queued(y, x, sources: sources) }

    /// `y` is queued: it is in the context of a source, or its parent is queued and it ended
    /// before `x` started (`x` itself is never queued, so nothing is queued through it).
    func queued(_ y: Int, _ x: Int, sources: [Int]) -> Bool {
        let h = g.start[x]
        var z = y
        for _ in 0...g.spans.count {  // bounded: parent IDs may form a cycle
            if z == x { return false }
            if inContext(z, of: sources) { return true }
            guard g.end[z] <= h, let p = g.parent[z] else { return false }
            z = p
        }
        return false
    }

    /// `z` is a source (other than the target, `sources[0]`), a proper ancestor of one, or an
    /// earlier sibling of one of a source's ancestors-or-self.
    func inContext(_ z: Int, of sources: [Int]) -> Bool {
        for (n, c) in sources.enumerated() where depth[c] >= depth[z] {
            var a = c
            while depth[a] > depth[z], let p = g.parent[a] { a = p }
            if a == z {
                if c != z || n > 0 { return true }
                continue
            }
            if g.parent[a] == g.parent[z] && g.end[z] <= g.start[a] { return true }
        }
        return false
    }
}
