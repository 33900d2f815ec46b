import FlightRecorderConfig
import FlightRecorderEvidence
import FlightRecorderRedaction
import FlightRecorderStorage
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

extension Daemon {
    /// The evidence log's settings with its signing key: the configured one, which must
    /// exist, or `DATA/keys/log.key`, made at first start.
    static func evidence(_ configuration: DaemonConfiguration, logger: Logger) throws -> StoreConfiguration.Evidence {
        let named = configuration.evidence.signingKey
        let path = named ?? EvidenceSettings.defaultKeyPath(dataDirectory: configuration.dataDirectory)
        if named == nil && mkdir(configuration.dataDirectory, 0o750) != 0 && errno != EEXIST {
            throw StorageError.cannotOpen("create \(configuration.dataDirectory): \(String(cString: strerror(errno)))")
        }
        let loaded: (signer: NoteSigner, created: Bool)
        do {
            loaded = try NoteSigner.load(path: path, create: named == nil)
        } catch {
            if named != nil { throw ConfigError(key: "evidence.signing_key", reason: error.description) }
            throw StorageError.cannotOpen(error.description)
        }
        if loaded.created {
            logger.notice(
                "evidence log signing key generated; give auditors its public key (flightrec audit key)",
                metadata: ["path": "\(path)", "key": "\(loaded.signer.verifier.encoded)"])
        }
        var e = StoreConfiguration.Evidence(signer: loaded.signer)
        e.checkpointInterval = .milliseconds(Int64(configuration.evidence.checkpointIntervalSeconds * 1000))
        return e
    }

    /// The key identities are pseudonymised with (`DATA/keys/pseudonym.key`), made at first start.
    static func pseudonymKey(_ configuration: DaemonConfiguration, logger: Logger) throws -> RedactionPolicy.HMACKey {
        let path = pseudonymKeyPath(dataDirectory: configuration.dataDirectory)
        let existed = access(path, F_OK) == 0
        if mkdir(configuration.dataDirectory, 0o750) != 0 && errno != EEXIST {
            throw StorageError.cannotOpen("create \(configuration.dataDirectory): \(String(cString: strerror(errno)))")
        }
        do {
            let key = try RedactionPolicy.HMACKey.pseudonymKey(path: path, create: true)
            if !existed {
                logger.notice(
                    "pseudonym key generated; identities are stored as HMAC pseudonyms (flightrec pseudonym VALUE)",
                    metadata: ["path": "\(path)", "key_id": "\(key.id)"])
            }
            return key
        } catch {
            throw StorageError.cannotOpen(error.reason)
        }
    }

    public static func pseudonymKeyPath(dataDirectory: String) -> String { dataDirectory + "/keys/pseudonym.key" }
}
