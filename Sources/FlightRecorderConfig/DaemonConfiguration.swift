import FlightRecorderOTLP
public import FlightRecorderRedaction
public import FlightRecorderStorage
import Foundation

/// Everything `flightrec serve` needs. Loaded from one YAML file (`load(path:)`), then
/// overridden by command-line flags; tests build it directly.
public struct DaemonConfiguration: Sendable {
    /// Where segments and the index live. Default: `$FLIGHTREC_DATA`, else
    /// `$XDG_DATA_HOME/flightrec`, else `~/.local/share/flightrec`.
    public var dataDirectory: String = DaemonConfiguration.defaultDataDirectory()
    /// OTLP/HTTP receiver. Default 127.0.0.1:4318.
    public var otlpHTTP = HostPort(host: "127.0.0.1", port: 4318)
    /// Optional OTLP/HTTP listener on a Unix socket, for agents on the same host (sidecar use).
    public var otlpHTTPSocket: String?
    /// File mode of socket listeners. Default 0660: owner and group only.
    public var socketMode = 0o660
    /// JSON query API. Default 127.0.0.1:4319.
    public var api = HostPort(host: "127.0.0.1", port: 4319)
    public var durability: StoreConfiguration.Durability = .fsync
    public var segmentBytes = 256 << 20
    public var blockBytes = 1 << 20
    /// Bound on request bytes waiting for the writer; beyond it requests get 503 + Retry-After.
    public var queueBytes = 64 << 20
    /// Largest request body accepted, measured after decompression. Default 16 MiB.
    public var maxRequestBytes = 16 << 20
    /// Attribute keys naming a span's run, in order of preference.
    public var runIDKeys = RunIdentity.defaultKeys
    public var logLevel = "info"
    /// Applied to every span before it is stored. With no `redaction:` section every default
    /// detector is on: secure by default.
    public var redaction = RedactionPolicy.secureDefault

    public init() {}

    public static func defaultDataDirectory() -> String {
        let env = ProcessInfo.processInfo.environment
        if let dir = env["FLIGHTREC_DATA"], !dir.isEmpty { return dir }
        if let xdg = env["XDG_DATA_HOME"], !xdg.isEmpty { return xdg + "/flightrec" }
        return (env["HOME"] ?? ".") + "/.local/share/flightrec"
    }

    public var storeConfiguration: StoreConfiguration {
        var s = StoreConfiguration(directory: dataDirectory)
        s.durability = durability
        s.segmentBytes = segmentBytes
        s.blockBytes = blockBytes
        s.maxQueueBytes = queueBytes
        s.runIdentity = RunIdentity(keys: runIDKeys)
        return s
    }

    /// Checks rules that span several keys. Listening beyond loopback needs authentication,
    /// which this version does not have, so it is refused.
    public func validate() throws(ConfigError) {
        for (key, address) in [("listeners.otlp_http", otlpHTTP), ("listeners.api", api)] where !address.isLoopback {
            throw ConfigError(
                key: key,
                reason:
                    "\(address) is not a loopback address; listening beyond loopback requires authentication, which is not configured"
            )
        }
        if otlpHTTP == api && otlpHTTP.port != 0 {
            throw ConfigError(key: "listeners.api", reason: "same address as listeners.otlp_http (\(api))")
        }
    }
}
