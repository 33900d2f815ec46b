import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// Options shared by the query commands.
struct APIOptions: ParsableArguments {
    @Option(help: "Query API base URL (default: $FLIGHTREC_API, else http://127.0.0.1:4319).")
    var api: String?

    @Flag(help: "Print the API's JSON instead of the human view.")
    var json = false

    var baseURL: String {
        let url = api ?? ProcessInfo.processInfo.environment["FLIGHTREC_API"] ?? "http://127.0.0.1:4319"
        return url.hasSuffix("/") ? String(url.dropLast()) : url
    }
}

/// GETs a path from the query API; maps failures to the documented exit codes.
func fetch(_ options: APIOptions, _ path: String) async throws -> Data {
    var request = HTTPClientRequest(url: options.baseURL + path)
    request.method = .GET
    let response: HTTPClientResponse
    let body: ByteBuffer
    do {
        response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        body = try await response.body.collect(upTo: 256 << 20)
    } catch {
        printError("cannot reach the daemon at \(options.baseURL): \(error)")
        throw Exit.unavailable
    }
    let data = Data(body.readableBytesView)
    guard response.status.code == 200 else {
        let message = (try? JSONDecoder().decode(APIErrorBody.self, from: data).error) ?? "HTTP \(response.status.code)"
        printError(message)
        switch response.status.code {
        case 404: throw Exit.notFound
        case 400..<500: throw Exit.usage
        default: throw Exit.unavailable
        }
    }
    return data
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
