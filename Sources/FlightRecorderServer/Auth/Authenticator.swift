public import FlightRecorderConfig
public import FlightRecorderStorage
import Crypto
import Foundation

/// Who is calling, once a bearer token has been checked.
public struct Principal: Sendable {
    /// The token's label from the config (never the token); "anonymous" without auth.
    public var name: String
    public var roles: Set<Role>
    /// The tenants this caller may read.
    public var scope: TenantScope
    /// The tenant stamped on what this caller exports; nil without auth, where spans keep the
    /// tenant they name (one default tenant when they name none).
    public var ingestTenant: String?
}

/// Checks `Authorization: Bearer <token>` against the configured SHA-256 digests.
///
/// Only digests are held: the presented token is hashed and the digest looked up, so the
/// config and memory never contain a usable token, and a lookup reveals nothing about a
/// token's bytes through timing.
public struct Authenticator: Sendable {
    public enum Failure: Error, Sendable {
        /// No token, a malformed header, or an unknown token (HTTP 401, gRPC UNAUTHENTICATED).
        case unauthenticated(String)
        /// A valid token without the role (HTTP 403, gRPC PERMISSION_DENIED).
        case forbidden(String)
    }

    private let tokens: [String: AccessToken]

    public init(tokens: [AccessToken]) {
        var byDigest: [String: AccessToken] = [:]
        for t in tokens { byDigest[t.sha256] = t }
        self.tokens = byDigest
    }

    /// False when no tokens are configured: one default tenant, loopback only.
    public var enabled: Bool { !tokens.isEmpty }

    public static func digest(of token: String) -> String {
        SHA256.hash(data: Array(token.utf8)).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }

    /// Authenticates `authorization` (the header or metadata value) and checks that the token
    /// holds one of `roles`.
    public func authenticate(_ authorization: String?, requiring roles: Set<Role>) throws(Failure) -> Principal {
        guard enabled else {
            return Principal(name: "anonymous", roles: Set(Role.allCases), scope: .all, ingestTenant: nil)
        }
        guard let authorization, !authorization.isEmpty else {
            throw .unauthenticated("missing bearer token (Authorization: Bearer <token>)")
        }
        let parts = authorization.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            throw .unauthenticated("the Authorization header must be \"Bearer <token>\"")
        }
        let token = parts[1].trimmingCharacters(in: .whitespaces)
        guard let entry = tokens[Self.digest(of: token)] else { throw .unauthenticated("unknown bearer token") }
        guard !entry.roles.isDisjoint(with: roles) else {
            let need = roles.sorted().map(\.rawValue).joined(separator: " or ")
            throw .forbidden("token \"\(entry.name)\" lacks the role this needs (\(need))")
        }
        let scope: TenantScope = entry.allTenants ? .all : .only(Set(entry.tenants))
        return Principal(
            name: entry.name, roles: entry.roles, scope: scope,
            ingestTenant: entry.roles.contains(.ingest) ? entry.tenants.first : nil)
    }
}
