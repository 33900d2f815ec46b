import ArgumentParser
import FlightRecorderCollector
import FlightRecorderConfig
import FlightRecorderStorage

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read every segment and index offline and report each damaged region (the daemon must be stopped).",
        discussion:
            "Exits 0 when nothing is damaged, 65 when something is (one line per region), 75 while a daemon holds the data directory."
    )

    @OptionGroup var storage: DataOptions

    func run() async throws {
        let configuration = try storage.load()
        let report: StoreCheck.Report
        do {
            report = try StoreCheck.run(configuration: configuration.storeConfiguration)
        } catch {
            printError(error.message)
            throw error.isLocked ? Exit.tempFail : Exit.cannotCreate
        }
        for finding in report.findings { print(finding) }
        print(
            "checked \(report.segments) segments, \(report.blocks) blocks, \(report.bytes) bytes: "
                + (report.findings.isEmpty ? "no damage" : "\(report.findings.count) problems"))
        if !report.findings.isEmpty { throw Exit.dataError }
    }
}
