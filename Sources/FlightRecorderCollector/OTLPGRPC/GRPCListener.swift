import FlightRecorderConfig
import FlightRecorderHTTP
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

/// One OTLP/gRPC listener (TCP, optionally TLS, or a Unix socket) run as a lifecycle service.
/// On graceful shutdown new exports are answered UNAVAILABLE and the server stops accepting
/// streams; accepted requests finish before the store closes.
struct GRPCListener: Service {
    enum Address {
        case tcp(HostPort)
        case unix(path: String, mode: Int)
    }

    let address: Address
    let tls: TLSFiles?
    let ingest: IngestService
    let listener: String
    let logger: Logger

    func run() async throws {
        let socketAddress: GRPCNIOTransportCore.SocketAddress
        switch address {
        case .tcp(let hp):
            let host = hp.host == "localhost" ? "127.0.0.1" : hp.host
            socketAddress = host.contains(":") ? .ipv6(host: host, port: hp.port) : .ipv4(host: host, port: hp.port)
        case .unix(let path, _):
            socketAddress = .unixDomainSocket(path: path)
        }
        let security: HTTP2ServerTransport.Posix.TransportSecurity =
            if let tls, case .tcp = address {
                .tls(
                    certificateChain: [.file(path: tls.certificateChain, format: .pem)],
                    privateKey: .file(path: tls.privateKey, format: .pem))
            } else {
                .plaintext
            }
        let maxBytes = ingest.maxRequestBytes
        let transport = HTTP2ServerTransport.Posix(
            address: socketAddress, transportSecurity: security,
            config: .defaults { config in
                // The guard inflates gzip and deflate itself and hands grpc-swift identity
                // messages; the algorithms stay enabled so responses advertise them.
                config.compression.enabledAlgorithms = .all
                // The guard answers RESOURCE_EXHAUSTED past this ceiling (after decompression,
                // so a gzip bomb stops there). The ceiling sits above the configured limit so
                // that ordinary oversized messages reach the service, which names the limit.
                let ceiling = OTLPGRPCService.transportCeiling(maxBytes)
                config.rpc.maxRequestPayloadSize = ceiling
                config.channelDebuggingCallbacks.onAcceptHTTP2Stream = { stream in
                    stream.eventLoop.makeCompletedFuture {
                        try stream.pipeline.syncOperations.addHandler(
                            GRPCRequestGuard(limit: ceiling), position: .first)
                    }
                }
                // Bounds what one connection can make the transport buffer before the memory
                // budget sees it (the transport's default is unlimited).
                config.http2.maxConcurrentStreams = 100
            })
        let server = GRPCServer(transport: transport, services: [OTLPGRPCService(ingest: ingest, logger: logger)])
        do {
            try await serve(server)
        } catch {
            throw Self.listenError(error, key: "listeners.\(listener)", address: address) ?? error
        }
    }

    /// The bind failure behind a gRPC server error (the transport wraps it as an RPCError's cause).
    static func listenError(_ error: any Error, key: String, address: Address) -> ListenError? {
        let shown: String
        switch address {
        case .tcp(let hp): shown = hp.description
        case .unix(let path, _): shown = path
        }
        var current: (any Error)? = error
        while let e = current {
            if let found = ListenError.from(e, key: key, address: shown) { return found }
            current = (e as? RPCError)?.cause
        }
        return nil
    }

    private func serve(_ server: GRPCServer<HTTP2ServerTransport.Posix>) async throws {
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await server.serve() }
                // When binding fails, `listeningAddress` throws a generic "no listening address";
                // `serve()` throws the bind error itself, which `listenError` then names.
                guard let bound = try? await server.listeningAddress else { return }
                switch address {
                case .unix(let path, let mode):
                    ListenerAnnouncement.announce(.unix(path: path, mode: mode), name: listener, logger: logger)
                case .tcp:
                    ListenerAnnouncement.announce(
                        .tcp(address: Self.describe(bound), tls: tls != nil), name: listener, logger: logger)
                }
            }
        } onGracefulShutdown: {
            ingest.beginDraining()
            server.beginGracefulShutdown()
        }
    }

    static func describe(_ address: GRPCNIOTransportCore.SocketAddress) -> String {
        if let v4 = address.ipv4 { return "\(v4.host):\(v4.port)" }
        if let v6 = address.ipv6 { return "[\(v6.host)]:\(v6.port)" }
        if let uds = address.unixDomainSocket { return uds.path }
        return "\(address)"
    }
}
