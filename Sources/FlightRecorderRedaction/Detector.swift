/// The built-in value detectors. Each masks only the substring it matches.
public enum Detector: String, Sendable, CaseIterable, Hashable {
    case email
    case ssn = "us_ssn"
    case paymentCard = "payment_card"
    case phone
    case jwt
    case authorization = "auth_header"
    case apiKey = "api_key"
    case privateKey = "private_key"
    case urlCredentials = "url_credentials"
    case ipAddress = "ip_address"

    /// On when no configuration says otherwise: everything but IP addresses.
    public static let defaults: Set<Detector> = Set(allCases).subtracting([.ipAddress])
}

/// A match of a detector inside a string, as a byte range of its UTF-8.
public struct DetectorMatch: Equatable, Sendable {
    public var range: Range<Int>
    public var rule: String
}
