public import FlightRecorderIngest
public import FlightRecorderOTLP
public import FlightRecorderRedaction
import Foundation

/// Everything `flightrec serve` needs. Loaded from one YAML file (`load(path:)`), then
/// overridden by command-line flags; tests build it directly.
public struct DaemonConfiguration: Sendable {
    /// Where segments and the index live. Default: `$FLIGHTREC_DATA`, else
    /// `$XDG_DATA_HOME/flightrec`, else `~/.local/share/flightrec`.
    public var dataDirectory: String = DaemonConfiguration.defaultDataDirectory()
    /// OTLP/gRPC receiver. Default 127.0.0.1:4317; nil (`off`) disables it.
    public var otlpGRPC: HostPort? = HostPort(host: "127.0.0.1", port: 4317)
    /// Optional OTLP/gRPC listener on a Unix socket, for agents on the same host (sidecar use).
    public var otlpGRPCSocket: String?
    /// OTLP/HTTP receiver. Default 127.0.0.1:4318; nil (`off`) disables it.
    public var otlpHTTP: HostPort? = HostPort(host: "127.0.0.1", port: 4318)
    /// Optional OTLP/HTTP listener on a Unix socket, for agents on the same host (sidecar use).
    public var otlpHTTPSocket: String?
    /// TLS for every TCP listener; nil serves plaintext (loopback only, see `validate()`).
    public var tls: TLSFiles?
    /// Bearer tokens (as SHA-256 digests). Empty: one default tenant, loopback only.
    public var tokens: [AccessToken] = []
    /// File mode of socket listeners. Default 0660: owner and group only.
    public var socketMode = 0o660
    /// JSON query API. Default 127.0.0.1:4319.
    public var api = HostPort(host: "127.0.0.1", port: 4319)
    /// When an export is acknowledged: after fsync (default), or once the write reaches the
    /// page cache (`none`, for experiments only: a power loss can lose acknowledged spans).
    public var durability = Durability.fsync

    public enum Compression: String, Sendable {
        case zstd, lz4
    }
    /// How new blocks are compressed: zstd (default, smaller) or lz4 (faster). Stored blocks
    /// keep their codec, so the setting can change at any time.
    public var compression = Compression.zstd
    public var segmentBytes = 64 << 20
    public var blockBytes = 256 << 10
    /// Bound on request bytes waiting for the writer; beyond it requests get 503 + Retry-After.
    public var queueBytes = 64 << 20
    /// Largest request body accepted, measured after decompression. Default 16 MiB.
    public var maxRequestBytes = 16 << 20
    /// Spans per request, attributes per span, attribute value length.
    public var limits = IngestLimits()
    /// Per-tenant ingest rate; nil is unlimited (the default).
    public var rateLimit: RateLimit?
    /// Attribute keys naming a span's run, in order of preference.
    public var runIDKeys = RunIdentity.defaultKeys
    /// External IDs indexed at ingest (`GET /api/v1/lookup`, `flightrec why --operation-id`).
    public var externalIDKeys = AgentKeys.defaultExternalIDKeys
    /// Attributes indexed at ingest, so `where` searches on them need not scan.
    public var searchKeys = AgentKeys.defaultSearchKeys
    public var indexedKeys: IndexedKeys { IndexedKeys(keys: externalIDKeys + searchKeys) }
    public var logLevel = "info"
    /// Seconds between the start of a graceful shutdown and the listeners closing, during
    /// which every request is answered 503 / `UNAVAILABLE` with Retry-After, so clients retry
    /// elsewhere or later instead of meeting a closed connection.
    public var shutdownGraceSeconds = 1.0
    /// Applied to every span before it is stored. With no `redaction:` section every default
    /// detector is on: secure by default.
    public var redaction = RedactionPolicy.secureDefault
    /// The agent metrics derived from stored spans (`GET /metrics`, `GET /api/v1/stats`).
    public var metrics = MetricsSettings()
    /// The thresholds of the run findings (`findings:`).
    public var findings = FindingRules.default
    /// The evidence log and its signing key.
    public var evidence = EvidenceSettings()
    /// How long spans are kept (`retention:`); nothing expires without it.
    public var retention = RetentionSettings()

    public init() {}

    public enum Durability: String, Sendable {
        case fsync, none
    }

    public static func defaultDataDirectory() -> String {
        let env = ProcessInfo.processInfo.environment
        if let dir = env["FLIGHTREC_DATA"], !dir.isEmpty { return dir }
        if let xdg = env["XDG_DATA_HOME"], !xdg.isEmpty { return xdg + "/flightrec" }
        return (env["HOME"] ?? ".") + "/.local/share/flightrec"
    }

    /// Checks rules that span several keys. Listening beyond loopback needs tokens; the
    /// TCP listeners must not share an address.
    public func validate() throws(ConfigError) {
        let tcp: [(String, HostPort?)] = [
            ("listeners.otlp_grpc", otlpGRPC), ("listeners.otlp_http", otlpHTTP), ("listeners.api", api),
        ]
        for (key, address) in tcp {
            guard let address, !address.isLoopback, tokens.isEmpty else { continue }
            throw ConfigError(
                key: key,
                reason:
                    "\(address) is not a loopback address; listening beyond loopback requires auth.tokens, and none are configured"
            )
        }
        var seen: [String: String] = [:]
        for (key, address) in tcp {
            guard let address, address.port != 0 else { continue }
            if let other = seen[address.description] {
                throw ConfigError(key: key, reason: "same address as \(other) (\(address))")
            }
            seen[address.description] = key
        }
        if let a = otlpGRPCSocket, a == otlpHTTPSocket {
            throw ConfigError(key: "listeners.otlp_grpc_socket", reason: "same path as listeners.otlp_http_socket")
        }
    }
}
