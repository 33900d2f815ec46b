import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

/// Options shared by the query commands.
struct APIOptions: ParsableArguments {
    @Option(help: "Query API base URL (default: $FLIGHTREC_API, else http://127.0.0.1:4319).")
    var api: String?

    @Flag(help: "Print the API's JSON instead of the human view.")
    var json = false

    @Option(help: "Bearer token for the query API (default: $FLIGHTREC_TOKEN). Prefer the variable: flags show in ps.")
    var token: String?

    @Option(help: "CA certificate (PEM) to trust for an https:// API (default: $FLIGHTREC_CACERT).")
    var cacert: String?

    var bearer: String? {
        let t = token ?? ProcessInfo.processInfo.environment["FLIGHTREC_TOKEN"]
        return t.flatMap { $0.isEmpty ? nil : $0 }
    }

    var caFile: String? { cacert ?? ProcessInfo.processInfo.environment["FLIGHTREC_CACERT"] }

    var baseURL: String {
        let url = api ?? ProcessInfo.processInfo.environment["FLIGHTREC_API"] ?? "http://127.0.0.1:4319"
        return url.hasSuffix("/") ? String(url.dropLast()) : url
    }
}

/// GETs a path from the query API; maps failures to the documented exit codes.
func fetch(_ options: APIOptions, _ path: String) async throws -> Data {
    try await send(options, .GET, path, responseLimit: 256 << 20)
}

/// Sends `method` to a path of the query API with a JSON body (or none), reading at most
/// `responseLimit` bytes of the answer; maps failures to the documented exit codes.
func send(
    _ options: APIOptions, _ method: HTTPMethod, _ path: String, json: Data? = nil, responseLimit: Int = 16 << 20
) async throws -> Data {
    try await withAPIClient(options, path) { client, request in
        var request = request
        request.method = method
        if let json {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: json))
        }
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            response = try await client.execute(request, timeout: .seconds(30))
            body = try await response.body.collect(upTo: responseLimit)
        } catch {
            printError("cannot reach the daemon at \(options.baseURL): \(error)")
            throw Exit.unavailable
        }
        let data = Data(body.readableBytesView)
        try checkStatus(response, body: data)
        return data
    }
}

/// Runs `body` with a client for the query API (trusting `--cacert` when given) and the GET
/// of `path` with the bearer token; shuts a client of its own down afterwards.
func withAPIClient<T>(
    _ options: APIOptions, _ path: String, _ body: (HTTPClient, HTTPClientRequest) async throws -> T
) async throws -> T {
    var request = HTTPClientRequest(url: options.baseURL + path)
    request.method = .GET
    if let token = options.bearer { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
    var client = HTTPClient.shared
    if let ca = options.caFile {
        var tls = TLSConfiguration.makeClientConfiguration()
        do {
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
        } catch {
            printError("cannot read the CA certificate \(ca): \(error)")
            throw Exit.usage
        }
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
    }
    do {
        let result = try await body(client, request)
        if client !== HTTPClient.shared { try? await client.shutdown() }
        return result
    } catch {
        if client !== HTTPClient.shared { try? await client.shutdown() }
        throw error
    }
}

/// A non-200 answer: its message printed, the documented exit code thrown.
func checkStatus(_ response: HTTPClientResponse, body: Data) throws {
    guard !(200..<300).contains(response.status.code) else { return }
    printError((try? JSONDecoder().decode(APIErrorBody.self, from: body).error) ?? "HTTP \(response.status.code)")
    switch response.status.code {
    case 404: throw Exit.notFound
    case 401, 403: throw Exit.noPermission
    case 400..<500: throw Exit.usage
    default: throw Exit.unavailable
    }
}

struct APIErrorBody: Decodable {
    var error: String
}

/// Percent-encodes one path segment.
func pathSegment(_ s: String) -> String {
    var allowed = CharacterSet.urlPathAllowed
    allowed.remove(charactersIn: "/?#")
    return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
}

enum Format {
    static func duration(nanos: Int64) -> String {
        let n = Double(nanos)
        switch nanos {
        case ..<1_000: return "\(nanos)ns"
        case ..<1_000_000: return String(format: "%.1fµs", n / 1e3)
        case ..<1_000_000_000: return String(format: "%.1fms", n / 1e6)
        default: return String(format: "%.2fs", n / 1e9)
        }
    }

    static func time(nanos: Int64) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: Date(timeIntervalSince1970: Double(nanos) / 1e9))
    }
}
