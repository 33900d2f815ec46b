public import CoreMetrics
public import FlightRecorderEvidence
public import FlightRecorderOTLP

/// How the store writes. Defaults suit a production daemon; tests shrink the sizes.
public struct StoreConfiguration: Sendable {
    public enum Durability: String, Sendable {
        /// Acknowledge only after the block is fsynced (default).
        case fsync
        /// Acknowledge after the write reaches the page cache. For experiments only: a power
        /// loss or kernel crash can lose acknowledged spans.
        case none
    }

    /// The data directory: `segments/` (segment files and their indexes), `LOCK`.
    public var directory: String
    /// A segment is sealed once it reaches this size.
    public var segmentBytes: Int = 64 << 20
    /// Target raw (uncompressed) size of a block; one request is never split across blocks.
    public var blockBytes: Int = 256 << 10
    /// Bound on request bytes queued for the writer; beyond it appends fail with `overloaded`.
    public var maxQueueBytes: Int = 64 << 20
    public var durability: Durability = .fsync
    /// How new blocks are compressed (stored blocks keep theirs).
    public var compression: BlockCodec.Codec = .zstd
    public var runIdentity = RunIdentity()
    /// Attribute keys recorded per trace in the index (external IDs, searchable attributes).
    public var indexedKeys = IndexedKeys()
    /// The agent metrics recovery and `reindex` derive from stored spans, as ingest does
    /// (`SpanMetrics`); nil derives none.
    public var metricRules: MetricRules?
    /// The thresholds of the run findings (`findings:` in the config), for every reader.
    public var findingRules = FindingRules.default
    /// Told what each committed index round adds to the metrics, and once after start-up the
    /// totals the index already held (in any order: the two never overlap).
    public var onMetrics: (@Sendable (MetricDeltas) -> Void)?
    /// Where the store's own timings go (the fsync of each group, `fsyncTimerLabel`); nil
    /// records none.
    public var metricsFactory: (any MetricsFactory)?
    /// Told the runs (tenant, run ID) each committed index round touched: the run analyser
    /// settles them.
    public var onRunsTouched: (@Sendable ([(tenant: String, run: String)]) -> Void)?
    public static let fsyncTimerLabel = "flightrec_fsync_duration_seconds"

    /// The evidence log (`EvidenceLog`): the key that signs its checkpoints, and how often it
    /// signs one when nothing else does (seals and shutdown sign too).
    public struct Evidence: Sendable {
        public var signer: NoteSigner
        public var checkpointInterval: Duration = .seconds(60)

        public init(signer: NoteSigner) { self.signer = signer }
    }

    /// nil keeps no evidence log.
    public var evidence: Evidence?

    /// How long spans are kept (`SpanStore.expire`); nil keeps everything.
    public struct Retention: Sendable {
        /// Seconds a span is kept after it was stored; nil: kept forever unless its tenant
        /// has an age.
        public var maxAge: Double?
        public var tenantMaxAge: [String: Double] = [:]
        /// The most bytes the segments and their indexes may take: beyond it the oldest
        /// segments past the floor expire, and with none left ingest is refused (retryably).
        public var maxBytes: Int64?
        /// No age is below this.
        public var floor: Double = 0
        /// The active segment seals this many seconds after it was opened (or the writer
        /// started), idle or not, so segments expire whole within about this long of their
        /// newest span's age.
        public var sealAfter: Double = 25 * 60
        /// Seconds between expiry passes.
        public var checkInterval: Double = 60

        public init(maxAge: Double?, tenantMaxAge: [String: Double] = [:], floor: Double = 0) {
            self.maxAge = maxAge
            self.tenantMaxAge = tenantMaxAge
            self.floor = floor
        }

        /// The age after which `tenant`'s spans expire; nil: never.
        public func maxAge(tenant: String) -> Double? {
            (tenantMaxAge[tenant] ?? maxAge).map { max($0, floor) }
        }
    }

    public var retention: Retention?
    /// The runs (tenant, run ID) the `where` holds among `holds` cover, for expiry to keep;
    /// nil when they could not all be found (expiry then waits). Without it a `where` hold
    /// stops expiry altogether.
    public var heldRuns: (@Sendable (_ holds: [Hold]) -> [(tenant: String, run: String)]?)?
    /// Told what each expiry pass deleted (`SpanStore.expire`), from the expiry thread.
    public var onExpired: (@Sendable ([ExpiredSegment]) -> Void)?
    /// Segment indexes each reader keeps open (queries, and the indexer's lookups into
    /// older segments); beyond it the least recently used is closed.
    var maxOpenSegmentIndexes = 64
    /// Decompressed blocks the query side keeps (`BlockCache`), in bytes.
    var blockCacheBytes = 32 << 20
    /// Sealed segments' attribute filters the query side keeps in memory, in bytes (about
    /// 0.5 MiB per 64 MiB segment); the rest are read from disk a line at a time.
    var attributeFilterMemoryBytes = 8 << 20
    /// Durable spans the indexer may lag by before the writer waits (`WriteQueue`).
    var maxIndexBacklogSpans = WriteQueue.defaultMaxIndexBacklogSpans

    public init(directory: String) {
        self.directory = directory
    }

    var segmentDirectory: String { directory + "/segments" }
    /// The evidence log's files (`EvidenceLog`).
    public var evidenceDirectory: String { directory + "/log" }
    /// The single index of stores written before per-segment indexes; removed at start-up.
    var legacyIndexPath: String { directory + "/index.sqlite" }
    /// The damaged regions found so far (`DamageLog`).
    var damageLogPath: String { directory + "/damage.log" }
}
