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

    private let pending: Mutex<PendingRuns>
    /// Runs `pending` had no room for; only the storing thread (`foreground`) uses it.
    private let spill: RunSpill?
    /// Seconds the oldest due run has waited past its settle time (the analyser's lag).
    private let lagState = Mutex(0.0)
    private let observedCount = Atomic<Int>(0)

    typealias RunRef = PendingRuns.RunRef

    public init(
        store: SpanStore, stats: RunStatsStore, rules: MetricRules, settle: Double, lookback: Double = 86_400,
        clock: any WallClock = SystemWallClock(), logger: Logger, spillPath: String? = nil,
        capacity: Int = RunAnalyser.capacity, onMetrics: @escaping @Sendable (MetricDeltas) -> Void
    ) {
        pending = Mutex(PendingRuns(capacity: capacity))
        spill = spillPath.map(RunSpill.init(path:))
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
            for r in runs { p.touch(RunRef(tenant: r.tenant, run: r.run), at: t, settle: settle) }
        }
    }

    /// Seconds the oldest settled run has waited to be observed.
    public var lag: Double { lagState.withLock { $0 } }
    /// Runs waiting to settle or to be observed, in memory and spilled.
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

    /// The share of one core the analyser aims at while runs are waiting (half: a backlog of
    /// 100,000 runs takes minutes, not hours, and nice 19 yields to everything else): after
    /// each batch it sleeps in proportion to the CPU time the batch took (its threads' own,
    /// which a busy machine does not stretch), at most `maxPause`. A batch's reading and computing, most of
    /// its work, runs at nice 19. Nice alone does not keep it out of ingest's way (measured: a
    /// nice-19 thread still took 8 % of a saturated daemon's CPU, in the moments ingest's
    /// threads wait on I/O and locks), so while the machine's cores are more than half busy
    /// (`machineBusy`) the share drops to `busyShare`: ingest comes first, and the analyser's
    /// lag (a metric) grows instead, with the runs waiting past `capacity` spilled to disk
    /// rather than held in memory. Far behind it takes no larger share (it once took half a
    /// core past 100,000 runs waiting, to bound their memory, which the spill now does): the
    /// queries answered while it catches up come first too.
    static let cpuShare = 0.5
    static let busyShare = 0.01
    /// Runs read and computed together. Each batch decodes the blocks its runs touch, and
    /// holds their spans, at once: 256 runs keep that to a few tens of MiB (512 took about 8 %
    /// less CPU a run, for twice the memory).
    static let batchSize = 256
    /// Runs a batch takes while the machine is busy: a full batch (about 0.45 s of CPU on a
    /// slow 2-core host) would need a pause of 45 s to stay within `busyShare`, four times
    /// `busyMaxPause`, so the share came out near 3 % (`perf` of a saturated daemon); a small
    /// batch keeps it to `busyShare` and checks back within `busyMaxPause`.
    static let busyBatchSize = 32
    static let maxPause = Duration.seconds(2)
    static let busyMaxPause = Duration.seconds(15)
    /// The machine is busy when its cores were more than this share busy since the last batch.
    static let busyLoad = 0.5
    /// Runs held in memory while they wait (about 200 bytes each); more are spilled.
    public static let capacity = 100_000

    /// Where batches are read and computed (nice 19), and where they are stored and the
    /// spill is written and read (the daemon's priority). The low-priority thread takes no
    /// lock that ingest, the indexer or a query takes (it has the store's background reader,
    /// and touches neither `pending` nor `stats`): preempted while holding one, it would hold
    /// them up for as long as the scheduler starves it.
    private let background = WorkerThread(name: "fr-analyse", nice: 19)
    private let foreground = WorkerThread(name: "fr-analyse-save", nice: 0)

    deinit {
        background.stop()
        foreground.stop()
    }

    /// Observes every run that has settled, oldest first, in batches stored in one
    /// transaction each, within the analyser's share of the CPU.
    public func tick() async {
        while !Task.isCancelled {
            let t = now
            _ = await foreground.run { self.exchangeSpill() }
            let (lag, waiting) = pending.withLock { ($0.lag(now: t, settle: settle), $0.count) }
            lagState.withLock { $0 = lag }
            let busy = machineBusy()
            // Looked at on every tick, so the first batch after a quiet spell judges the last
            // second, not the whole spell.
            if waiting == 0 { return }
            let chunk = pending.withLock {
                $0.takeDue(now: t, settle: settle, limit: busy ? Self.busyBatchSize : Self.batchSize)
            }
            if chunk.isEmpty { return }
            let share = busy ? Self.busyShare : Self.cpuShare
            // What is stored of each run (read here, at the daemon's priority, not on the
            // nice-19 thread): the root labels its span families were counted with, and what
            // its new aggregate is compared with.
            let (stored, pinning) = await foreground.run { self.storedAggregates(chunk) }
            let (computed, reading) = await background.run {
                self.compute(chunk, pinned: stored.map { $0?.spanCounters == nil ? nil : $0?.spanRoot })
            }
            let (_, storing) = await foreground.run {
                self.store(chunk, computed, stored: stored, now: t)
                // A full batch decodes hundreds of blocks and tens of thousands of spans, freed
                // now: without this, those pages stay in the daemon's RSS. (A busy machine's
                // small batches leave little, and trimming walks every arena under its lock.)
                if !busy { trimHeap() }
            }
            let cpu = pinning + reading + storing
            let pause = min(cpu * ((1 - share) / share), busy ? Self.busyMaxPause : Self.maxPause)
            analyserCPU.withLock { $0 += cpu }
            try? await Task.sleep(for: pause)
        }
    }

    /// The machine's CPU time, busy and in all, when `machineBusy` last looked, and the
    /// analyser's own CPU time since.
    private let lastLook = Mutex<(busy: Double, total: Double)?>(nil)
    private let analyserCPU = Mutex(Duration.zero)

    /// Whether the machine's cores were more than `busyLoad` busy since the last look
    /// (`/proc/stat`), the analyser's own work aside: the machine's, not the daemon's, so
    /// ingest on a machine shared with other work counts as busy too (and two daemons side by
    /// side). Never busy where `/proc/stat` cannot be read.
    func machineBusy() -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = stat.split(separator: "\n", maxSplits: 1).first, line.hasPrefix("cpu ")
        else { return false }
        // user nice system idle iowait irq softirq steal (guest time is within user).
        let ticks = line.split(separator: " ").dropFirst().prefix(8).compactMap { Double($0) }
        guard ticks.count >= 5 else { return false }
        let total = ticks.reduce(0, +)
        let busy = total - ticks[3] - ticks[4]
        let last = lastLook.withLock { l in
            defer { l = (busy, total) }
            return l
        }
        let own = analyserCPU.withLock { d in
            defer { d = .zero }
            return d
        }
        guard let last, total > last.total else { return false }
        // /proc/stat counts in clock ticks.
        let ownSeconds = Double(own.components.seconds) + Double(own.components.attoseconds) / 1e18
        let ownTicks = ownSeconds * Double(sysconf(Int32(_SC_CLK_TCK)))
        return (busy - last.busy - ownTicks) / (total - last.total) > Self.busyLoad
    }

    /// Writes the runs `pending` had no room for to the spill, and reads spilled runs back
    /// while it has room.
    func exchangeSpill() {
        guard let spill else {
            // No spill (tests): the runs beyond the table are queued anyway.
            pending.withLock { p in p.admit(p.takeSpill(), settle: settle) }
            return
        }
        let out = pending.withLock { $0.takeSpill() }
        do {
            try spill.append(out)
            let room = pending.withLock { $0.room }
            if room > 0 && !spill.isEmpty {
                let back = try spill.read(limit: room)
                pending.withLock { $0.admit(back, settle: settle) }
            }
        } catch {
            // Kept in memory instead: the bound gives way before a run is lost.
            logger.error("could not use the run analyser's spill file", metadata: ["error": "\(error)"])
            pending.withLock { $0.admit(out, settle: settle) }
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

    /// The stored aggregate of each run of a batch (nil: not observed yet, or unreadable). A
    /// run observed before with its span families counts them again with the root labels they
    /// were counted with (`spanRoot`), not with a root that arrived since (a run observed
    /// without its root, ten settle times after its last span, keeps its resource's labels):
    /// what was counted under them cannot be taken back, and spans counted twice under two
    /// versions would be worse than a late root's labels missed.
    func storedAggregates(_ chunk: [RunRef]) -> [RunAggregate?] {
        chunk.map { ref in (try? stats.aggregate(tenant: ref.tenant, run: ref.run)) ?? nil }
    }

    /// Reads one batch of settled runs and computes their aggregates: pure work over the
    /// store's background reader, for the low-priority thread.
    func compute(_ chunk: [RunRef], pinned: [RunAggregate.SpanRoot?]? = nil) -> [Computed] {
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
        return zip(chunk.indices, details).map { i, read in
            let ref = chunk[i]
            guard let read else { return .unread }
            guard let detail = read, !detail.spans.isEmpty else { return .gone }
            var aggregate = RunAggregate(
                tenant: ref.tenant, runID: detail.summary.runID, agent: detail.summary.agent, spans: detail.spans,
                rules: rules, findingRules: store.configuration.findingRules, spanRoot: pinned?[i] ?? nil)
            aggregate.spanCount = detail.spans.count
            return .aggregate(aggregate)
        }
    }

    /// Compares a computed batch with what is stored, stores what changed in one transaction,
    /// hands the metrics on, and settles the batch's runs in `pending`.
    func store(_ chunk: [RunRef], _ computed: [Computed], stored: [RunAggregate?]? = nil, now t: Double) {
        var batch: [(new: RunAggregate, old: RunAggregate?)] = []
        var waiting: [RunRef] = []
        var finished: [RunRef] = []
        for (i, (ref, c)) in zip(chunk, computed).enumerated() {
            switch observe(ref, c, stored: stored.map { .some($0[i]) } ?? .none, now: t) {
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
            for ref in finished { p.finish(ref, now: t, settle: settle) }
            for ref in waiting { p.later(ref, now: t, settle: settle) }
        }
    }

    enum Observation {
        /// Not settled after all (no root yet), or the store could not answer: later.
        case wait
        /// Gone, or unchanged since it was observed.
        case done
        case observed(RunAggregate, old: RunAggregate?)
    }

    /// What to do with one run as computed: wait (no root yet, unless it has waited ten
    /// settle times; or the read failed), nothing (gone, or unchanged), or store it. `stored`:
    /// its stored aggregate (or none) as read under `ref` before it was computed; read here
    /// when not given, or when the run's ID is not `ref`'s.
    func observe(_ ref: RunRef, _ computed: Computed, stored: RunAggregate?? = nil, now t: Double) -> Observation {
        guard case .aggregate(let aggregate) = computed else {
            if case .gone = computed { return .done }
            return .wait
        }
        let waited = pending.withLock { $0.waited(ref, now: t) } ?? 0
        if !aggregate.hasRoot && waited < settle * 10 { return .wait }
        let old: RunAggregate?
        if let stored, ref.run == aggregate.runID {
            old = stored
        } else {
            old = (try? stats.aggregate(tenant: ref.tenant, run: aggregate.runID)) ?? nil
        }
        guard let old else {
            return .observed(aggregate, old: nil)
        }
        return old == aggregate ? .done : .observed(aggregate, old: old)
    }
}
