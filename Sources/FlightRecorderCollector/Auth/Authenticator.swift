public import FlightRecorderConfig
public import FlightRecorderStorage
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

    private let tokens: [String: AccessToken]

    public init(tokens: [AccessToken]) {
        var byDigest: [String: AccessToken] = [:]
        for t in tokens { byDigest[t.sha256] = t }
        self.tokens = byDigest
    }

    /// False when no tokens are configured: one default tenant, loopback only.
    public var enabled: Bool { !tokens.isEmpty }

    /// Authenticates `authorization` (the header or metadata value) and checks that the token
    /// holds one of `roles`.
    public func authenticate(_ authorization: String?, requiring roles: Set<Role>) throws(AuthError) -> Principal {
        guard enabled else {
            return Principal(name: "anonymous", roles: Set(Role.allCases), scope: .all, ingestTenant: nil)
        }
        let token: String
        do {
            token = try AccessToken.bearerToken(authorization)
        } catch {
            throw .unauthenticated(error.message)
        }
        guard let entry = tokens[AccessToken.digest(of: token)] else { throw .unauthenticated("unknown bearer token") }
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

/// Why a request is not authorized; `message` says what to send instead.
public struct AuthError: Error, Sendable, CustomStringConvertible {
    private enum Code: Sendable { case unauthenticated, forbidden }
    private let code: Code
    public let message: String

    /// No token, a malformed header, or an unknown token (HTTP 401, gRPC UNAUTHENTICATED).
    static func unauthenticated(_ m: String) -> AuthError { AuthError(code: .unauthenticated, message: m) }
    /// A valid token without the role (HTTP 403, gRPC PERMISSION_DENIED).
    static func forbidden(_ m: String) -> AuthError { AuthError(code: .forbidden, message: m) }

    /// True for 401 (who are you?), false for 403 (not allowed).
    public var isUnauthenticated: Bool { code == .unauthenticated }
    public var description: String { message }
}
