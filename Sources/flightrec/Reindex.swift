import ArgumentParser
import FlightRecorderConfig
import FlightRecorderStorage
import Logging

struct Reindex: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rebuild the index from the segments alone (the daemon must be stopped).")

    @Option(help: "YAML config file; its data_dir and runs.id_keys are used.")
    var config: String?

    @Option(help: "Data directory (default: $FLIGHTREC_DATA, else ~/.local/share/flightrec).")
    var data: String?

    func run() async throws {
        var configuration: DaemonConfiguration
        do {
            configuration = try config.map { try DaemonConfiguration.load(path: $0) } ?? DaemonConfiguration()
        } catch {
            printError("configuration error: \(error)")
            throw Exit.config
        }
        if let data { configuration.dataDirectory = data }
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
