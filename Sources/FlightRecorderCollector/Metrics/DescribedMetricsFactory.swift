public import CoreMetrics
import Prometheus

/// `PrometheusMetricsFactory` with HELP text for the timers it names. A swift-metrics timer
/// carries no description, so the plain factory registers its histogram without `# HELP`
/// (`promtool check metrics` flags that), and the registry refuses a second registration
/// of the name with another text; so a named timer is registered here, with its text and
/// buckets, and everything else goes to the plain factory.
public struct DescribedMetricsFactory: MetricsFactory {
    let registry: PrometheusCollectorRegistry
    let base: PrometheusMetricsFactory
    let timers: [String: (help: String, buckets: [Duration])]

    init(registry: PrometheusCollectorRegistry, timers: [String: (help: String, buckets: [Duration])]) {
        self.registry = registry
        self.timers = timers
        base = PrometheusMetricsFactory(registry: registry)
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        guard dimensions.isEmpty, let timer = timers[label] else {
            return base.makeTimer(label: label, dimensions: dimensions)
        }
        return registry.makeDurationHistogram(
            descriptor: MetricsEndpoint.descriptor(label, timer.help), buckets: timer.buckets)
    }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        base.makeCounter(label: label, dimensions: dimensions)
    }

    public func makeFloatingPointCounter(
        label: String, dimensions: [(String, String)]
    )
        -> any FloatingPointCounterHandler
    {
        base.makeFloatingPointCounter(label: label, dimensions: dimensions)
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        base.makeMeter(label: label, dimensions: dimensions)
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        base.makeRecorder(label: label, dimensions: dimensions, aggregate: aggregate)
    }

    public func destroyCounter(_ handler: any CounterHandler) { base.destroyCounter(handler) }
    public func destroyMeter(_ handler: any MeterHandler) { base.destroyMeter(handler) }
    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        base.destroyFloatingPointCounter(handler)
    }
    public func destroyRecorder(_ handler: any RecorderHandler) { base.destroyRecorder(handler) }
    public func destroyTimer(_ handler: any TimerHandler) { base.destroyTimer(handler) }
}
