import Foundation
public import Hummingbird

/// A request's query string decoded as `application/x-www-form-urlencoded` (WHATWG URL
/// standard): `+` is a space and `%XX` a byte, so `policy.outcome+%3D+%22blocked%22` reads
/// `policy.outcome = "blocked"`, as Python's `urlencode`, HTML forms and curl's
/// `--data-urlencode -G` send it. Hummingbird's `queryParameters` leaves `+` as it is.
public struct FormQuery: Sendable {
    private let pairs: [(name: String, value: String)]

    public init(_ query: String) {
        pairs = query.split(separator: "&", omittingEmptySubsequences: true).map { part in
            let nameValue = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (Self.decode(nameValue[0]), nameValue.count > 1 ? Self.decode(nameValue[1]) : "")
        }
    }

    /// The first value of `name`, decoded; nil when absent.
    public subscript(_ name: String) -> String? { pairs.first { $0.name == name }?.value }

    /// Every value of a repeated parameter, in order.
    public func values(_ name: String) -> [String] { pairs.filter { $0.name == name }.map(\.value) }

    /// `+` to space, then percent-decoding; a malformed escape is kept as written.
    static func decode(_ text: Substring) -> String {
        let spaced = text.replacingOccurrences(of: "+", with: " ")
        return spaced.removingPercentEncoding ?? spaced
    }
}

extension Request {
    /// The query string decoded as a form (see `FormQuery`).
    public var formQuery: FormQuery { FormQuery(uri.query ?? "") }
}
