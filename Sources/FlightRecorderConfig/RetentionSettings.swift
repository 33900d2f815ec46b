/// How long stored spans are kept (`retention:`). With no section nothing expires: the safe
/// default for a store that may hold evidence a law requires. Ages count from when a span
/// was stored (its segment's last write), not from the timestamps a client sent, so a skewed
/// or forged clock neither keeps data forever nor drops it early.
public struct RetentionSettings: Sendable, Equatable {
    /// Seconds after which a span expires; nil keeps spans forever (a `tenants` entry may
    /// still give a tenant an age).
    public var maxAgeSeconds: Double?
    /// Per-tenant ages, replacing `maxAgeSeconds` for that tenant.
    public var tenantMaxAgeSeconds: [String: Double] = [:]
    /// The most bytes the segments and their indexes may take; beyond it the oldest data past
    /// the floor expires first, and with none left ingest is refused (retryably).
    public var maxBytes: Int64?
    /// The least age any span is kept for: no other setting may cut below it.
    public var floorSeconds: Double = 0
    /// The active segment seals this long after its first span, so it can expire whole
    /// (default 25 minutes: data goes within retention + about half an hour).
    public var sealAfterSeconds: Double = 25 * 60
    /// How often expired segments are looked for.
    public var checkIntervalSeconds: Double = 60

    public init() {}

    /// Whether anything can expire.
    public var expires: Bool { maxAgeSeconds != nil || !tenantMaxAgeSeconds.isEmpty || maxBytes != nil }
}
