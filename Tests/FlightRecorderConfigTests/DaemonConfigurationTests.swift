import FlightRecorderConfig
import FlightRecorderIngest
import FlightRecorderOTLP
import FlightRecorderStorage
import Foundation
import Testing

@Suite struct DaemonConfigurationTests {
    @Test func parsesEverySectionOverDefaults() throws {
        let c = try DaemonConfiguration.parse(
            yaml: """
                data_dir: /var/lib/flightrec
                listeners:
                  otlp_http: 127.0.0.1:5318
                  api: "[::1]:5319"
                storage:
                  durability: none
                  segment_size: 128MiB
                  block_size: 512KiB
                  queue_limit: 32MiB
                limits:
                  max_request_body: 8MiB
                runs:
                  id_keys: [task.id, session.id]
                log:
                  level: debug
                """)
        #expect(c.dataDirectory == "/var/lib/flightrec")
        #expect(c.otlpHTTP == HostPort(host: "127.0.0.1", port: 5318))
        #expect(c.api == HostPort(host: "::1", port: 5319))
        #expect(c.durability == .none)
        #expect(c.segmentBytes == 128 << 20 && c.blockBytes == 512 << 10 && c.queueBytes == 32 << 20)
        #expect(c.maxRequestBytes == 8 << 20)
        #expect(c.runIDKeys == ["task.id", "session.id"])
        #expect(c.logLevel == "debug")
        try c.validate()
    }

    @Test(arguments: [
        ("storage:\n  durability: sometimes\n", "storage.durability", 2, "expected one of fsync, none"),
        ("listeners:\n  otlp_http: 127.0.0.1\n", "listeners.otlp_http", 2, "expected HOST:PORT"),
        ("storage:\n  segment_size: lots\n", "storage.segment_size", 2, "expected a size"),
        ("\n\nstorage:\n  durabilty: fsync\n", "storage.durabilty", 4, "unknown key"),
        ("listners:\n  api: 127.0.0.1:1\n", "listners", 1, "unknown key"),
        ("runs:\n  id_keys: []\n", "runs.id_keys", 2, "needs at least one key"),
        ("limits:\n  max_request_body: 10\n", "limits.max_request_body", 2, "out of range"),
        ("findings:\n  loop_repeats: 1\n", "findings.loop_repeats", 2, "out of range"),
        ("findings:\n  step_budget: many\n", "findings.step_budget", 2, "expected"),
        ("findings:\n  loops: 3\n", "findings.loops", 2, "unknown key"),
        ("retention:\n  max_age: soon\n", "retention.max_age", 2, "expected a duration"),
        ("retention:\n  max_age: 180\n", "retention.max_age", 2, "with its unit"),
        ("retention:\n  max_age: 1d\n  floor: 90\n", "retention.floor", 3, "with its unit"),
        ("retention:\n  tenants:\n    acme: {max_age: 400}\n", "retention.tenants.acme.max_age", 3, "with its unit"),
        ("retention:\n  max_age: 30d\n  floor: 180d\n", "retention.max_age", 2, "below retention.floor"),
        (
            "retention:\n  max_age: 200d\n  floor: 180d\n  tenants:\n    acme: {max_age: 90d}\n",
            "retention.tenants.acme.max_age", 5, "below retention.floor"
        ),
        ("retention:\n  tenants:\n    acme: {keep: 1d}\n", "retention.tenants.acme.keep", 3, "unknown key"),
        ("retention:\n  tenants:\n    acme: {}\n", "retention.tenants.acme", 3, "needs max_age"),
        ("retention:\n  floor: 180d\n", "retention.floor", 2, "needs retention.max_age"),
        ("retention:\n  max_bytes: 1KiB\n", "retention.max_bytes", 2, "out of range"),
        ("retention:\n  max_size: 1GiB\n", "retention.max_size", 2, "unknown key"),
    ])
    func errorsNameKeyAndLine(yaml: String, key: String, line: Int, reason: String) {
        #expect {
            _ = try DaemonConfiguration.parse(yaml: yaml)
        } throws: { error in
            guard let e = error as? ConfigError else { return false }
            return e.key == key && e.line == line && e.reason.contains(reason)
        }
    }

    @Test func shippedExampleConfigIsValidAndMatchesTheDefaults() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "../../Deploy/flightrec.yaml"
        ).standardized.path
        let c = try DaemonConfiguration.load(path: path)
        let defaults = DaemonConfiguration()
        #expect(c.dataDirectory == "/var/lib/flightrec")
        #expect(c.otlpHTTP == defaults.otlpHTTP && c.api == defaults.api)
        #expect(c.durability == defaults.durability && c.segmentBytes == defaults.segmentBytes)
        #expect(c.blockBytes == defaults.blockBytes && c.queueBytes == defaults.queueBytes)
        #expect(c.maxRequestBytes == defaults.maxRequestBytes && c.runIDKeys == defaults.runIDKeys)
        #expect(c.findings == defaults.findings)
        try c.validate()
    }

    @Test func retentionParses() throws {
        let c = try DaemonConfiguration.parse(
            yaml:
                "retention:\n  max_age: 180d\n  floor: 180d\n  tenants:\n    acme: {max_age: 400d}\n  seal_after: 10m\n"
        )
        #expect(c.retention.maxAgeSeconds == Double(180 * 86400))
        #expect(c.retention.floorSeconds == 180 * 86400)
        #expect(c.retention.tenantMaxAgeSeconds == ["acme": 400 * 86400])
        #expect(c.retention.sealAfterSeconds == 600)
        #expect(c.retention.maxBytes == nil)
        let b = try DaemonConfiguration.parse(yaml: "retention:\n  max_bytes: 500GiB\n  floor: 30d\n")
        #expect(b.retention.maxBytes == 500 << 30 && b.retention.expires && b.retention.maxAgeSeconds == nil)
        #expect(c.retention.expires)
        #expect(!DaemonConfiguration().retention.expires)
    }

    @Test func findingThresholdsParse() throws {
        let c = try DaemonConfiguration.parse(yaml: "findings:\n  loop_repeats: 5\n  step_budget: 120\n")
        #expect(c.findings == FindingRules(loopRepeats: 5, stepBudget: 120))
    }

    @Test func invalidYAMLNamesTheLine() {
        #expect {
            _ = try DaemonConfiguration.parse(yaml: "storage:\n  durability: [fsync\n")
        } throws: { error in
            (error as? ConfigError)?.line != nil && "\(error)".contains("not valid YAML")
        }
    }

    @Test func refusesToListenBeyondLoopbackWithoutAuth() throws {
        var c = try DaemonConfiguration.parse(yaml: "listeners:\n  otlp_http: 0.0.0.0:4318\n")
        #expect {
            try c.validate()
        } throws: { error in
            (error as? ConfigError)?.key == "listeners.otlp_http" && "\(error)".contains("requires auth.tokens")
        }
        c.otlpHTTP = HostPort(host: "localhost", port: 4318)
        try c.validate()
    }

    @Test func tokensLimitsTLSAndGRPCListenersParse() throws {
        let digest = String(repeating: "ab", count: 32)
        let c = try DaemonConfiguration.parse(
            yaml: """
                listeners:
                  otlp_grpc: 0.0.0.0:4317
                  otlp_grpc_socket: /run/flightrec/grpc.sock
                  otlp_http: off
                auth:
                  tokens:
                    - name: acme
                      sha256: \(digest.uppercased())
                      tenant: acme
                      roles: [ingest, responder]
                    - sha256: \(String(repeating: "cd", count: 32))
                      tenants: ["*"]
                      roles: [admin]
                limits:
                  max_spans_per_request: 500
                  max_attributes_per_span: 64
                  max_attribute_value_length: 8KiB
                  rate_limit: {spans_per_second: 1000, burst: 5000}
                """)
        #expect(c.otlpGRPC == HostPort(host: "0.0.0.0", port: 4317) && c.otlpHTTP == nil)
        #expect(c.otlpGRPCSocket == "/run/flightrec/grpc.sock")
        #expect(c.tokens.map(\.name) == ["acme", "token 1"])
        #expect(c.tokens[0].sha256 == digest && c.tokens[0].roles == [.ingest, .responder])
        #expect(c.tokens[1].allTenants)
        #expect(
            c.limits == IngestLimits(maxSpansPerRequest: 500, maxAttributesPerSpan: 64, maxAttributeValueBytes: 8 << 10)
        )
        #expect(c.rateLimit == RateLimit(spansPerSecond: 1000, burst: 5000))
        try c.validate()  // beyond loopback is allowed once tokens exist
    }

    @Test(arguments: [
        (
            "auth:\n  tokens:\n    - sha256: secret-token\n      tenant: a\n      roles: [ingest]\n",
            "auth.tokens[0].sha256", 3, "64-hex-digit SHA-256"
        ),
        (
            "auth:\n  tokens:\n    - sha256: \(String(repeating: "a", count: 64))\n      tenant: a\n      roles: [root]\n",
            "auth.tokens[0].roles", 5, "unknown role \"root\""
        ),
        (
            "auth:\n  tokens:\n    - sha256: \(String(repeating: "a", count: 64))\n      tenants: [a, b]\n      roles: [ingest]\n",
            "auth.tokens[0]", 3, "exactly one tenant"
        ),
        (
            "listeners:\n  tls:\n    cert_file: /nonexistent.pem\n    key_file: /nonexistent.key\n",
            "listeners.tls.cert_file", 3, "cannot read"
        ),
        ("limits:\n  max_spans_per_request: 0\n", "limits.max_spans_per_request", 2, "out of range"),
    ])
    func authAndLimitErrorsNameKeyAndLine(yaml: String, key: String, line: Int, reason: String) {
        #expect {
            _ = try DaemonConfiguration.parse(yaml: yaml)
        } throws: { error in
            guard let e = error as? ConfigError else { return false }
            return e.key == key && e.line == line && e.reason.contains(reason)
        }
    }
}
