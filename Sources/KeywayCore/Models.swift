public import Foundation

/// A customer company. It owns a development and a production environment.
public struct Account: Sendable, Hashable, Codable {
    public var id: AccountID
    /// The company's name.
    public var name: String
    public var createdAt: Date
    /// The account's rules for its members.
    public var policy: AccountPolicy

    /// Builds an account value; use ``KeywayStore/createAccount(name:at:)`` to create one.
    public init(id: AccountID, name: String, createdAt: Date, policy: AccountPolicy = AccountPolicy()) {
        self.id = id
        self.name = name
        self.createdAt = createdAt
        self.policy = policy
    }
}

/// Why a secret key stopped working.
public enum RevocationReason: String, Sendable, Hashable, Codable {
    /// A new key was generated for the same environment.
    case regenerated
    /// The key was rolled and its grace period ended (or a later roll ended it early).
    case expiredAfterRoll = "expired_after_roll"
    /// The key was reported leaked (`POST /leaked-keys`, `keyway keys report-leak`) and revoked at once.
    case leaked
}

/// Where a leaked key was found, as the report says (GitHub's secret-scanning payload).
public struct LeakReport: Sendable, Hashable {
    /// The public address of the leak, e.g. a file on GitHub.
    public var url: String?
    /// Where it was found: `content`, `commit`, `pull_request_description`, `npm`…
    public var source: String?
    /// The scanner's name for the secret's type.
    public var type: String?

    public init(url: String? = nil, source: String? = nil, type: String? = nil) {
        // Bounded: a report can hold anything its sender likes.
        self.url = url.map { String($0.prefix(2048)) }
        self.source = source.map { String($0.prefix(128)) }
        self.type = type.map { String($0.prefix(128)) }
    }

    /// The audit entry's details.
    public var details: [String: String] {
        var details: [String: String] = ["revocationReason": RevocationReason.leaked.rawValue]
        if let url { details["url"] = url }
        if let source { details["source"] = source }
        if let type { details["type"] = type }
        return details
    }
}

/// What a leak report did to one key.
public enum LeakedKeyOutcome: Sendable, Hashable {
    /// No key has that digest.
    case unknown
    /// A real key, revoked before (by a generation, a grace's end or an earlier report).
    case alreadyRevoked(SecretKeyRecord)
    /// The key was active or in its grace, and is now revoked as leaked.
    case revoked(SecretKeyRecord, KeyRevocation)
}

/// What a generation does to the key it replaces.
public enum KeyRetirement: Sendable, Hashable {
    /// Revokes it at once (Regenerate, `keys generate`): the safe answer to a leak.
    case revokeNow
    /// Rolls it: it keeps working until `until`, then is refused as `expired_after_roll`.
    /// A key still in an earlier roll's grace is revoked at once: one key in grace at most.
    case roll(until: Date)

    /// When, and why, a key being replaced at `date` stops working: the current key as this
    /// retirement says, a key still in an earlier grace (`keyInGrace`) at once. A stored
    /// change calls this, so every store records the same thing.
    public func revocation(ofKeyInGrace keyInGrace: Bool, at date: Date) -> (until: Date, reason: RevocationReason) {
        switch self {
        case .revokeNow: (date, .regenerated)
        case .roll(let until): (keyInGrace ? date : max(until, date).keywayPrecision, .expiredAfterRoll)
        }
    }
}

/// What is stored about a secret key: never the key, only its digest and hint.
public struct SecretKeyRecord: Sendable, Hashable {
    public var id: SecretKeyID
    public var environmentID: EnvironmentID
    public var digest: KeyDigest
    /// `kw_dev_…abcd`.
    public var hint: String
    public var createdAt: Date
    /// Who generated it, e.g. `cli` or a dashboard member.
    public var createdBy: String
    /// When the key stopped, or (after a roll with a grace period) stops, working.
    /// A date after now is a key in its grace period: still accepted until then.
    public var revokedAt: Date?
    public var revocationReason: RevocationReason?
    /// Last authenticated use, recorded in batches, so up to a flush interval late.
    public var lastUsedAt: Date?

    /// Builds a record as a store reads it.
    public init(
        id: SecretKeyID,
        environmentID: EnvironmentID,
        digest: KeyDigest,
        hint: String,
        createdAt: Date,
        createdBy: String,
        revokedAt: Date? = nil,
        revocationReason: RevocationReason? = nil,
        lastUsedAt: Date? = nil
    ) {
        self.id = id
        self.environmentID = environmentID
        self.digest = digest
        self.hint = hint
        self.createdAt = createdAt
        self.createdBy = createdBy
        self.revokedAt = revokedAt
        self.revocationReason = revocationReason
        self.lastUsedAt = lastUsedAt
    }

    /// The record of a key about to be stored: new, active, never used.
    public init(new key: GeneratedSecretKey, for environmentID: EnvironmentID, createdBy: String, at date: Date) {
        self.init(
            id: .generate(),
            environmentID: environmentID,
            digest: key.digest,
            hint: key.hint,
            createdAt: date.keywayPrecision,
            createdBy: createdBy
        )
    }

    /// Whether the key is its environment's current key: not revoked, and not rolled.
    /// At most one key per environment is.
    public var isActive: Bool { revokedAt == nil }

    /// Whether the key is accepted at `date`: the current key, or a rolled key in its grace.
    public func isAccepted(at date: Date) -> Bool {
        revokedAt == nil || graceEnd(at: date) != nil
    }

    /// When a rolled key in its grace period stops working; `nil` for any other key. Only a
    /// roll schedules a revocation: any other dated after `date` (a clock ahead) is one already.
    public func graceEnd(at date: Date) -> Date? {
        guard let revokedAt, revokedAt > date, revocationReason == .expiredAfterRoll else { return nil }
        return revokedAt
    }
}

/// A key revocation as recorded in storage, in the order revocations happened.
///
/// A roll with a grace period is recorded when it is made, with the end of the grace as
/// ``revokedAt``: a date every process knows, so each refuses the key from then on without
/// hearing of it again. A later change to the same key (a roll ending the grace early)
/// moves it to a new, higher ``sequence``.
public struct KeyRevocation: Sendable, Hashable {
    /// Position in the store's revocation sequence; strictly increasing.
    public var sequence: Int64
    public var digest: KeyDigest
    /// When the key stops being accepted; after the time of the change for a roll with grace.
    public var revokedAt: Date
    public var reason: RevocationReason

    /// Builds a revocation as a store reads it.
    public init(sequence: Int64, digest: KeyDigest, revokedAt: Date, reason: RevocationReason) {
        self.sequence = sequence
        self.digest = digest
        self.revokedAt = revokedAt
        self.reason = reason
    }
}

/// Which active key a generation may replace.
public enum KeyReplacement: Sendable, Hashable {
    /// Whatever key is active, if any (the CLI).
    case whicheverIsActive
    /// Only this key, or with `nil` only when the environment has none: a form
    /// that showed a key replaces that key and no later one.
    case only(SecretKeyID?)
}

/// How many keys an environment may generate within a sliding window.
///
/// Checked by the store in the generating transaction (under the environment's
/// generation lock), so it holds across instances and the CLI, and concurrent
/// generations cannot all pass it.
public struct KeyGenerationLimit: Sendable, Hashable {
    /// Most generations in any window.
    public var count: Int
    /// The window's length.
    public var windowSeconds: Int

    /// - Parameters:
    ///   - count: Most generations in any window, at least 1.
    ///   - windowSeconds: The window's length, 60 unless a test says otherwise.
    public init(count: Int, windowSeconds: Int = 60) {
        precondition(count > 0 && windowSeconds > 0)
        self.count = count
        self.windowSeconds = windowSeconds
    }

    /// Whole seconds until a generation may happen at `date`, given the creation
    /// dates of the environment's newest generations (newest first, at most ``count``);
    /// `nil` when one may happen now.
    public func retryAfter(newestGenerations: [Date], at date: Date) -> Int? {
        guard newestGenerations.count >= count else { return nil }
        let leaves = newestGenerations[count - 1].addingTimeInterval(TimeInterval(windowSeconds))
        guard leaves > date else { return nil }
        return max(1, Int(leaves.timeIntervalSince(date).rounded(.up)))
    }
}

/// The outcome of generating a key: the new record and the keys it replaced.
public struct KeyGeneration: Sendable {
    public var key: SecretKeyRecord
    public var revoked: [KeyRevocation]

    /// - Parameters:
    ///   - key: The new, active key.
    ///   - revoked: The keys it replaced, already revoked (or, rolled, scheduled to be) in storage.
    public init(key: SecretKeyRecord, revoked: [KeyRevocation]) {
        self.key = key
        self.revoked = revoked
    }
}

/// An end-user of an account's product, in one environment.
public struct User: Sendable, Hashable {
    public var id: UserID
    /// Unique within the environment.
    public var username: String
    public var fullName: String?
    public var createdAt: Date

    /// Builds a user value as a store reads it.
    public init(id: UserID, username: String, fullName: String?, createdAt: Date) {
        self.id = id
        self.username = username
        self.fullName = fullName
        self.createdAt = createdAt
    }
}

/// A validated user to create. Build it with ``init(username:fullName:)``.
public struct NewUser: Sendable, Hashable {
    public let username: String
    public let fullName: String?

    /// Validates and normalises a user to create.
    /// - Throws: ``KeywayError`` with code `invalid_input` naming the field.
    public init(username: String, fullName: String?) throws(KeywayError) {
        self.username = try UserInput.username(username)
        self.fullName = try fullName.flatMap { name throws(KeywayError) in try UserInput.fullName(name) }
    }
}

/// Validated changes to a user. A `nil` field is left as it is.
public struct UserChanges: Sendable, Hashable {
    public let username: String?
    /// `.some(nil)` clears the full name.
    public let fullName: String??

    /// Validates and normalises changes to a user.
    /// - Throws: ``KeywayError`` with code `invalid_input` naming the field.
    public init(username: String?, fullName: String??) throws(KeywayError) {
        self.username = try username.map { name throws(KeywayError) in try UserInput.username(name) }
        switch fullName {
        case .none: self.fullName = .none
        case .some(.none): self.fullName = .some(.none)
        case .some(.some(let name)): self.fullName = .some(try UserInput.fullName(name))
        }
    }
}

/// A page of users in identifier order.
public struct UserPage: Sendable, Hashable {
    public var users: [User]
    /// Pass this back to get the next page; `nil` on the last page.
    public var nextCursor: UserID?

    /// - Parameters:
    ///   - users: This page, in identifier order.
    ///   - nextCursor: The last identifier of this page when more follow.
    public init(users: [User], nextCursor: UserID?) {
        self.users = users
        self.nextCursor = nextCursor
    }
}

/// What a batch create did.
public struct BatchCreation: Sendable, Hashable {
    public var created: [User]
    /// The usernames refused, each with why (`username_taken`, or `invalid_input` for a user's identifier).
    public var refused: [String: KeywayError]

    /// - Parameters:
    ///   - created: The users created, in request order.
    ///   - refused: The usernames refused, each with why.
    public init(created: [User] = [], refused: [String: KeywayError] = [:]) {
        self.created = created
        self.refused = refused
    }
}

/// What inserting one user came to, as a store finds out inside its transaction.
public enum UserInsertion: Sendable, Hashable {
    case created(User)
    /// The username exists in the environment.
    case usernameTaken
    /// The username is the identifier of a user of the environment.
    case usernameIsAUserID

    /// The created user, or the error that says why `username` was refused.
    public func created(username: String) throws(KeywayError) -> User {
        switch self {
        case .created(let user): return user
        case .usernameTaken: throw .usernameTaken(username)
        case .usernameIsAUserID: throw .usernameIsAUserID(username)
        }
    }
}

extension BatchCreation {
    /// Records what inserting the user named `username` came to.
    public mutating func record(_ insertion: UserInsertion, username: String) {
        do {
            created.append(try insertion.created(username: username))
        } catch {
            refused[username] = error
        }
    }
}
