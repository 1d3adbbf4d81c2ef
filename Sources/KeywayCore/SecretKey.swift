import Crypto
import Foundation

/// The format of secret keys: `kw_dev_` or `kw_prod_`, 30 random base62
/// characters (≈ 178 bits), then a 6-character base62 CRC-32 of everything
/// before it.
///
/// The checksum lets the server, and any secret scanner, reject a mistyped or
/// invented key without a lookup. Matching regex: ``pattern``.
public enum SecretKeyFormat {
    /// The regular expression every well-formed key matches.
    public static let pattern = "^kw_(dev|prod)_[0-9A-Za-z]{36}$"
    /// Number of random base62 characters.
    public static let randomLength = 30
    /// Number of base62 characters of the CRC-32 checksum (62⁶ > 2³²).
    public static let checksumLength = 6
    /// Longest possible key, in bytes; anything longer is refused unread.
    public static let maximumLength = prefix(for: .production).utf8.count + randomLength + checksumLength

    /// The prefix that names a key's environment.
    public static func prefix(for environment: Environment) -> String {
        switch environment {
        case .development: "kw_dev_"
        case .production: "kw_prod_"
        }
    }

    /// Why a presented key is not a well-formed Keyway key.
    public enum Malformation: Error, Sendable, Equatable {
        case tooLong
        case unknownPrefix
        case wrongLength
        case invalidCharacters
        case checksumMismatch

        /// A sentence for the caller; it never repeats the key.
        public var explanation: String {
            switch self {
            case .tooLong: "The API key is longer than any Keyway key."
            case .unknownPrefix: "The API key does not start with kw_dev_ or kw_prod_."
            case .wrongLength: "The API key has the wrong length; it may have been truncated when copied."
            case .invalidCharacters: "The API key contains characters that never appear in Keyway keys."
            case .checksumMismatch: "The API key's checksum does not match; it was mistyped or altered."
            }
        }
    }

    /// Checks a presented key's shape and checksum and hashes it.
    ///
    /// Does no lookup: a key that passes may still be unknown or revoked.
    /// - Parameter token: The credential exactly as presented.
    /// - Returns: The environment its prefix names and its digest.
    /// - Throws: A ``Malformation`` saying what is wrong.
    public static func parse(_ token: some StringProtocol) throws(Malformation) -> PresentedSecretKey {
        let bytes = token.utf8
        guard bytes.count <= maximumLength else { throw .tooLong }
        let environment: Environment
        if bytes.starts(with: prefix(for: .development).utf8) {
            environment = .development
        } else if bytes.starts(with: prefix(for: .production).utf8) {
            environment = .production
        } else {
            throw .unknownPrefix
        }
        let prefixLength = prefix(for: environment).utf8.count
        guard bytes.count == prefixLength + randomLength + checksumLength else { throw .wrongLength }
        let body = bytes.dropFirst(prefixLength)
        guard body.allSatisfy(Base62.isDigit) else { throw .invalidCharacters }
        let checked = bytes.prefix(prefixLength + randomLength)
        // The checksum is not a secret, so an early exit here leaks nothing.
        guard Base62.matches(bytes.suffix(checksumLength), UInt64(CRC32.checksum(checked))) else { throw .checksumMismatch }
        return PresentedSecretKey(environment: environment, digest: KeyDigest(hashing: bytes))
    }

    /// The display hint for a key: its prefix, an ellipsis and its last 4 characters.
    static func hint(for plaintext: String, environment: Environment) -> String {
        prefix(for: environment) + "…" + String(plaintext.suffix(4))
    }
}

/// A well-formed key as presented by a caller: only its digest is kept.
public struct PresentedSecretKey: Sendable, Hashable {
    /// The environment named by the key's prefix.
    public let environment: Environment
    /// SHA-256 of the key, the only form in which it is looked up or stored.
    public let digest: KeyDigest
}

/// SHA-256 of a secret key: how keys are stored and looked up.
public struct KeyDigest: Sendable, Hashable {
    // Four words hash and compare faster than a byte array on the hot path.
    private let words: (UInt64, UInt64, UInt64, UInt64)

    /// Hashes a key's bytes.
    public init(hashing bytes: some Sequence<UInt8>) {
        // Hash in place when the bytes are contiguous (they are, for a String's UTF-8): no copy on the hot path.
        let digest =
            bytes.withContiguousStorageIfAvailable { SHA256.hash(data: UnsafeRawBufferPointer($0)) }
            ?? SHA256.hash(data: Array(bytes))
        self.words = digest.withUnsafeBytes { raw in
            (
                raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self),
                raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self),
                raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
            )
        }
    }

    /// Restores a digest from its 32 stored bytes.
    /// - Returns: `nil` unless `bytes` holds exactly 32 bytes.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 32 else { return nil }
        let array = Array(bytes)
        self.words = array.withUnsafeBytes { raw in
            (
                raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self),
                raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self),
                raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
            )
        }
    }

    /// The 32 digest bytes, for storage.
    public var bytes: [UInt8] {
        withUnsafeBytes(of: words) { Array($0) }
    }

    public static func == (lhs: KeyDigest, rhs: KeyDigest) -> Bool {
        lhs.words == rhs.words
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(words.0)
        hasher.combine(words.1)
        hasher.combine(words.2)
        hasher.combine(words.3)
    }
}

/// A freshly generated secret key: the only value that ever holds the plaintext.
///
/// Its `description` shows only the hint, so interpolating it into a log line
/// or an error cannot leak the key; the plaintext must be asked for by name.
public struct GeneratedSecretKey: Sendable, CustomStringConvertible {
    /// The environment the key authenticates to.
    public let environment: Environment
    /// SHA-256 of the key, which is what gets stored.
    public let digest: KeyDigest
    /// `kw_dev_…abcd`: enough to recognise the key, useless to an attacker.
    public let hint: String
    private let plaintext: String

    /// Draws a new random key for `environment`.
    public static func generate(for environment: Environment) -> GeneratedSecretKey {
        let body = SecretKeyFormat.prefix(for: environment) + Base62.randomString(length: SecretKeyFormat.randomLength)
        let checksum = Base62.encode(UInt64(CRC32.checksum(body.utf8)), width: SecretKeyFormat.checksumLength)
        let plaintext = body + String(decoding: checksum, as: UTF8.self)
        return GeneratedSecretKey(
            environment: environment,
            digest: KeyDigest(hashing: plaintext.utf8),
            hint: SecretKeyFormat.hint(for: plaintext, environment: environment),
            plaintext: plaintext
        )
    }

    /// The key itself. Call this only to put the key in the one response that creates it.
    public func revealPlaintext() -> String {
        plaintext
    }

    public var description: String { hint }
}
