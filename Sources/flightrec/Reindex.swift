import ArgumentParser
import FlightRecorderCollector
import FlightRecorderConfig
import FlightRecorderStorage
import Logging

struct Reindex: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rebuild the index from the segments alone (the daemon must be stopped).")

    @OptionGroup var storage: DataOptions

    func run() async throws {
        let configuration = try storage.load()
        let logger = Logger(label: "flightrec.reindex")
        do {
            let s = try Reindexer.rebuild(configuration: configuration.storeConfiguration, logger: logger)
            print(
                "reindexed \(s.segments) segments, \(s.blocks) blocks, \(s.spans) spans"
                    + (s.truncatedBytes > 0 ? "; truncated \(s.truncatedBytes) torn bytes" : "")
                    + (s.corruptBytes > 0 ? "; skipped \(s.corruptBytes) damaged bytes" : ""))
        } catch {
            printError(error.message)
            throw error.isLocked ? Exit.tempFail : Exit.cannotCreate
        }
    }
}
