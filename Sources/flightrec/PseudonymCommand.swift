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
        discussion: """
            Reads DATA/keys/pseudonym.key (made at the daemon's first start), or with --key a copy \
            of it, for an auditor who holds the key but not the data directory. Exits 64 when \
            there is none.
            """)

    @Argument(help: "The identity, as the agent or sidecar sent it (for example alice@corp.example).")
    var value: String

    @OptionGroup var storage: DataOptions

    @Option(help: "A copy of the pseudonym key (DATA/keys/pseudonym.key) to use instead of the data directory's.")
    var key: String?

    func run() async throws {
        let path = try key ?? Daemon.pseudonymKeyPath(dataDirectory: storage.load().dataDirectory)
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
