import Crypto
import FlightRecorderCore
import Foundation

/// What a bearer token may do.
public enum Role: String, Sendable, CaseIterable, Comparable {
    /// Export spans (OTLP). The token's single tenant is stamped on every span it sends.
    case ingest
    /// Query runs, traces and causal paths.
    case responder
    /// Query, and export audit evidence.
    case auditor
    /// Everything, including operational endpoints.
    case admin
    /// Scrape `GET /metrics` and nothing else (a Prometheus server's token).
    case metrics

    public static func < (a: Role, b: Role) -> Bool { a.rawValue < b.rawValue }

    /// Every role's name, for error messages.
    public static var names: String { allCases.map(\.rawValue).joined(separator: ", ") }

    /// Roles that may read the query API.
    public static let readers: Set<Role> = [.responder, .auditor, .admin]
}

/// One entry of `auth.tokens`: the SHA-256 digest of a bearer token (never the token), the
/// tenant(s) it acts for, and its roles. `flightrec token new` prints a token and its digest.
public struct AccessToken: Sendable, Equatable {
    /// A label for logs; never the token.
    public var name: String
    /// Lowercase hex SHA-256 of the token's UTF-8 bytes.
    public var sha256: String
    /// The tenants this token acts for; `["*"]` means every tenant (not allowed with `ingest`).
    public var tenants: [String]
    public var roles: Set<Role>

    public init(name: String, sha256: String, tenants: [String], roles: Set<Role>) {
        self.name = name
        self.sha256 = sha256
        self.tenants = tenants
        self.roles = roles
    }

    public var allTenants: Bool { tenants.contains("*") }

    /// Lowercase hex SHA-256 of a token's UTF-8 bytes: what configs store, never the token.
    /// The collector's tokens and the sidecar's actor tokens both use it.
    public static func digest(of token: String) -> String {
        Hex.encode(SHA256.hash(data: Array(token.utf8)))
    }

    /// Why an `Authorization` value carries no bearer token; `message` says what to send.
    public struct BearerTokenError: Error, Sendable, CustomStringConvertible {
        private enum Code: Sendable { case missing, malformed }
        private let code: Code

        static let missing = BearerTokenError(code: .missing)
        static let malformed = BearerTokenError(code: .malformed)

        public var message: String {
            switch code {
            case .missing: "missing bearer token (Authorization: Bearer <token>)"
            case .malformed: "the Authorization header must be \"Bearer <token>\""
            }
        }
        public var description: String { message }
    }

    /// The token in an `Authorization: Bearer <token>` value (scheme case-insensitive).
    public static func bearerToken(_ authorization: String?) throws(BearerTokenError) -> String {
        guard let authorization, !authorization.isEmpty else { throw .missing }
        let parts = authorization.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { throw .malformed }
        return parts[1].trimmingCharacters(in: .whitespaces)
    }
}

/// A per-tenant token bucket over spans: `spansPerSecond` sustained, `burst` at once.
public struct RateLimit: Sendable, Equatable {
    public var spansPerSecond: Double
    public var burst: Double

    public init(spansPerSecond: Double, burst: Double) {
        self.spansPerSecond = spansPerSecond
        self.burst = burst
    }
}

/// Certificate chain and private key (PEM files) for the TCP listeners.
public struct TLSFiles: Sendable, Equatable {
    public var certificateChain: String
    public var privateKey: String

    public init(certificateChain: String, privateKey: String) {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
    }
}
