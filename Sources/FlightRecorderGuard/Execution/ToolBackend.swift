public import AsyncHTTPClient
public import FlightRecorderGuardPolicy
public import FlightRecorderOTLP
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// What a backend call came to. Only `confirmed` may become `succeeded`.
public enum BackendOutcome: Sendable {
    /// A 2xx answer: the backend confirmed the call. The body is parsed JSON (or a string
    /// when it was not JSON), not yet redacted.
    case confirmed(status: Int, body: JSONValue, operationID: String?)
    /// The backend refused (4xx), or a read failed: nothing happened.
    case failed(status: Int?, reason: String)
    /// The call may or may not have taken effect (timeout, connection lost after sending,
    /// a 5xx from a write): reconciled by an operator.
    case timedOut(reason: String)
    case unknown(status: Int?, reason: String)
}

/// Calls a tool's real HTTP API: the arguments as the JSON body (query parameters for GET),
/// the idempotency key as `Idempotency-Key`, the execution span as `traceparent`, all under
/// the tool's timeout, which covers the whole answer, body included.
public struct ToolBackend: Sendable {
    /// Answers larger than this are refused (the result is returned to the agent and stored).
    public static let maxResponseBytes = 1 << 20
    let client: HTTPClient

    public init(client: HTTPClient) { self.client = client }

    public func call(
        _ tool: Tool, arguments: JSONValue, idempotencyKey: String, traceparent: String, runID: String
    ) async -> BackendOutcome {
        var request: HTTPClientRequest
        do {
            request = try Self.request(tool, arguments: arguments)
        } catch {
            return .failed(status: nil, reason: "cannot build the backend request: \(error)")
        }
        request.headers.add(name: "Idempotency-Key", value: idempotencyKey)
        request.headers.add(name: "traceparent", value: traceparent)
        request.headers.add(name: "X-FlightRec-Run-ID", value: runID)
        let millis = Int64(tool.timeoutSeconds * 1000)
        let write = tool.tier.isWrite
        let client = self.client
        let prepared = request
        do {
            // AsyncHTTPClient's deadline covers connecting (with its retries against a backend
            // that refuses), sending, and reading the whole answer; the sleeping task is only a
            // backstop should the client overrun it.
            return try await withThrowingTaskGroup(of: BackendOutcome.self) { group in
                group.addTask {
                    let response = try await client.execute(prepared, deadline: .now() + .milliseconds(millis))
                    let body = try await response.body.collect(upTo: Self.maxResponseBytes)
                    return Self.outcome(
                        status: Int(response.status.code), headers: response.headers, body: body, tool: tool)
                }
                group.addTask {
                    try await Task.sleep(for: .milliseconds(millis + 1000))
                    return .timedOut(
                        reason: "no complete answer from \(tool.name) within \(Self.describe(tool.timeoutSeconds))")
                }
                let first = try await group.next()!
                group.cancelAll()
                return first
            }
        } catch {
            if Self.neverSent(error) {
                return .failed(status: nil, reason: "backend unreachable: \(Self.summary(error))")
            }
            if error is NIOTooManyBytesError {
                return write
                    ? .unknown(status: nil, reason: "the backend's answer exceeded \(Self.maxResponseBytes) bytes")
                    : .failed(status: nil, reason: "the backend's answer exceeded \(Self.maxResponseBytes) bytes")
            }
            if let e = error as? HTTPClientError, e == .deadlineExceeded || e == .readTimeout {
                return .timedOut(
                    reason: "no complete answer from \(tool.name) within \(Self.describe(tool.timeoutSeconds))")
            }
            return write
                ? .unknown(
                    status: nil,
                    reason: "connection to the backend failed after the request was sent: \(Self.summary(error))")
                : .failed(status: nil, reason: "backend call failed: \(Self.summary(error))")
        }
    }

    static func request(_ tool: Tool, arguments: JSONValue) throws -> HTTPClientRequest {
        if tool.backendMethod == "GET" || tool.backendMethod == "DELETE", case .object(let fields) = arguments {
            guard var components = URLComponents(string: tool.backendURL) else { throw URLError(.badURL) }
            var items = components.queryItems ?? []
            for key in fields.keys.sorted() {
                let v = fields[key]!
                let text = try v.scalarText ?? String(decoding: JSONEncoder().encode(v), as: UTF8.self)
                items.append(URLQueryItem(name: key, value: text))
            }
            components.queryItems = items
            guard let url = components.string else { throw URLError(.badURL) }
            var request = HTTPClientRequest(url: url)
            request.method = HTTPMethod(rawValue: tool.backendMethod)
            return request
        }
        var request = HTTPClientRequest(url: tool.backendURL)
        request.method = HTTPMethod(rawValue: tool.backendMethod)
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: try JSONEncoder().encode(arguments)))
        return request
    }

    static func outcome(status: Int, headers: HTTPHeaders, body: ByteBuffer, tool: Tool) -> BackendOutcome {
        let bytes = Data(body.readableBytesView)
        let json: JSONValue =
            bytes.isEmpty ? .null : ((try? JSONValue.parse(bytes)) ?? .string(String(decoding: bytes, as: UTF8.self)))
        switch status {
        case 200..<300:
            let id =
                json.value(at: tool.operationIDPath)?.scalarText ?? headers.first(name: "Operation-Id")
                ?? headers.first(name: "X-Operation-Id")
            return .confirmed(status: status, body: json, operationID: id)
        case 408, 504:
            return tool.tier.isWrite
                ? .timedOut(reason: "the backend answered \(status): it timed out, the write may have happened")
                : .failed(status: status, reason: "the backend answered \(status)")
        case 500..<600 where tool.tier.isWrite:
            return .unknown(
                status: status, reason: "the backend answered \(status): a failed write may have partly happened")
        default:
            return .failed(status: status, reason: "the backend answered \(status)")
        }
    }

    /// Errors raised before a byte of the request left: the call certainly did not happen.
    static func neverSent(_ error: any Error) -> Bool {
        if error is NIOConnectionError { return true }
        if let e = error as? HTTPClientError, e == .connectTimeout || e == .invalidURL {
            return true
        }
        if let e = error as? IOError, [ECONNREFUSED, ENETUNREACH, EHOSTUNREACH, ENOENT].contains(e.errnoCode) {
            return true
        }
        if let e = error as? ChannelError, case .connectTimeout = e { return true }
        return false
    }

    /// The error without request details (never the body, which may hold arguments).
    static func summary(_ error: any Error) -> String {
        if let e = error as? IOError { return "\(e.description)" }
        if let e = error as? HTTPClientError { return e.shortDescription }
        return String(describing: type(of: error))
    }

    static func describe(_ seconds: Double) -> String {
        seconds < 1 ? "\(Int(seconds * 1000))ms" : (seconds == seconds.rounded() ? "\(Int(seconds))s" : "\(seconds)s")
    }
}

extension HTTPClientError {
    var shortDescription: String {
        switch self {
        case .remoteConnectionClosed: "the backend closed the connection"
        case .connectTimeout: "connect timeout"
        case .readTimeout: "read timeout"
        case .deadlineExceeded: "deadline exceeded"
        default: String(describing: self)
        }
    }
}
