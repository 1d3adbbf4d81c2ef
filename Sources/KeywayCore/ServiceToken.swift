public import Foundation

/// The format of service tokens, the credentials of the operator's own services
/// (gateways, other backends) that ask Keyway whether a key is valid: `kwst_`,
/// 30 random base62 characters (≈ 178 bits), then a 6-character base62 CRC-32
/// of everything before it, as keys have.
///
/// A service token is never an account's key: its prefix differs, it is stored
/// in a table of its own, and the Users API does not accept it.
public enum ServiceTokenFormat {
    /// The regular expression every well-formed service token matches.
    public static let pattern = "^kwst_[0-9A-Za-z]{36}$"
    /// What every service token starts with.
    public static let prefix = "kwst_"
    /// Every service token's length in bytes.
    public static let length = prefix.utf8.count + SecretKeyFormat.randomLength + SecretKeyFormat.checksumLength

    /// The digest of a well-formed service token, or `nil` when `token` is not one
    /// (wrong prefix, length, characters or checksum). Does no lookup.
    public static func digest(of token: some StringProtocol) -> KeyDigest? {
        let bytes = token.utf8
        guard bytes.count == length, bytes.starts(with: prefix.utf8) else { return nil }
        guard bytes.dropFirst(prefix.utf8.count).allSatisfy(Base62.isDigit) else { return nil }
        let checked = bytes.prefix(length - SecretKeyFormat.checksumLength)
        // The checksum is not a secret, so an early exit here leaks nothing.
        guard Base62.matches(bytes.suffix(SecretKeyFormat.checksumLength), UInt64(CRC32.checksum(checked))) else { return nil }
        return KeyDigest(hashing: bytes)
    }
}

/// The identifier of a service token record (not the token), `svc_` followed by 20 base62 characters.
public struct ServiceTokenID: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public let rawValue: String

    /// Wraps an identifier read from storage.
    public init(rawValue: String) {
        self.rawValue = rawValue
    }

    /// Makes a new random identifier.
    public static func generate() -> ServiceTokenID {
        ServiceTokenID(rawValue: "svc_" + Base62.randomString(length: 20))
    }

    public var description: String { rawValue }
}

/// A freshly generated service token: the only value that ever holds its plaintext.
///
/// Its `description` is the hint, so interpolating it into a log line cannot leak it.
public struct GeneratedServiceToken: Sendable, CustomStringConvertible {
    /// SHA-256 of the token, which is what gets stored.
    public let digest: KeyDigest
    /// `kwst_…abcd`.
    public let hint: String
    private let plaintext: String

    /// Draws a new random token.
    public static func generate() -> GeneratedServiceToken {
        let body = ServiceTokenFormat.prefix + Base62.randomString(length: SecretKeyFormat.randomLength)
        let checksum = Base62.encode(UInt64(CRC32.checksum(body.utf8)), width: SecretKeyFormat.checksumLength)
        let plaintext = body + String(decoding: checksum, as: UTF8.self)
        return GeneratedServiceToken(
            digest: KeyDigest(hashing: plaintext.utf8),
            hint: ServiceTokenFormat.prefix + "…" + String(plaintext.suffix(4)),
            plaintext: plaintext
        )
    }

    /// The token itself. Call this only to show it once, to the operator who created it.
    public func revealPlaintext() -> String {
        plaintext
    }

    public var description: String { hint }
}

/// How an operator names the token to revoke: by its id or by its name, never either one,
/// so a name that looks like an id (`svc_…`) cannot revoke another token.
public enum ServiceTokenReference: Sendable, Hashable, CustomStringConvertible {
    case id(ServiceTokenID)
    case name(String)

    public var description: String {
        switch self {
        case .id(let id): "id '\(id)'"
        case .name(let name): "name '\(name)'"
        }
    }
}

/// A stored service token: its digest and hint, never the token.
public struct ServiceTokenRecord: Sendable, Hashable {
    public let id: ServiceTokenID
    /// Unique among active tokens; what the operator revokes it by.
    public let name: String
    public let digest: KeyDigest
    /// `kwst_…abcd`, safe to show and log.
    public let hint: String
    public let createdAt: Date
    public let revokedAt: Date?

    public init(id: ServiceTokenID, name: String, digest: KeyDigest, hint: String, createdAt: Date, revokedAt: Date?) {
        self.id = id
        self.name = name
        self.digest = digest
        self.hint = hint
        self.createdAt = createdAt
        self.revokedAt = revokedAt
    }
}
