public import FlightRecorderConfig
import FlightRecorderOTLP
public import FlightRecorderStorage

extension DaemonConfiguration {
    /// The store's share of the daemon's configuration.
    public var storeConfiguration: StoreConfiguration {
        var s = StoreConfiguration(directory: dataDirectory)
        s.durability = durability == .fsync ? .fsync : .none
        s.compression = compression == .zstd ? .zstd : .lz4
        s.segmentBytes = segmentBytes
        s.blockBytes = blockBytes
        s.maxQueueBytes = queueBytes
        s.runIdentity = RunIdentity(keys: runIDKeys)
        s.indexedKeys = indexedKeys
        s.metricRules = metrics.rules
        s.findingRules = findings
        if retention.expires {
            var r = StoreConfiguration.Retention(
                maxAge: retention.maxAgeSeconds, tenantMaxAge: retention.tenantMaxAgeSeconds,
                floor: retention.floorSeconds)
            r.maxBytes = retention.maxBytes
            r.sealAfter = retention.sealAfterSeconds
            r.checkInterval = retention.checkIntervalSeconds
            s.retention = r
        }
        return s
    }
}
