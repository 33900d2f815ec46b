import ArgumentParser
import FlightRecorderCollector
import FlightRecorderConfig
import FlightRecorderHTTP
import FlightRecorderStorage
import Foundation
import Logging
import NIOSSL

#if canImport(Glibc)
import Glibc

/// glibc's `mallopt` (`<malloc.h>`, which the Glibc module does not export).
@_silgen_name("mallopt") func mallopt(_ parameter: Int32, _ value: Int32) -> Int32
/// `M_MMAP_THRESHOLD` in `<malloc.h>`.
let mmapThreshold: Int32 = -3
#endif

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the collector daemon: OTLP/gRPC and OTLP/HTTP receivers and the query API.",
        discussion: "Flags override the config file. SIGTERM or SIGINT drains, fsyncs and exits 0.")

    @OptionGroup var storage: DataOptions

    @Option(
        name: .customLong("otlp-grpc"), help: "OTLP/gRPC listen address HOST:PORT, or off (default 127.0.0.1:4317).")
    var otlpGRPC: String?

    @Option(
        name: .customLong("otlp-http"), help: "OTLP/HTTP listen address HOST:PORT, or off (default 127.0.0.1:4318).")
    var otlpHTTP: String?

    @Option(name: .customLong("otlp-grpc-socket"), help: "Also serve OTLP/gRPC on this Unix socket path (mode 0660).")
    var otlpGRPCSocket: String?

    @Option(help: "Query API listen address HOST:PORT (default 127.0.0.1:4319).")
    var api: String?

    @Option(name: .customLong("otlp-http-socket"), help: "Also serve OTLP/HTTP on this Unix socket path (mode 0660).")
    var otlpHTTPSocket: String?

    func run() async throws {
        #if canImport(Glibc)
        // A scrape of many series builds buffers of tens of MiB. glibc raises its mmap
        // threshold to the largest block freed, after which such buffers come from the heap
        // and stay in RSS once freed; a fixed threshold keeps blocks over 1 MiB mapped, so
        // their pages go back to the system when the response has been sent.
        _ = mallopt(mmapThreshold, 1 << 20)
        #endif
        var configuration = try storage.load()
        do {
            if let otlpGRPC { configuration.otlpGRPC = try Self.listener(otlpGRPC, flag: "--otlp-grpc") }
            if let otlpHTTP { configuration.otlpHTTP = try Self.listener(otlpHTTP, flag: "--otlp-http") }
            if let api {
                guard let hp = HostPort(api) else {
                    throw ConfigError(key: "--api", reason: "expected HOST:PORT (got \"\(api)\")")
                }
                configuration.api = hp
            }
            if let otlpHTTPSocket { configuration.otlpHTTPSocket = otlpHTTPSocket }
            if let otlpGRPCSocket { configuration.otlpGRPCSocket = otlpGRPCSocket }
            try configuration.validate()
            if let path = configuration.otlpHTTPSocket {
                _ = try SocketPath.check(
                    path, key: otlpHTTPSocket != nil ? "--otlp-http-socket" : "listeners.otlp_http_socket")
            }
            if let path = configuration.otlpGRPCSocket {
                _ = try SocketPath.check(
                    path, key: otlpGRPCSocket != nil ? "--otlp-grpc-socket" : "listeners.otlp_grpc_socket")
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
            "starting",
            metadata: ["data_dir": "\(configuration.dataDirectory)", "durability": "\(configuration.durability)"])
        do {
            try await Daemon(configuration: configuration, configPath: storage.config, logger: logger).run()
        } catch let error as StorageError {
            printError(error.message)
            throw error.isLocked ? Exit.tempFail : Exit.cannotCreate
        } catch let error as ListenError {
            printError(error.description)
            throw Exit.cannotListen
        } catch let error as ConfigError {
            printError("configuration error: \(error)")
            throw Exit.config
        } catch let error as NIOSSLError {
            printError("configuration error: listeners.tls: cannot load the certificate or key: \(error)")
            throw Exit.config
        }
    }

    static func listener(_ text: String, flag: String) throws(ConfigError) -> HostPort? {
        if text.lowercased() == "off" { return nil }
        guard let hp = HostPort(text) else {
            throw ConfigError(key: flag, reason: "expected HOST:PORT or off (got \"\(text)\")")
        }
        return hp
    }
}
