import Foundation
public import HTTPTypes
public import Hummingbird

/// `Server-Timing` (W3C Server Timing) in milliseconds, for operators and the benchmarks,
/// which read the server's own time instead of the client's round trip.
public enum ServerTiming {
    public static let header = HTTPField.Name("Server-Timing")!

    /// `name;dur=<ms>` for `duration`.
    public static func entry(_ name: String, _ duration: Duration) -> String {
        let ms = Double(duration.components.seconds) * 1e3 + Double(duration.components.attoseconds) / 1e15
        return name + ";dur=" + String(format: "%.3f", ms)
    }

    /// Adds an entry before any the response already carries (`app` first, then `backend`).
    public static func add(_ entry: String, to response: inout Response) {
        response.headers[header] = response.headers[header].map { entry + ", " + $0 } ?? entry
    }
}
