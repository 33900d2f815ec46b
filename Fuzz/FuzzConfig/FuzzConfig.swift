import FlightRecorderConfig
import FlightRecorderGuardPolicy
import FuzzSupport

/// Both YAML config loaders, the collector's and the sidecar's: any file must load or fail
/// with a `ConfigError` that names a key, never crash.
func fuzzOne(_ input: UnsafeBufferPointer<UInt8>) {
    // Composed once, read by both loaders: YAML parsing is most of the cost.
    guard let root = try? ConfigReader.compose(String(decoding: input, as: UTF8.self)) else { return }
    _ = try? DaemonConfiguration.parse(root: root)
    _ = try? GuardConfiguration.parse(root: root)
}

@main enum Main {
    static func main() { FuzzMain.run(fuzzOne) }
}
