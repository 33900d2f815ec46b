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

@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    fuzzOne(UnsafeBufferPointer(start: data, count: size))
    return 0
}

#if !FUZZING
@main enum Replay { static func main() { FuzzReplay.main(fuzzOne) } }
#endif
