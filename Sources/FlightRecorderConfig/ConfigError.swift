/// A configuration problem, naming the key and (for a file) the line.
public struct ConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Dotted key path, for example `storage.durability`.
    public var key: String
    /// 1-based line in the config file; nil for command-line flags.
    public var line: Int?
    public var file: String?
    public var reason: String

    public init(key: String, line: Int? = nil, file: String? = nil, reason: String) {
        self.key = key
        self.line = line
        self.file = file
        self.reason = reason
    }

    public var description: String {
        var where_ = ""
        if let file { where_ += file }
        if let line { where_ += (where_.isEmpty ? "line " : ":") + "\(line)" }
        return (where_.isEmpty ? "" : where_ + ": ") + (key.isEmpty ? "" : "\(key): ") + reason
    }
}
