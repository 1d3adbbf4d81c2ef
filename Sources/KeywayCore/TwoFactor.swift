public import Foundation

/// Seals members' TOTP secrets under the master key, bound to the member, like signing keys.
public struct TwoFactorSecrets: Sendable {
    let masterKey: MasterKey

    public init(masterKey: MasterKey) {
        self.masterKey = masterKey
    }

    /// A new TOTP secret: 32 base62 characters (about 190 bits; RFC 4226 asks for 128 at least),
    /// whose UTF-8 bytes are the HMAC key.
    public static func generateSecret() -> String { Base62.randomString(length: 32) }

    static func sealingContext(_ member: MemberID) -> String { "keyway totp secret \(member.rawValue)" }

    /// The secret sealed (AES-GCM) for `member`.
    public func seal(_ secret: String, for member: MemberID) throws -> Data {
        try masterKey.seal(Data(secret.utf8), context: Self.sealingContext(member))
    }

    /// What a recovery code is stored as: an HMAC under the master key, bound to `member`. The
    /// codes carry about 50 random bits each; an unkeyed digest of so few could be reversed from
    /// a copy of the database by trying them all, this one cannot without the master key.
    public func recoveryDigest(_ code: String, for member: MemberID) -> KeyDigest {
        let normalized = code.lowercased().filter { $0.isLetter || $0.isNumber }
        let mac = masterKey.authenticationCode(for: Array(normalized.utf8), context: "keyway recovery code \(member.rawValue)")
        guard let digest = KeyDigest(bytes: mac) else { preconditionFailure("HMAC-SHA256 has 32 bytes") }
        return digest
    }

    /// The secret `seal` sealed for `member`; throws when it was sealed for someone else or altered.
    public func unseal(_ sealed: Data, for member: MemberID) throws -> String {
        String(decoding: try masterKey.unseal(sealed, context: Self.sealingContext(member)), as: UTF8.self)
    }
}

/// A member's second factor as stored: the sealed TOTP secret and the last step a code was
/// accepted for (a code works once).
public struct TwoFactorRecord: Sendable, Hashable {
    public var sealedSecret: Data
    public var lastStep: Int64?
    /// Recovery codes not yet used.
    public var recoveryCodesLeft: Int
    /// Wrong codes at sign-in since the last right one: kept in storage, so neither a restart
    /// nor the throttle's windows forget them.
    public var failures: Int

    /// After this many wrong codes in a row, only a recovery code signs in: a patient guesser,
    /// held to ten tries every fifteen minutes by the throttle, gets no further than this.
    public static let failuresBeforeRecoveryCode = 20

    public init(sealedSecret: Data, lastStep: Int64?, recoveryCodesLeft: Int, failures: Int = 0) {
        self.sealedSecret = sealedSecret
        self.lastStep = lastStep
        self.recoveryCodesLeft = recoveryCodesLeft
        self.failures = failures
    }
}

/// Members' second factors and the sessions waiting for one.
public protocol TwoFactorStore: Sendable {
    /// The member's second factor; `nil` while it is off.
    func twoFactor(of member: MemberID) async throws -> TwoFactorRecord?
    /// The secret being set up (shown, not yet confirmed); `nil` when none is.
    func pendingTwoFactorSecret(of member: MemberID) async throws -> Data?
    /// Starts (or restarts) a setup with a new sealed secret; the current factor, if any, stays on.
    func setPendingTwoFactorSecret(_ sealed: Data, of member: MemberID) async throws
    /// Turns on the pending secret — only when it is still `pending`, the one the code was checked
    /// against — records `step` as used (the confirming code's), replaces the recovery codes and
    /// ends the member's other sessions, with `audit` (`member.two_factor_enabled`), in one
    /// transaction. Replaces a secret already on (a new phone).
    /// - Returns: `false` when that secret is no longer pending (a resubmitted form, a setup
    ///   restarted in another tab).
    func enableTwoFactor(
        of member: MemberID,
        pending: Data,
        usedStep step: Int64,
        recoveryCodes: [KeyDigest],
        keepingSession session: KeyDigest?,
        audit: AuditEntry
    ) async throws -> Bool
    /// Turns the second factor off, forgets its recovery codes and ends the member's other
    /// sessions (every one when `session` is `nil`), with `audit`.
    /// - Returns: Whether it was on.
    func disableTwoFactor(of member: MemberID, keepingSession session: KeyDigest?, audit: AuditEntry) async throws -> Bool
    /// Records `step` as used when it is later than the last used one, atomically: of two
    /// sign-ins with one code, at most one gets `true`. A use clears the failures.
    func useTwoFactorStep(_ step: Int64, of member: MemberID) async throws -> Bool
    /// Counts a wrong code at sign-in.
    func recordTwoFactorFailure(of member: MemberID) async throws
    /// Marks a recovery code used, once, and clears the failures: `false` when the member has no
    /// such unused code.
    func useRecoveryCode(_ digest: KeyDigest, of member: MemberID, at date: Date) async throws -> Bool
    /// Ends a session's wait for the second factor and gives it its full lifetime, with `audit`
    /// (`member.signed_in`). - Returns: `false` when the session is gone, expired at `date`, or
    /// was not waiting.
    func completeSecondFactor(digest: KeyDigest, at date: Date, expiresAt: Date, audit: AuditEntry) async throws -> Bool
}

/// A store that hands second factors to another (the tests' wrapping stores).
public protocol ForwardingTwoFactorStore: TwoFactorStore {
    var twoFactorStore: any TwoFactorStore { get }
}

extension ForwardingTwoFactorStore {
    public func twoFactor(of member: MemberID) async throws -> TwoFactorRecord? { try await twoFactorStore.twoFactor(of: member) }
    public func pendingTwoFactorSecret(of member: MemberID) async throws -> Data? { try await twoFactorStore.pendingTwoFactorSecret(of: member) }
    public func setPendingTwoFactorSecret(_ sealed: Data, of member: MemberID) async throws {
        try await twoFactorStore.setPendingTwoFactorSecret(sealed, of: member)
    }
    public func enableTwoFactor(
        of member: MemberID,
        pending: Data,
        usedStep step: Int64,
        recoveryCodes: [KeyDigest],
        keepingSession session: KeyDigest?,
        audit: AuditEntry
    ) async throws -> Bool {
        try await twoFactorStore.enableTwoFactor(
            of: member,
            pending: pending,
            usedStep: step,
            recoveryCodes: recoveryCodes,
            keepingSession: session,
            audit: audit
        )
    }
    public func disableTwoFactor(of member: MemberID, keepingSession session: KeyDigest?, audit: AuditEntry) async throws -> Bool {
        try await twoFactorStore.disableTwoFactor(of: member, keepingSession: session, audit: audit)
    }
    public func useTwoFactorStep(_ step: Int64, of member: MemberID) async throws -> Bool {
        try await twoFactorStore.useTwoFactorStep(step, of: member)
    }
    public func recordTwoFactorFailure(of member: MemberID) async throws {
        try await twoFactorStore.recordTwoFactorFailure(of: member)
    }
    public func useRecoveryCode(_ digest: KeyDigest, of member: MemberID, at date: Date) async throws -> Bool {
        try await twoFactorStore.useRecoveryCode(digest, of: member, at: date)
    }
    public func completeSecondFactor(digest: KeyDigest, at date: Date, expiresAt: Date, audit: AuditEntry) async throws -> Bool {
        try await twoFactorStore.completeSecondFactor(digest: digest, at: date, expiresAt: expiresAt, audit: audit)
    }
}
