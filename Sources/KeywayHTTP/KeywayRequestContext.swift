public import Foundation
public import Hummingbird
public import KeywayCore
import Logging
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Hummingbird has an `Environment` too; in this module the word means Keyway's.
typealias Environment = KeywayCore.Environment

/// The context of every request: its id, API version and, once the
/// authenticator has run, the key that authenticated it.
public struct KeywayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Echoed from a sane incoming `x-request-id`, otherwise generated.
    public var requestID: String
    /// The API version the caller asked for (path segment or `x-api-version`).
    public var apiVersion: APIVersion = .current
    /// Set by ``SecretKeyAuthenticator``; read it through ``AuthenticatedRequestContext``.
    public var authenticatedKey: AuthenticatedKey?

    /// The peer's address; formatted only when asked (the dashboard's throttling),
    /// not on every API request.
    private let remoteSocketAddress: SocketAddress?

    /// The client's IP address, for throttling; "unknown" when the transport has none.
    public var remoteAddress: String {
        remoteSocketAddress?.ipAddress ?? "unknown"
    }

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.requestID = ""
        self.remoteSocketAddress = source.channel.remoteAddress
    }

    public var responseEncoder: JSONEncoder { KeywayJSON.encoder }
}

/// The context of handlers behind the authenticator, where the key is not optional,
/// so a handler cannot forget to check it.
public struct AuthenticatedRequestContext: ChildRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let requestID: String
    public let apiVersion: APIVersion
    /// The key that authenticated the request, and so its account and environment.
    public let key: AuthenticatedKey

    public init(context: KeywayRequestContext) throws {
        guard let key = context.authenticatedKey else {
            // Only reachable if a route is registered without the authenticator.
            throw KeywayError(.missingAPIKey, "This endpoint needs 'Authorization: Bearer <API key>'.")
        }
        self.coreContext = context.coreContext
        self.requestID = context.requestID
        self.apiVersion = context.apiVersion
        self.key = key
    }

    public var responseEncoder: JSONEncoder { KeywayJSON.encoder }

    /// The environment every user operation of this request is confined to.
    public var environmentID: EnvironmentID { key.environmentID }
}

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

enum KeywayJSON {
    /// Shared because building an encoder per response shows up on the hot path.
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        // Sorted keys make responses byte-for-byte reproducible for docs and tests.
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(timestamp(date))
        }
        return encoder
    }()

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-29T13:00:00.000Z`.
    ///
    /// Written by hand: Foundation's ISO 8601 format style costs more than the
    /// rest of a typical response.
    static func timestamp(_ date: Date) -> String {
        // Rounded as the stores round: a stored 999 ms must not print as 998.
        let milliseconds = date.keywayMilliseconds
        var seconds = time_t((milliseconds - ((milliseconds % 1000) + 1000) % 1000) / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var bytes = [UInt8]()
        bytes.reserveCapacity(24)
        func append(_ value: Int, digits: Int) {
            var divisor = 1
            for _ in 1..<digits { divisor *= 10 }
            var remaining = value
            while divisor > 0 {
                bytes.append(UInt8(ascii: "0") + UInt8(remaining / divisor % 10))
                remaining %= divisor
                divisor /= 10
            }
        }
        append(Int(parts.tm_year) + 1900, digits: 4)
        bytes.append(UInt8(ascii: "-"))
        append(Int(parts.tm_mon) + 1, digits: 2)
        bytes.append(UInt8(ascii: "-"))
        append(Int(parts.tm_mday), digits: 2)
        bytes.append(UInt8(ascii: "T"))
        append(Int(parts.tm_hour), digits: 2)
        bytes.append(UInt8(ascii: ":"))
        append(Int(parts.tm_min), digits: 2)
        bytes.append(UInt8(ascii: ":"))
        append(Int(parts.tm_sec), digits: 2)
        bytes.append(UInt8(ascii: "."))
        append(Int((milliseconds % 1000 + 1000) % 1000), digits: 3)
        bytes.append(UInt8(ascii: "Z"))
        return String(decoding: bytes, as: UTF8.self)
    }
}
