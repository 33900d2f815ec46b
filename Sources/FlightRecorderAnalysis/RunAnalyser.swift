public import FlightRecorderCore
public import FlightRecorderOTLP
import FlightRecorderQuery
public import FlightRecorderStorage
import Foundation
public import Logging
public import ServiceLifecycle
import Synchronization

/// Observes each run once it has settled: its root span is stored (so the root has ended) and
/// no span of it has arrived for `settle` seconds. It reads the run, computes its
/// `RunAggregate`, stores it (`RunStatsStore`), and hands the run families of the agent
/// metrics to `onMetrics`: the first time all of them, later (spans that arrived after it
/// settled) only what the counters gained, never a histogram again.
///
/// A run without a stored root settles after ten times `settle`. At start-up the runs that
/// started in the last `lookback` seconds and were not observed with their current span
/// count are observed again, so a restart loses none and counts none twice.
public final class RunAnalyser: Service, Sendable {
    public let store: SpanStore
    public let stats: RunStatsStore
    public let rules: MetricRules
    public let settle: Double
    let lookback: Double
    let clock: any WallClock
    let logger: Logger
    let onMetrics: @Sendable (MetricDeltas) -> Void

    struct Pending {
        var lastTouch: Double
        var firstTouch: Double
        /// Not looked at again before this (a run waiting for its root).
        var notBefore = 0.0
    }

    private let pending = Mutex<[RunRef: Pending]>([:])
    /// Seconds the oldest due run has waited past its settle time (the analyser's lag).
    private let lagState = Mutex(0.0)
    private let observedCount = Atomic<Int>(0)

    struct RunRef: Hashable {
        var tenant: String
        var run: String
    }

    public init(
        store: SpanStore, stats: RunStatsStore, rules: MetricRules, settle: Double, lookback: Double = 86_400,
        clock: any WallClock = SystemWallClock(), logger: Logger, onMetrics: @escaping @Sendable (MetricDeltas) -> Void
    ) {
        self.store = store
        self.stats = stats
        self.rules = rules
        self.settle = settle
        self.lookback = lookback
        self.clock = clock
        self.logger = logger
        self.onMetrics = onMetrics
    }

    var now: Double { Double(clock.nowNanos()) / 1e9 }

    /// Runs an index round touched (the store's `onRunsTouched`).
    public func touched(_ runs: [(tenant: String, run: String)]) {
        let t = now
        pending.withLock { p in
            for r in runs {
                let key = RunRef(tenant: r.tenant, run: r.run)
                p[key, default: Pending(lastTouch: t, firstTouch: t)].lastTouch = t
            }
        }
    }

    /// Seconds the oldest settled run has waited to be observed.
    public var lag: Double { lagState.withLock { $0 } }
    /// Runs waiting to settle.
    public var waiting: Int { pending.withLock { $0.count } }
    /// Runs observed since start-up.
    public var observed: Int { observedCount.load(ordering: .relaxed) }

    /// The run families of every stored aggregate: the totals the metrics start from, as the
    /// store keeps them (`RunStatsStore.metricTotals`).
    public func storedTotals() throws -> MetricDeltas { try stats.metricTotals() }

    public func run() async throws {
        // What the stored aggregates already count, then recent runs not observed yet.
        let started = ContinuousClock.now
        if let totals = try? storedTotals() {
            onMetrics(totals)
            logger.info("run statistics loaded", metadata: ["elapsed": "\(ContinuousClock.now - started)"])
        }
        // Shutdown cancels the loop, sleeps included: what was observed is stored batch by
        // batch, and what was not is observed again after the restart.
        await cancelWhenGracefulShutdown {
            await self.requeueRecent()
            let interval = max(0.05, min(1, self.settle / 4))
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(interval))
                await self.tick()
            }
        }
    }

    /// Queues the runs that started within `lookback` and were not observed as they are now.
    func requeueRecent() async {
        let since = Int64((now - lookback) * 1e9)
        guard let runs = try? await store.listRuns(since: since, limit: 100_000) else { return }
        let refs = runs.map { (tenant: $0.tenant ?? ResourceFacts.defaultTenant, run: $0.runID) }
        let known = (try? stats.spanCounts(refs)) ?? [:]
        var stale: [(tenant: String, run: String)] = []
        for (run, ref) in zip(runs, refs) where known[ref.tenant + "\u{1F}" + ref.run] != Int(run.spanCount) {
            stale.append(ref)
        }
        touched(stale)
        if !stale.isEmpty {
            logger.info("runs queued for analysis at start-up", metadata: ["runs": "\(stale.count)"])
        }
    }

    /// The share of one core the analyser aims at while runs are waiting: after each batch it
    /// sleeps in proportion to the CPU time the batch took (its threads' own, which a busy
    /// machine does not stretch), at most `maxPause`. A batch's reading and computing, most of
    /// its work, runs at nice 19, so under load it gets far less: ingest comes first, and the
    /// analyser's lag (a metric) grows instead. Far behind (over `catchUpThreshold` runs
    /// waiting) all of it runs at the daemon's own priority with a larger share, so the runs
    /// waiting stay bounded.
    static let cpuShare = 0.25
    static let catchUpShare = 0.5
    static let catchUpThreshold = 100_000
    static let batchSize = 512
    static let maxPause = Duration.seconds(2)

    /// Where batches are read and computed (nice 19), and where they are stored, and
    /// everything done when catching up (the daemon's priority). The low-priority thread
    /// takes no lock that ingest, the indexer or a query takes (it has the store's background
    /// reader, and touches neither `pending` nor `stats`): preempted while holding one, it
    /// would hold them up for as long as the scheduler starves it.
    private let background = WorkerThread(name: "fr-analyse", nice: 19)
    private let foreground = WorkerThread(name: "fr-analyse-save", nice: 0)

    deinit {
        background.stop()
        foreground.stop()
    }

    /// Observes every run that has settled, oldest first, in batches stored in one
    /// transaction each, within the analyser's share of the CPU.
    public func tick() async {
        let t = now
        let due: [RunRef] = pending.withLock { p in
            p.filter { $0.value.lastTouch + settle <= t && $0.value.notBefore <= t }
                .sorted { $0.value.lastTouch < $1.value.lastTouch }.map(\.key)
        }
        let oldest = pending.withLock { p in due.first.flatMap { p[$0]?.lastTouch } }
        lagState.withLock { $0 = oldest.map { max(0, t - $0 - settle) } ?? 0 }
        var start = 0
        while start < due.count {
            if Task.isCancelled { return }
            let chunk = Array(due[start..<min(due.count, start + Self.batchSize)])
            start += chunk.count
            let behind = waitingCount > Self.catchUpThreshold
            let (computed, reading) = await (behind ? foreground : background).run { self.compute(chunk) }
            let (_, storing) = await foreground.run { self.store(chunk, computed, now: t) }
            let share = behind ? Self.catchUpShare : Self.cpuShare
            try? await Task.sleep(for: min((reading + storing) * ((1 - share) / share), Self.maxPause))
        }
    }

    /// A run as read and computed, before it is compared with what is stored.
    enum Computed: Sendable {
        /// The read failed: later.
        case unread
        /// Gone (or no spans).
        case gone
        case aggregate(RunAggregate)
    }

    /// Reads one batch of settled runs and computes their aggregates: pure work over the
    /// store's background reader, for the low-priority thread.
    func compute(_ chunk: [RunRef]) -> [Computed] {
        // One read for the batch: its runs share blocks, each decoded once. Only runs the
        // indexer reported are here, so what they need is indexed: waiting for everything
        // acknowledged would count ingest's index lag as the analyser's work.
        var details: [RunDetail??]
        do {
            details = try store.runsInBackground(chunk.map { (tenant: $0.tenant, run: $0.run) }).map { .some($0) }
        } catch {
            // Read one by one, so a run the store cannot read holds up only itself; a run
            // that fails alone (the index behind, say) is tried again later.
            details = chunk.map { ref in
                (try? store.runInBackground(ref.run, scope: .only([ref.tenant]))).map { .some($0) } ?? nil
            }
        }
        return zip(chunk, details).map { ref, read in
            guard let read else { return .unread }
            guard let detail = read, !detail.spans.isEmpty else { return .gone }
            var aggregate = RunAggregate(
                tenant: ref.tenant, runID: detail.summary.runID, agent: detail.summary.agent, spans: detail.spans,
                rules: rules, findingRules: store.configuration.findingRules)
            aggregate.spanCount = detail.spans.count
            return .aggregate(aggregate)
        }
    }

    /// Compares a computed batch with what is stored, stores what changed in one transaction,
    /// hands the metrics on, and settles the batch's runs in `pending`.
    func store(_ chunk: [RunRef], _ computed: [Computed], now t: Double) {
        var batch: [(new: RunAggregate, old: RunAggregate?)] = []
        var waiting: [RunRef] = []
        var finished: [RunRef] = []
        for (ref, c) in zip(chunk, computed) {
            switch observe(ref, c, now: t) {
            case .wait: waiting.append(ref)
            case .done: finished.append(ref)
            case .observed(let new, let old):
                // A run erased while it was read is not stored again.
                if store.erasures.hides(tenant: new.tenant, run: new.runID) {
                    finished.append(ref)
                    continue
                }
                // A run met under its trace ID and its name alike is observed once.
                if !batch.contains(where: { $0.new.tenant == new.tenant && $0.new.runID == new.runID }) {
                    batch.append((new, old))
                }
                finished.append(ref)
            }
        }
        do {
            let d = try stats.save(batch)
            if !d.isEmpty { onMetrics(d) }
            observedCount.add(batch.count, ordering: .relaxed)
        } catch {
            logger.error("could not store runs' statistics; retrying", metadata: ["error": "\(error)"])
            waiting += batch.map { RunRef(tenant: $0.new.tenant, run: $0.new.runID) }
            finished.removeAll { ref in batch.contains { $0.new.tenant == ref.tenant && $0.new.runID == ref.run } }
        }
        pending.withLock { p in
            for ref in finished where (p[ref]?.lastTouch ?? .infinity) + settle <= t { p[ref] = nil }
            for ref in waiting {
                // Touched again meanwhile: it waits for its new settle time anyway.
                if var e = p[ref], e.lastTouch + settle <= t {
                    e.notBefore = t + settle
                    p[ref] = e
                }
            }
        }
    }

    var waitingCount: Int { pending.withLock { $0.count } }

    enum Observation {
        /// Not settled after all (no root yet), or the store could not answer: later.
        case wait
        /// Gone, or unchanged since it was observed.
        case done
        case observed(RunAggregate, old: RunAggregate?)
    }

    /// What to do with one run as computed: wait (no root yet, unless it has waited ten
    /// settle times; or the read failed), nothing (gone, or unchanged), or store it.
    func observe(_ ref: RunRef, _ computed: Computed, now t: Double) -> Observation {
        guard case .aggregate(let aggregate) = computed else {
            if case .gone = computed { return .done }
            return .wait
        }
        let waited = pending.withLock { $0[ref].map { t - $0.firstTouch } } ?? 0
        if !aggregate.hasRoot && waited < settle * 10 { return .wait }
        guard let old = try? stats.aggregate(tenant: ref.tenant, run: aggregate.runID) else {
            return .observed(aggregate, old: nil)
        }
        return old == aggregate ? .done : .observed(aggregate, old: old)
    }
}
