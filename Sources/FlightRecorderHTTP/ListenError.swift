import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// A listener could not start: its address is in use, not permitted or not on this host.
/// The message names the listener's configuration key and the address, so an operator knows
/// which line to change; `flightrec serve` and `flightrec guard serve` exit 71 with it.
public struct ListenError: Error, CustomStringConvertible, Sendable {
    private enum Code: Sendable {
        case addressInUse, permissionDenied, addressNotAvailable, other(String)
    }

    private let code: Code
    /// The configuration key of the listener, such as `listeners.otlp_grpc`.
    public let key: String
    /// The address as configured (`HOST:PORT` or a socket path).
    public let address: String

    public var description: String {
        let reason: String
        switch code {
        case .addressInUse: reason = "address already in use"
        case .permissionDenied: reason = "permission denied"
        case .addressNotAvailable: reason = "address not available on this host"
        case .other(let m): reason = m
        }
        return "\(key): cannot listen on \(address): \(reason)"
    }

    /// The listen error behind `error` (an NIO `IOError`, possibly wrapped as the `cause` of
    /// another error), or nil when it is not a bind failure.
    public static func from(_ error: any Error, key: String, address: String) -> ListenError? {
        var current: (any Error)? = error
        var depth = 0
        while let e = current, depth < 8 {
            if let io = e as? IOError {
                let code: Code
                switch io.errnoCode {
                case EADDRINUSE: code = .addressInUse
                case EACCES, EPERM: code = .permissionDenied
                case EADDRNOTAVAIL: code = .addressNotAvailable
                default: code = .other(String(cString: strerror(io.errnoCode)))
                }
                return ListenError(code: code, key: key, address: address)
            }
            if let e = e as? ListenError { return e }
            current = Mirror(reflecting: e).children.first { $0.label == "cause" }?.value as? any Error
            depth += 1
        }
        return nil
    }
}
