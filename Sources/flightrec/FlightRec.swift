import ArgumentParser
import Foundation

/// `flightrec`: the FlightRecorder daemon and its query commands.
@main
struct FlightRec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flightrec",
        abstract:
            "Flight recorder and trusted control plane for AI agents: OTLP collector, causal queries, policy sidecar, agent metrics, audit evidence, retention and erasure.",
        discussion: """
            Exit codes:
              0   success
              1   unexpected failure; stats compare --fail-on-change found a change
              64  usage error; an erasure a legal hold refuses
              65  damage found, or a failed verification
              66  unknown run or trace
              69  daemon unreachable
              71  a listener cannot bind its address
              73  cannot open the data directory
              75  data directory in use by another process; erase --wait timed out
              77  missing, unknown or insufficient token
              78  configuration error
            """,
        subcommands: [
            Serve.self, Runs.self, RunCommand.self, Reindex.self, Check.self, RedactionCommand.self, TokenCommand.self,
            Why.self, Find.self, Findings.self, CriticalPath.self, Graph.self, GuardCommand.self, StatsCommand.self,
            Verify.self, Audit.self, PseudonymCommand.self, HoldCommand.self, EraseCommand.self,
        ])
}

/// Process exit codes, from sysexits(3) where one fits.
enum Exit {
    static let failure = ExitCode(1)
    static let usage = ExitCode(64)
    static let dataError = ExitCode(65)
    static let notFound = ExitCode(66)
    static let unavailable = ExitCode(69)
    static let cannotListen = ExitCode(71)
    static let cannotCreate = ExitCode(73)
    static let tempFail = ExitCode(75)
    static let noPermission = ExitCode(77)
    static let config = ExitCode(78)
}

/// Prints to standard error.
func printError(_ message: String) {
    FileHandle.standardError.write(Data("flightrec: \(message)\n".utf8))
}

/// Prints an API response body unchanged (the `--json` output).
func printBody(_ data: Data) {
    FileHandle.standardOutput.write(data + Data("\n".utf8))
}
