public import Foundation

/// The identifier of an account, `acct_` followed by 20 base62 characters.
public struct AccountID: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public let rawValue: String

    /// Wraps an identifier read from storage or from a request.
    public init(rawValue: String) {
        self.rawValue = rawValue
    }

    /// Makes a new random account identifier.
    public static func generate() -> AccountID {
        AccountID(rawValue: "acct_" + Base62.randomString(length: 20))
    }

    public var description: String { rawValue }
}

/// The identifier of a secret key record (not the key itself), `key_` followed by 20 base62 characters.
public struct SecretKeyID: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public let rawValue: String

    /// Wraps an identifier read from storage.
    public init(rawValue: String) {
        self.rawValue = rawValue
    }

    /// Makes a new random key record identifier.
    public static func generate() -> SecretKeyID {
        SecretKeyID(rawValue: "key_" + Base62.randomString(length: 20))
    }

    public var description: String { rawValue }
}

/// The identifier of a user: 24 lowercase hexadecimal digits, like the
/// ObjectIds of the API Keyway is compatible with.
///
/// The first 8 digits are the creation time in seconds, so identifiers sort
/// roughly by creation; the other 16 are random.
public struct UserID: RawRepresentable, Sendable, Hashable, Codable, Comparable, CustomStringConvertible {
    public let rawValue: String

    /// Wraps an identifier read from storage.
    public init(rawValue: String) {
        self.rawValue = rawValue
    }

    /// Parses an identifier received from a client.
    ///
    /// - Returns: `nil` unless `string` is exactly 24 lowercase hex digits.
    public init?(validating string: some StringProtocol) {
        guard string.utf8.count == 24, string.utf8.allSatisfy({ Self.isLowercaseHexDigit($0) }) else {
            return nil
        }
        self.rawValue = String(string)
    }

    /// Makes a new identifier stamped with `date`.
    public static func generate(at date: Date = Date()) -> UserID {
        let seconds = UInt32(clamping: Int64(date.timeIntervalSince1970))
        let random = UInt64.random(in: .min ... .max)
        return UserID(rawValue: hex(UInt64(seconds), digits: 8) + hex(random, digits: 16))
    }

    public var description: String { rawValue }

    public static func < (lhs: UserID, rhs: UserID) -> Bool {
        lhs.rawValue < rhs.rawValue
    }

    private static func isLowercaseHexDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
    }

    private static func hex(_ value: UInt64, digits: Int) -> String {
        let string = String(value, radix: 16)
        return String(repeating: "0", count: max(0, digits - string.count)) + string
    }
}
