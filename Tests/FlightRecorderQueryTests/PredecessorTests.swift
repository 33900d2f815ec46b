import FlightRecorderOTLP
import FlightRecorderTesting
import Testing

@testable import FlightRecorderQuery

/// `Predecessors` answers exactly what `causalPredecessors` builds, on random run graphs with
/// nested spans, two traces, links in every direction and missing parents.
@Suite struct PredecessorTests {
    @Test func agreesWithTheSetOnRandomGraphs() throws {
        var rng = SplitMix64(seed: 7)
        func next(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        for _ in 0..<300 {
            let count = 1 + next(24)
            var list: [TestSpan] = []
            for i in 0..<count {
                let trace = next(3) == 0 ? RequestBuilder.traceID(2) : RequestBuilder.traceID(1)
                var parent: [UInt8] = []
                if i > 0 && next(4) != 0 {
                    let p = list[next(i)]
                    if p.trace == trace { parent = p.span }
                } else if next(10) == 0 {
                    parent = RequestBuilder.spanID(200)  // never arrives
                }
                let start = UInt64(next(1_000))
                var links: [(trace: [UInt8], span: [UInt8])] = []
                if i > 0 && next(5) == 0 {
                    let t = list[next(i)]
                    links.append((t.trace, t.span))
                }
                list.append(
                    TestSpan(
                        trace: trace, span: RequestBuilder.spanID(UInt8(i + 1)), parent: parent, start: start,
                        end: start + UInt64(next(400)), links: links))
            }
            // Links to spans that come later in the list, too.
            for i in list.indices where next(8) == 0 {
                let t = list[next(list.count)]
                list[i].links.append((t.trace, t.span))
            }
            let g = RunGraph(runID: "r", spans: try RunGraphTests.spans(list))
            let order = Predecessors(g)
            for x in g.spans.indices {
                let set = g.causalPredecessors(of: x)
                let sources = order.sources(of: x)
                for y in g.spans.indices {
                    #expect(order.precedes(y, x, sources: sources) == set.contains(y), "x \(x) y \(y) of \(count)")
                }
            }
        }
    }
}
