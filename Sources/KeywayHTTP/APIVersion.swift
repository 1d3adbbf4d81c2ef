import Foundation

/// A version of the HTTP API. Older versions are accepted and behave as the current one.
public struct APIVersion: RawRepresentable, Sendable, Hashable {
    public let rawValue: String
    public init?(rawValue: String) {
        guard Self.supported.contains(where: { $0.rawValue == rawValue }) else { return nil }
        self.rawValue = rawValue
    }
    private init(known: String) { self.rawValue = known }

    public static let current = APIVersion(known: "2025-09")
    /// Every version a caller may ask for, oldest first.
    public static let supported = [APIVersion(known: "2023-12"), APIVersion(known: "2024-03"), current]
    /// The versions older SDKs put in the path, e.g. `/2023-12/users`.
    static let pathVersions = ["2023-12", "2024-03"]
}
