/// The runs waiting for the run analyser, in the order they fall due, within a bound on memory.
///
/// A run falls due once no span of it has arrived for `settle` seconds (and any `notBefore`
/// has passed). Runs are queued once each, in the order they were touched; a touch moves no
/// entry, the run is put back in line when it reaches the front still unsettled. So taking a
/// batch looks only at the front of the queue, never at every run waiting.
///
/// At most `capacity` runs are held in memory. Under sustained overload (runs completing faster
/// than the analyser observes them) a run touched while the table is full is handed to the
/// spill instead (`takeSpill`, a file the analyser appends to) and remembered only by its
/// hash, so that its later touches are not spilled again; `admit` brings spilled runs back
/// once there is room. Spilled runs are observed later, never lost: observing reads the run as
/// stored then, so the touches a spilled run missed are in what is read.
struct PendingRuns {
    struct RunRef: Hashable, Sendable {
        var tenant: String
        var run: String
    }

    struct Entry {
        var lastTouch: Double
        var firstTouch: Double
        /// Not looked at again before this (a run waiting for its root).
        var notBefore = 0.0
        /// When the run's place in the queue falls due; nil while it is out of the queue (taken).
        var queuedDue: Double?
    }

    let capacity: Int
    private(set) var entries: [RunRef: Entry] = [:]
    /// Each run at most once, from `head` on.
    private var queue: [RunRef] = []
    private var head = 0
    /// Runs touched while the table was full, not yet written to the spill.
    private var spillBuffer: [(RunRef, Double)] = []
    /// Hashes of the runs spilled and not read back yet.
    private var spilled: Set<Int> = []
    /// No spilled run read back yet was touched before this.
    private var spilledSince: Double?

    init(capacity: Int) {
        self.capacity = capacity
    }

    /// Runs waiting, in memory and spilled.
    var count: Int { entries.count + spilled.count }

    /// Records that `ref` gained spans at `t`.
    mutating func touch(_ ref: RunRef, at t: Double, settle: Double) {
        if let i = entries.index(forKey: ref) {
            entries.values[i].lastTouch = max(entries.values[i].lastTouch, t)
            return
        }
        guard entries.count < capacity else {
            if spilled.insert(ref.hashValue).inserted {
                spillBuffer.append((ref, t))
                if spilledSince == nil { spilledSince = t }
            }
            return
        }
        entries[ref] = Entry(lastTouch: t, firstTouch: t, queuedDue: t + settle)
        queue.append(ref)
    }

    /// Takes up to `limit` runs that are due at `t`, oldest first. They stay in `entries`
    /// (touches still count) until `finish` or `later`.
    mutating func takeDue(now t: Double, settle: Double, limit: Int) -> [RunRef] {
        var due: [RunRef] = []
        // Each run is looked at once per call: one put back goes behind the others.
        let end = queue.count
        while due.count < limit && head < end {
            let ref = queue[head]
            guard let e = entries[ref], let queuedDue = e.queuedDue else {
                head += 1
                continue
            }
            if queuedDue > t { break }
            head += 1
            let effective = max(e.lastTouch + settle, e.notBefore)
            if effective > t {
                entries[ref]!.queuedDue = effective
                queue.append(ref)
            } else {
                entries[ref]!.queuedDue = nil
                due.append(ref)
            }
        }
        compact()
        return due
    }

    /// How long the oldest run due at `t` has been due: 0 if none is.
    func lag(now t: Double, settle: Double) -> Double {
        let lag = spilledSince.map { max(0, t - $0 - settle) } ?? 0
        var i = head
        while i < queue.count {
            if let due = entries[queue[i]]?.queuedDue { return max(lag, t - due) }
            i += 1
        }
        return lag
    }

    /// A run taken by `takeDue` was observed (or found gone) at `t`: forgotten, unless a span
    /// arrived since, which puts it back in line.
    mutating func finish(_ ref: RunRef, now t: Double, settle: Double) {
        guard let e = entries[ref] else { return }
        if e.lastTouch + settle <= t {
            entries[ref] = nil
        } else {
            requeue(ref, at: e.lastTouch + settle)
        }
    }

    /// A run taken by `takeDue` is to be looked at again: after `settle` more seconds, or when
    /// it settles again if a span arrived since.
    mutating func later(_ ref: RunRef, now t: Double, settle: Double) {
        guard let e = entries[ref] else { return }
        if e.lastTouch + settle <= t {
            entries[ref]!.notBefore = t + settle
            requeue(ref, at: t + settle)
        } else {
            requeue(ref, at: e.lastTouch + settle)
        }
    }

    /// Seconds the run has waited since its first touch.
    func waited(_ ref: RunRef, now t: Double) -> Double? { entries[ref].map { t - $0.firstTouch } }

    private mutating func requeue(_ ref: RunRef, at due: Double) {
        guard entries[ref]?.queuedDue == nil else { return }
        entries[ref]!.queuedDue = due
        queue.append(ref)
    }

    private mutating func compact() {
        if head > 4_096 && head * 2 > queue.count {
            queue.removeFirst(head)
            head = 0
        }
    }

    // MARK: The spill

    /// The runs to append to the spill, oldest first.
    mutating func takeSpill() -> [(RunRef, Double)] {
        defer { spillBuffer = [] }
        return spillBuffer
    }

    /// Room for this many runs read back from the spill (none until the table is half empty,
    /// so the spill is read in large steps).
    var room: Int { entries.count * 2 > capacity ? 0 : capacity * 3 / 4 - entries.count }

    /// Runs read back from the spill, with the time each was spilled: queued like touches
    /// (already settled, if they were spilled `settle` ago).
    mutating func admit(_ runs: [(RunRef, Double)], settle: Double) {
        for (ref, t) in runs {
            spilled.remove(ref.hashValue)
            // Records are in the order spilled: none left is older.
            spilledSince = spilled.isEmpty ? nil : t
            if entries[ref] != nil { continue }
            entries[ref] = Entry(lastTouch: t, firstTouch: t, queuedDue: t + settle)
            queue.append(ref)
        }
    }
}
