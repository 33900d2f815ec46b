import ArgumentParser
import FlightRecorderCollector
import FlightRecorderStorage
import Foundation

struct Runs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List recent runs, newest first.")

    @OptionGroup var options: APIOptions

    @Option(help: "Only runs that started at or after this: Unix ns, RFC 3339, or a duration ago (15m, 2h, 7d).")
    var since: String?

    @Option(help: "Only runs that started before this (same forms as --since).")
    var until: String?

    @Option(help: "At most this many runs (1-10000).")
    var limit = 50

    func run() async throws {
        var query = ["limit=\(limit)"]
        if let since { query.append("since=\(pathSegment(since))") }
        if let until { query.append("until=\(pathSegment(until))") }
        let data = try await fetch(options, "/api/v1/runs?" + query.joined(separator: "&"))
        if options.json {
            printBody(data)
            return
        }
        let page = try JSONDecoder().decode(RunsPage.self, from: data)
        let header = ["RUN", "START", "DURATION", "SPANS", "ERRORS", "AGENT", "TENANT"]
        let rows = page.runs.map { r in
            [
                r.runID + (r.provisional ? " (trace)" : ""), Format.time(nanos: r.startNanos),
                Format.duration(nanos: r.durationNanos), String(r.spanCount), String(r.errorCount),
                r.agent ?? "-", r.tenant ?? "-",
            ]
        }
        printTable(header: header, rows: rows)
        if rows.isEmpty { print("(no runs)") }
    }
}

func printTable(header: [String], rows: [[String]]) {
    var widths = header.map(\.count)
    for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in
            i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
        }
        .joined(separator: "  ")
    }
    print(line(header))
    for row in rows { print(line(row)) }
}
