public import FlightRecorderOTLP

/// The `metrics:` section: which attributes name an agent's version and task type, the price
/// table for cost, and the bounds on series.
public struct MetricsSettings: Sendable, Equatable {
    /// Derive agent metrics from spans at all (default on).
    public var enabled = true
    public var versionKeys = MetricRules.defaultVersionKeys
    public var taskTypeKeys = MetricRules.defaultTaskTypeKeys
    /// Model name to US dollars per million input and output tokens.
    public var prices: [String: MetricRules.Price] = [:]
    /// Series per family; label sets beyond it are added into one series labelled
    /// `otel_metric_overflow="true"`, so totals stay exact.
    public var maxSeriesPerFamily = 2_000
    /// A series not updated for this long is dropped from `/metrics` (a counter that comes
    /// back starts again from its stored total).
    public var seriesTTLSeconds = 3_600.0
    /// A run is analysed once its root has ended and no span has arrived for this long.
    public var runSettleSeconds = 30.0

    public init() {}

    /// What ingest, recovery and reindex derive; nil when metrics are off.
    public var rules: MetricRules? {
        enabled ? MetricRules(versionKeys: versionKeys, taskTypeKeys: taskTypeKeys, prices: prices) : nil
    }
}
