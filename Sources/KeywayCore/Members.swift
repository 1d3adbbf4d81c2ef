import Crypto
public import Foundation

/// The identifier of a dashboard member, `mem_` followed by 20 base62 characters.
public struct MemberID: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public let rawValue: String

    /// Wraps an identifier read from storage.
    public init(rawValue: String) {
        self.rawValue = rawValue
    }

    /// Makes a new random member identifier.
    public static func generate() -> MemberID {
        MemberID(rawValue: "mem_" + Base62.randomString(length: 20))
    }

    public var description: String { rawValue }
}

/// What a member may do in an account's dashboard; ``MemberRole/may(_:under:)`` is the rule.
public enum MemberRole: String, Sendable, Hashable, Codable, CaseIterable {
    /// Everything, including members and the account.
    case owner
    /// The development environment's key, webhooks and limits; reads production's.
    case developer
    /// Reads; changes nothing.
    case viewer
}

/// A person as a member of one account: the same person (one id, one email, one
/// password) may belong to several accounts, with a role in each.
public struct Member: Sendable, Hashable {
    public var id: MemberID
    public var accountID: AccountID
    /// Lowercased and trimmed; unique across Keyway, since it is how members sign in.
    public var email: String
    public var role: MemberRole
    public var createdAt: Date
    /// Whether the person signs in with a second factor (TOTP).
    public var hasTwoFactor: Bool

    /// Builds a member value as a store reads it.
    public init(id: MemberID, accountID: AccountID, email: String, role: MemberRole, createdAt: Date, hasTwoFactor: Bool = false) {
        self.id = id
        self.accountID = accountID
        self.email = email
        self.role = role
        self.createdAt = createdAt
        self.hasTwoFactor = hasTwoFactor
    }
}

/// A signed-in browser. The cookie holds a random token; storage holds only its digest.
public struct DashboardSession: Sendable, Hashable {
    /// SHA-256 of the session token.
    public var digest: KeyDigest
    public var memberID: MemberID
    /// The account the member is working in; switching changes it, a removal ends the session.
    public var accountID: AccountID
    /// The password was right and the second factor is still to come: the session opens
    /// nothing but the code page until then, and lasts minutes.
    public var secondFactorPending: Bool
    /// Sent back in every state-changing form and compared in constant time.
    public var csrfToken: String
    public var createdAt: Date
    /// The session ends then, or earlier at sign-out or a password change.
    public var expiresAt: Date

    /// Builds a session value.
    public init(
        digest: KeyDigest,
        memberID: MemberID,
        accountID: AccountID,
        secondFactorPending: Bool = false,
        csrfToken: String,
        createdAt: Date,
        expiresAt: Date
    ) {
        self.digest = digest
        self.memberID = memberID
        self.accountID = accountID
        self.secondFactorPending = secondFactorPending
        self.csrfToken = csrfToken
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }
}

/// A random bearer secret for browsers (session tokens, CSRF tokens): 32 bytes from the CSPRNG, base64url.
public enum BrowserToken {
    /// A new token and the digest under which it is stored.
    public static func generate() -> (token: String, digest: KeyDigest) {
        let token = random()
        return (token, KeyDigest(hashing: token.utf8))
    }

    /// 32 random bytes, base64url without padding (43 characters).
    public static func random() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return Base64URL.encode(Data(bytes))
    }

    /// Compares two secrets in time that tells nothing of either: their SHA-256 digests are
    /// compared (in constant time), so not even a length difference shows.
    public static func constantTimeEquals(_ lhs: String, _ rhs: String) -> Bool {
        SHA256.hash(data: Array(lhs.utf8)) == SHA256.hash(data: Array(rhs.utf8))
    }
}

/// Rules for what people type into the dashboard.
public enum MemberInput {
    /// Shortest password accepted.
    public static let minimumPasswordLength = 10
    /// Longest password accepted; bcrypt reads only the first 72 bytes. Longer ones are
    /// refused everywhere rather than pre-hashed: see docs/architecture.md.
    public static let maximumPasswordBytes = 72
    /// Longest email address accepted (RFC 5321's path limit), counted in bytes so that
    /// what an attacker invents is bounded before it reaches a throttle.
    public static let maximumEmailBytes = 254

    /// Why no member can have `password`, or `nil` when one may: bcrypt stops
    /// reading at a NUL byte and after 72 bytes, so such a password would be
    /// checked as a shorter one (`ab\0cdefghijkl` as `ab`).
    public static func unusablePassword(_ password: String) -> String? {
        if password.utf8.contains(0) { return "A password cannot contain a NUL character." }
        if password.utf8.count > maximumPasswordBytes {
            return "Use at most \(maximumPasswordBytes) bytes (about \(maximumPasswordBytes) letters)."
        }
        return nil
    }

    /// Lowercases and trims an email address and checks its shape.
    public static func email(_ raw: String) throws(KeywayError) -> String {
        let email = raw.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        let parts = email.split(separator: "@", omittingEmptySubsequences: false)
        guard email.utf8.count <= maximumEmailBytes, parts.count == 2, !parts[0].isEmpty, parts[1].contains("."), !parts[1].hasPrefix("."),
            !parts[1].hasSuffix("."), !email.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.value < 0x20 })
        else {
            throw .invalidInput(field: "email", "Enter an email address like name@example.com.")
        }
        return email
    }

    /// Checks a new password's length. Not trimmed: every character counts.
    public static func newPassword(_ password: String) throws(KeywayError) -> String {
        guard password.count >= minimumPasswordLength else {
            throw .invalidInput(field: "password", "Use at least \(minimumPasswordLength) characters.")
        }
        if let problem = unusablePassword(password) { throw .invalidInput(field: "password", problem) }
        return password
    }

    /// Trims and checks a company name.
    public static func companyName(_ raw: String) throws(KeywayError) -> String {
        let name = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !name.isEmpty, name.unicodeScalars.count <= UserInput.maximumLength,
            !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        else {
            throw .invalidInput(
                field: "company",
                "Enter your company's name: 1 to \(UserInput.maximumLength) characters, none of them a control character."
            )
        }
        return name
    }
}

extension KeywayError {
    /// Someone already signs in with this email.
    public static func emailTaken() -> KeywayError {
        KeywayError(.emailTaken, "An account already uses this email address. Sign in instead.", details: ["field": "email"])
    }
}
