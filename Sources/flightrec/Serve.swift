import ArgumentParser
import FlightRecorderConfig
import FlightRecorderServer
import FlightRecorderStorage
import Foundation
import Logging

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the collector daemon: OTLP/HTTP receiver and query API.",
        discussion: "Flags override the config file. SIGTERM or SIGINT drains, fsyncs and exits 0.")

    @OptionGroup var storage: DataOptions

    @Option(name: .customLong("otlp-http"), help: "OTLP/HTTP listen address HOST:PORT (default 127.0.0.1:4318).")
    var otlpHTTP: String?

    @Option(help: "Query API listen address HOST:PORT (default 127.0.0.1:4319).")
    var api: String?

    @Option(name: .customLong("otlp-http-socket"), help: "Also serve OTLP/HTTP on this Unix socket path (mode 0660).")
    var otlpHTTPSocket: String?

    func run() async throws {
        var configuration = try storage.load()
        do {
            if let otlpHTTP {
                guard let hp = HostPort(otlpHTTP) else {
                    throw ConfigError(key: "--otlp-http", reason: "expected HOST:PORT (got \"\(otlpHTTP)\")")
                }
                configuration.otlpHTTP = hp
            }
            if let api {
                guard let hp = HostPort(api) else {
                    throw ConfigError(key: "--api", reason: "expected HOST:PORT (got \"\(api)\")")
                }
                configuration.api = hp
            }
            if let otlpHTTPSocket { configuration.otlpHTTPSocket = otlpHTTPSocket }
            try configuration.validate()
            if let path = configuration.otlpHTTPSocket {
                _ = try SocketPath.check(path, key: otlpHTTPSocket != nil ? "--otlp-http-socket" : "listeners.otlp_http_socket")
            }
        } catch let error as ConfigError {
            printError("configuration error: \(error)")
            throw Exit.config
        }
        let level = Logger.Level(rawValue: configuration.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "flightrec")
        logger.notice(
            "starting", metadata: ["data_dir": "\(configuration.dataDirectory)", "durability": "\(configuration.durability)"])
        do {
            try await Daemon(configuration: configuration, configPath: storage.config, logger: logger).run()
        } catch let error as StorageError {
            printError(error.message)
            throw error.isLocked ? Exit.tempFail : Exit.cannotCreate
        }
    }
}
