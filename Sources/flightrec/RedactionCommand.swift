import ArgumentParser
import FlightRecorderCollector
import Foundation

struct RedactionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redaction", abstract: "Redaction policy status.", subcommands: [Stats.self])

    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Hits per redaction rule since the daemon started.")

        @OptionGroup var options: APIOptions

        func run() async throws {
            let data = try await fetch(options, "/api/v1/redaction/stats")
            if options.json {
                printBody(data)
                return
            }
            let body = try JSONDecoder().decode(RedactionStats.self, from: data)
            print("redaction: \(body.enabled ? "enabled" : "DISABLED (values stored as sent)")")
            printTable(
                header: ["RULE", "HITS"],
                rows: body.rules.sorted { $0.key < $1.key }.map { [$0.key, String($0.value)] })
        }
    }
}
