import ArgumentParser
import FlightRecorderConfig

/// `--config` and `--data`, shared by the commands that open the data directory.
struct DataOptions: ParsableArguments {
    @Option(help: "YAML config file (see Deploy/flightrec.yaml).")
    var config: String?

    @Option(help: "Data directory (default: $FLIGHTREC_DATA, else ~/.local/share/flightrec).")
    var data: String?

    /// The config file (or the defaults) with `--data` applied; exits 78 on a bad file.
    func load() throws -> DaemonConfiguration {
        var configuration: DaemonConfiguration
        do {
            configuration = try config.map { try DaemonConfiguration.load(path: $0) } ?? DaemonConfiguration()
        } catch {
            printError("configuration error: \(error)")
            throw Exit.config
        }
        if let data { configuration.dataDirectory = data }
        return configuration
    }
}
