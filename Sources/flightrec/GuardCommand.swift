import ArgumentParser
import FlightRecorderConfig
import FlightRecorderGuard
import FlightRecorderGuardPolicy
import FlightRecorderHTTP
import FlightRecorderSQLite
import Foundation
import Logging

/// `flightrec guard`: the policy/executor sidecar.
struct GuardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "guard",
        abstract: "The policy/executor sidecar: agents send it tool calls instead of calling write tools directly.",
        subcommands: [GuardServe.self])
}

struct GuardServe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the sidecar's HTTP JSON API (decide, execute, approvals) on loopback or a Unix socket.",
        discussion:
            "Flags override the config file (see Deploy/guard.yaml). SIGTERM or SIGINT flushes spans and exits 0.")

    @Option(help: "Policy and catalog YAML (see Deploy/guard.yaml). Without it, nothing is allowed.")
    var config: String?

    @Option(help: "Listen address HOST:PORT (default 127.0.0.1:4320).")
    var listen: String?

    @Option(help: "Serve on this Unix socket path instead of TCP (mode 0660).")
    var socket: String?

    @Option(
        help:
            "The collector's OTLP/HTTP URL: a base URL gets /v1/traces appended (default http://127.0.0.1:4318/v1/traces), or off."
    )
    var collector: String?

    @Option(help: "State directory (approvals, idempotency keys, run state); default from the config or ./guard-data.")
    var data: String?

    func run() async throws {
        var configuration: GuardConfiguration
        do {
            configuration = try config.map { try GuardConfiguration.load(path: $0) } ?? GuardConfiguration()
            if listen != nil && socket != nil {
                throw ConfigError(key: "--listen", reason: "give --listen or --socket, not both")
            }
            if let listen {
                guard let hp = HostPort(listen) else {
                    throw ConfigError(key: "--listen", reason: "expected HOST:PORT (got \"\(listen)\")")
                }
                configuration.listen = hp
                configuration.socket = nil
            }
            if let socket { configuration.socket = socket }
            if let collector {
                configuration.collector = try GuardConfiguration.tracesEndpoint(collector, key: "--collector")
            }
            if let data { configuration.dataDirectory = data }
            try configuration.validate()
            if let path = configuration.socket {
                _ = try SocketPath.check(path, key: socket != nil ? "--socket" : "socket")
            }
        } catch let error as ConfigError {
            printError("configuration error: \(error)")
            throw Exit.config
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .info
            return handler
        }
        let logger = Logger(label: "flightrec-guard")
        do {
            try await GuardServer(configuration: configuration, logger: logger).run()
        } catch let error as SQLiteError {
            printError(error.message)
            throw error.isLocked ? Exit.tempFail : Exit.cannotCreate
        } catch let error as ConfigError {
            printError("configuration error: \(error)")
            throw Exit.config
        } catch let error as ListenError {
            printError(error.description)
            throw Exit.cannotListen
        }
    }
}
