import ArgumentParser
import FlightRecorderCollector
import FlightRecorderConfig
import FlightRecorderRedaction

/// `flightrec pseudonym VALUE`: the pseudonym the daemon stores for an identity, so an auditor
/// who holds the key can check that `alice@corp` is the approver `hmac:p…:…`.
struct PseudonymCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pseudonym",
        abstract:
            "Print the pseudonym stored for an identity (approval.approver, enduser.id, redaction.identity_keys).",
        discussion: "Reads DATA/keys/pseudonym.key (made at the daemon's first start). Exits 64 when there is none.")

    @Argument(help: "The identity, as the agent or sidecar sent it (for example alice@corp.example).")
    var value: String

    @OptionGroup var storage: DataOptions

    func run() async throws {
        let configuration = try storage.load()
        let path = Daemon.pseudonymKeyPath(dataDirectory: configuration.dataDirectory)
        var policy = RedactionPolicy()
        do {
            policy.pseudonymKey = try RedactionPolicy.HMACKey.pseudonymKey(path: path, create: false)
        } catch {
            printError(error.reason)
            throw Exit.usage
        }
        print(try Redactor(policy: policy).pseudonym(value))
    }
}
