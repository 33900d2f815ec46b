import ArgumentParser
import FlightRecorderAnalysis
import Foundation

/// `flightrec stats` and `flightrec stats compare`: the embedded answer to "what changed?",
/// from `GET /api/v1/stats` and `GET /api/v1/stats/compare`.
struct StatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats", abstract: "Windowed statistics of settled runs per group, and drift between two groups.",
        subcommands: [Show.self, Compare.self], defaultSubcommand: Show.self)

    struct Window: ParsableArguments {
        @Option(help: "Group by agent.version (default), tenant, agent or task.type.")
        var by = "agent.version"

        @Option(help: "Runs that started at or after this: Unix ns, RFC 3339, or a duration ago (default 24h).")
        var since = "24h"

        @Option(help: "Runs that started before this (same forms; default now).")
        var until: String?

        @Option(name: .customLong("where"), help: "Only runs with a span matching this expression (as `runs --where`).")
        var filter: String?

        var query: [String] {
            var q = ["by=\(pathSegment(by))", "since=\(pathSegment(since))"]
            if let until { q.append("until=\(pathSegment(until))") }
            if let filter { q.append("where=\(pathSegment(filter))") }
            return q
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "show", abstract: "Runs, error rate, steps and duration percentiles, rates per group.")

        @OptionGroup var options: APIOptions
        @OptionGroup var window: Window

        struct Body: Decodable {
            var by: String
            var source: String
            var complete: Bool
            var groups: [StatsView]
        }

        func run() async throws {
            let data = try await fetch(options, "/api/v1/stats?" + window.query.joined(separator: "&"))
            if options.json {
                printBody(data)
                return
            }
            let body = try JSONDecoder().decode(Body.self, from: data)
            func pct(_ x: Double) -> String { String(format: "%.1f%%", x * 100) }
            // Step counts print whole unless interpolated; durations in ms below a second.
            func num(_ x: Double?) -> String {
                x.map { String(format: $0.rounded() == $0 || $0 >= 100 ? "%.0f" : "%.1f", $0) } ?? "-"
            }
            func duration(_ x: Double?) -> String {
                guard let x else { return "-" }
                // The rollups' duration bins start at 1 ms: shorter runs give 0.
                if x < 0.001 { return "<1ms" }
                if x < 0.01 { return String(format: "%.1fms", x * 1000) }
                if x < 1 { return String(format: "%.0fms", x * 1000) }
                return String(format: x < 100 ? "%.2fs" : "%.0fs", x)
            }
            let header = [
                body.by.uppercased(), "RUNS", "ERRORS", "STEPS P50/P95", "DURATION P50/P95", "BLOCKED", "APPROVAL REQ",
                "DENIED", "REPEATED", "TOKENS IN/OUT", "COST $",
            ]
            let rows = body.groups.map { g in
                [
                    g.group, String(g.runs), pct(g.errorRate), "\(num(g.steps.p50))/\(num(g.steps.p95))",
                    "\(duration(g.durationSeconds.p50))/\(duration(g.durationSeconds.p95))", pct(g.blockedRate),
                    pct(g.approvalRequiredRate), pct(g.deniedRate), pct(g.repeatedCallRate),
                    "\(Int(g.tokens.input))/\(Int(g.tokens.output))", String(format: "%.2f", g.costUsd),
                ]
            }
            printTable(header: header, rows: rows)
            if rows.isEmpty { print("(no settled runs in the window)") }
            let tools = body.groups.flatMap { g in g.tools.map { (g.group, $0.key, $0.value) } }
            if !tools.isEmpty {
                print("")
                printTable(
                    header: [body.by.uppercased(), "TOOL", "CALLS", "TIMEOUTS", "ERRORS"],
                    rows: tools.sorted { ($0.0, $0.1) < ($1.0, $1.1) }.map {
                        [$0.0, $0.1, String($0.2.calls), pct($0.2.timeoutRate), pct($0.2.errorRate)]
                    })
            }
            if !body.complete { print("(more runs matched than were read: figures cover the newest 10,000)") }
        }
    }

    struct Compare: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The measures that changed significantly from a baseline group to a candidate.",
            discussion: """
                Rates are compared with a two-proportion z-test, step counts and durations with the \
                Mann-Whitney rank test. A measure is listed when p < 0.001 and it changed by at least \
                10 %, with at least 20 observations on each side. Exit status 0; with --fail-on-change, \
                1 when any measure changed, or when either group has too few settled runs in the window \
                to show one (a gate fails closed on a misspelt or absent version).
                """)

        @OptionGroup var options: APIOptions
        @OptionGroup var window: Window

        @Option(help: "The group to compare against (a value of --by).")
        var baseline: String

        @Option(help: "The group to compare (a value of --by).")
        var candidate: String

        @Flag(help: "Exit 1 when a measure changed significantly (for CI gates).")
        var failOnChange = false

        struct Body: Decodable {
            var by: String
            var baseline: String
            var candidate: String
            var minSamples: Int
            var baselineRuns: Int
            var candidateRuns: Int
            var changes: [Drift.Change]
            var measures: [Drift.Change]
        }

        func run() async throws {
            let query =
                window.query + ["baseline=\(pathSegment(baseline))", "candidate=\(pathSegment(candidate))"]
            let data = try await fetch(options, "/api/v1/stats/compare?" + query.joined(separator: "&"))
            let body = try JSONDecoder().decode(Body.self, from: data)
            if options.json {
                printBody(data)
            } else if body.changes.isEmpty {
                print(
                    "no measure changed significantly from \(body.by)=\(body.baseline) to \(body.candidate) "
                        + "(\(body.measures.count) tested)")
            } else {
                func v(_ x: Double) -> String { String(format: x < 1 ? "%.4f" : "%.2f", x) }
                printTable(
                    header: ["MEASURE", body.baseline.uppercased(), body.candidate.uppercased(), "RATIO", "P", "TEST"],
                    rows: body.changes.map {
                        [
                            $0.measure, v($0.baseline), v($0.candidate),
                            $0.ratio.map { String(format: "%.2fx", $0) } ?? "new",
                            String(format: "%.1e", $0.pValue), $0.test,
                        ]
                    })
            }
            let thin = [(body.baseline, body.baselineRuns), (body.candidate, body.candidateRuns)]
                .filter { $0.1 < body.minSamples }
            for (group, runs) in thin {
                printError(
                    "cannot judge \(body.by)=\(group): \(runs) settled runs in the window, "
                        + "the tests need at least \(body.minSamples)")
            }
            if failOnChange && (!body.changes.isEmpty || !thin.isEmpty) { throw Exit.failure }
        }
    }
}
