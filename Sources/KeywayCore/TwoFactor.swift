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

    public init(sealedSecret: Data, lastStep: Int64?, recoveryCodesLeft: Int) {
        self.sealedSecret = sealedSecret
        self.lastStep = lastStep
        self.recoveryCodesLeft = recoveryCodesLeft
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
    /// Turns the pending secret on, records `step` as used (the confirming code's), and
    /// replaces the recovery codes, with `audit` (`member.two_factor_enabled`), in one transaction.
    /// - Returns: `false` when no setup was pending (a resubmitted form).
    func enableTwoFactor(of member: MemberID, usedStep step: Int64, recoveryCodes: [KeyDigest], audit: AuditEntry) async throws -> Bool
    /// Turns the second factor off and forgets its recovery codes, with `audit`.
    func disableTwoFactor(of member: MemberID, audit: AuditEntry) async throws
    /// Records `step` as used when it is later than the last used one, atomically: of two
    /// sign-ins with one code, at most one gets `true`.
    func useTwoFactorStep(_ step: Int64, of member: MemberID) async throws -> Bool
    /// Marks a recovery code used, once: `false` when the member has no such unused code.
    func useRecoveryCode(_ digest: KeyDigest, of member: MemberID, at date: Date) async throws -> Bool
    /// Ends a session's wait for the second factor and gives it its full lifetime, with `audit`
    /// (`member.signed_in`). - Returns: `false` when the session is gone or was not waiting.
    func completeSecondFactor(digest: KeyDigest, expiresAt: Date, audit: AuditEntry) async throws -> Bool
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
    public func enableTwoFactor(of member: MemberID, usedStep step: Int64, recoveryCodes: [KeyDigest], audit: AuditEntry) async throws -> Bool {
        try await twoFactorStore.enableTwoFactor(of: member, usedStep: step, recoveryCodes: recoveryCodes, audit: audit)
    }
    public func disableTwoFactor(of member: MemberID, audit: AuditEntry) async throws {
        try await twoFactorStore.disableTwoFactor(of: member, audit: audit)
    }
    public func useTwoFactorStep(_ step: Int64, of member: MemberID) async throws -> Bool {
        try await twoFactorStore.useTwoFactorStep(step, of: member)
    }
    public func useRecoveryCode(_ digest: KeyDigest, of member: MemberID, at date: Date) async throws -> Bool {
        try await twoFactorStore.useRecoveryCode(digest, of: member, at: date)
    }
    public func completeSecondFactor(digest: KeyDigest, expiresAt: Date, audit: AuditEntry) async throws -> Bool {
        try await twoFactorStore.completeSecondFactor(digest: digest, expiresAt: expiresAt, audit: audit)
    }
}
