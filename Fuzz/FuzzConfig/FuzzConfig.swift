import FlightRecorderConfig
import FlightRecorderGuardPolicy
import FuzzSupport

/// Both YAML config loaders, the collector's and the sidecar's: any file must load or fail
/// with a `ConfigError` that names a key, never crash.
func fuzzOne(_ input: UnsafeBufferPointer<UInt8>) {
    let text = String(decoding: input, as: UTF8.self)
    _ = try? DaemonConfiguration.parse(yaml: text)
    _ = try? GuardConfiguration.parse(yaml: text)
}

@main enum Main {
    static func main() { FuzzMain.run(fuzzOne) }
}
