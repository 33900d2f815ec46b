import Testing

@testable import FlightRecorderOTLP

/// `SeriesMap`, the id-keyed table the span families are counted in, against a `Dictionary`
/// doing the same operations.
@Suite struct SeriesMapTests {
    func key(_ n: Int, _ family: MetricFamily = .toolCalls) -> SeriesKey {
        SeriesKey(family, ["t", "a", "v", "task", "tool-\(n)", "read", "ok"])
    }

    @Test func agreesWithADictionaryThroughGrowthUpdatesAndRemovals() {
        var map = SeriesMap<Double>()
        var reference: [SeriesKey: Double] = [:]
        var rng = SystemRandomNumberGenerator()
        for step in 0..<20_000 {
            let k = key(Int.random(in: 0..<3_000, using: &rng), step % 7 == 0 ? .cost : .toolCalls)
            switch Int.random(in: 0..<10, using: &rng) {
            case 0:
                map[k] = nil
                reference[k] = nil
            case 1...3:
                map[k, default: 0] += 2
                reference[k, default: 0] += 2
            default:
                map.update(id: k.id, family: k.family, key: { k }, initial: { 0 }) { $0 += 1 }
                reference[k, default: 0] += 1
            }
        }
        #expect(map.count == reference.count)
        for (k, v) in reference { #expect(map[k] == v) }
        for (k, v) in map { #expect(reference[k] == v) }
        #expect(map[key(99_999)] == nil)
    }

    @Test func mergeAddsSharedSeriesAndKeepsTheRest() {
        var a = SeriesMap<Double>()
        var b = SeriesMap<Double>()
        for n in 0..<100 { a[key(n)] = 1 }
        for n in 50..<300 { b[key(n)] = 10 }
        a.merge(b) { $0 += $1 }
        #expect(a.count == 300)
        #expect(a[key(10)] == 1)
        #expect(a[key(60)] == 11)
        #expect(a[key(200)] == 10)
        var empty = SeriesMap<Double>()
        empty.merge(b) { $0 += $1 }
        #expect(empty == b)
        // The same label values in another family are another series.
        #expect(a[key(10, .cost)] == nil)
    }
}
