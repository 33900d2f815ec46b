import FlightRecorderCollector
import GRPCCore
import GRPCNIOTransportHTTP2Posix

extension LoadGen {
    /// Drives OTLP/gRPC `Export` calls: one client (one HTTP/2 connection) per worker, as
    /// each OpenTelemetry SDK exporter holds one channel, so the load matches `drive`'s
    /// HTTP/1.1 connections one for one.
    func driveGRPC(
        target: String, requests: RequestSource, phases: [(seconds: Double?, limit: Int?, monitor: Monitor?)]
    ) async throws -> Result {
        let parts = target.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else {
            throw LoadGenError("--grpc-target: expected HOST:PORT")
        }
        let host = String(parts[0])
        let clients = try (0..<connections).map { _ in
            GRPCClient(
                transport: try .http2NIOPosix(target: .ipv4(address: host, port: port), transportSecurity: .plaintext))
        }
        return try await withThrowingTaskGroup(of: Result?.self) { group in
            for client in clients {
                group.addTask {
                    try await client.runConnections(); return nil
                }
            }
            var result = Result()
            for phase in phases {
                result = try await driveGRPC(
                    clients: clients, requests: requests, seconds: phase.seconds, limit: phase.limit,
                    monitor: phase.monitor)
            }
            for client in clients { client.beginGracefulShutdown() }
            for try await _ in group {}
            return result
        }
    }

    private func driveGRPC(
        clients: [GRPCClient<HTTP2ClientTransport.Posix>], requests: RequestSource, seconds: Double?, limit: Int?,
        monitor: Monitor?
    ) async throws -> Result {
        try await load(seconds: seconds, limit: limit, monitor: monitor) { worker, i in
            let (body, spans) = requests.request(i)
            let ok = try await clients[worker].unary(
                request: ClientRequest(message: body), descriptor: OTLPGRPCService.method,
                serializer: RawBytesSerializer(), deserializer: RawBytesDeserializer(), options: .defaults
            ) { response in (try? response.message) != nil }
            return Sent(ok: ok, bytes: body.count, spans: spans, status: nil)
        }
    }
}

struct LoadGenError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
