import Crypto
import FlightRecorderCollector
import FlightRecorderConfig
import FlightRecorderStorage
import Foundation
import Synchronization
import Testing

@Suite struct AuthenticatorTests {
    static func digest(_ token: String) -> String {
        SHA256.hash(data: Array(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    let auth = Authenticator(tokens: [
        AccessToken(name: "acme-ingest", sha256: digest("t-acme"), tenants: ["acme"], roles: [.ingest]),
        AccessToken(name: "reader", sha256: digest("t-read"), tenants: ["acme", "globex"], roles: [.responder]),
        AccessToken(name: "root", sha256: digest("t-admin"), tenants: ["*"], roles: [.admin]),
    ])

    @Test func digestIsTheLowercaseHexSHA256() {
        #expect(AccessToken.digest(of: "t-acme") == Self.digest("t-acme"))
        #expect(AccessToken.digest(of: "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func tokensMapToTenantAndRoles() throws {
        let ingest = try auth.authenticate("Bearer t-acme", requiring: [.ingest])
        #expect(ingest.ingestTenant == "acme" && ingest.scope == .only(["acme"]))
        let reader = try auth.authenticate("bearer  t-read", requiring: Role.readers)
        #expect(reader.ingestTenant == nil && reader.scope == .only(["acme", "globex"]))
        #expect(try auth.authenticate("Bearer t-admin", requiring: Role.readers).scope == .all)
    }

    @Test(arguments: [nil, "", "t-acme", "Basic t-acme", "Bearer", "Bearer wrong"])
    func missingMalformedOrUnknownTokensAreUnauthenticated(header: String?) {
        #expect {
            _ = try auth.authenticate(header, requiring: [.ingest])
        } throws: { error in
            if (error as? AuthError)?.isUnauthenticated == true { return true }
            return false
        }
    }

    @Test func aValidTokenWithoutTheRoleIsForbiddenAndNamesTheRoleNotTheToken() {
        #expect {
            _ = try auth.authenticate("Bearer t-read", requiring: [.ingest])
        } throws: { error in
            guard let f = error as? AuthError, !f.isUnauthenticated else { return false }
            let m = f.message
            return m.contains("ingest") && !m.contains("t-read")
        }
    }

    @Test func withoutTokensEveryoneIsTheSingleDefaultTenant() throws {
        let open = Authenticator(tokens: [])
        let p = try open.authenticate(nil, requiring: [.admin])
        #expect(!open.enabled && p.scope == .all && p.ingestTenant == nil)
    }
}

@Suite struct TenantRateLimiterTests {
    @Test func bucketRefillsAndAnswersTheWait() {
        let now = Mutex(100.0)
        let limiter = TenantRateLimiter(
            limit: RateLimit(spansPerSecond: 10, burst: 20), clock: { now.withLock { $0 } })
        #expect(limiter.take(15, tenant: "acme") == nil)
        #expect(limiter.take(10, tenant: "acme") == 1)  // 5 left, 5 short at 10/s
        #expect(limiter.take(20, tenant: "globex") == nil)  // tenants have their own buckets
        now.withLock { $0 += 0.5 }
        #expect(limiter.take(10, tenant: "acme") == nil)  // 5 + 5 refilled
        #expect(limiter.take(1, tenant: "acme") == 1)
        // A request above the burst waits for a full bucket instead of never passing.
        now.withLock { $0 += 10 }
        #expect(limiter.take(500, tenant: "acme") == nil)
    }
}
