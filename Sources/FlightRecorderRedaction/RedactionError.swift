/// A policy that cannot run. The daemon refuses to start (or keeps the old policy on reload).
public struct RedactionError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The rule, detector or rule set at fault.
    public var rule: String
    public var reason: String

    public init(rule: String, reason: String) {
        self.rule = rule
        self.reason = reason
    }

    public var description: String { "redaction rule \"\(rule)\": \(reason)" }
}
