import Foundation
import KeywayCore

/// Forwards every call to a store but its change watch (`RevocationNotifying`) never comes
/// up, as a PostgreSQL store whose LISTEN connection is down: a server on it learns of
/// other processes' revocations only by polling.
final class StoreWithoutChangeWatch: KeywayStore, ForwardingWebhookStore, ForwardingMembershipStore, ForwardingTwoFactorStore {
    var webhookStore: any WebhookStore { base }
    var membershipStore: any MembershipStore { base }
    var twoFactorStore: any TwoFactorStore { base }

    let base: any KeywayStore

    init(_ base: any KeywayStore) { self.base = base }

    func createAccount(name: String, at date: Date) async throws -> Account { try await base.createAccount(name: name, at: date) }
    func account(_ id: AccountID) async throws -> Account? { try await base.account(id) }
    func accounts() async throws -> [Account] { try await base.accounts() }
    func insertKeyRevokingPrevious(
        _ key: GeneratedSecretKey,
        for environmentID: EnvironmentID,
        replacing replacement: KeyReplacement,
        retiring retirement: KeyRetirement,
        limit: KeyGenerationLimit?,
        audit: AuditContext,
        at date: Date
    )
        async throws -> KeyGeneration
    {
        try await base.insertKeyRevokingPrevious(
            key,
            for: environmentID,
            replacing: replacement,
            retiring: retirement,
            limit: limit,
            audit: audit,
            at: date
        )
    }
    func secretKey(digest: KeyDigest) async throws -> SecretKeyRecord? { try await base.secretKey(digest: digest) }
    func revokeLeakedKey(digest: KeyDigest, report: LeakReport, audit: AuditContext, at date: Date) async throws -> LeakedKeyOutcome {
        try await base.revokeLeakedKey(digest: digest, report: report, audit: audit, at: date)
    }
    func secretKeys(for accountID: AccountID) async throws -> [SecretKeyRecord] { try await base.secretKeys(for: accountID) }
    func revocations(after sequence: Int64, limit: Int) async throws -> [KeyRevocation] {
        try await base.revocations(after: sequence, limit: limit)
    }
    func latestRevocationSequence() async throws -> Int64 { try await base.latestRevocationSequence() }
    func recordKeyUsage(_ lastUsed: [SecretKeyID: Date]) async throws { try await base.recordKeyUsage(lastUsed) }
    func createUser(_ user: NewUser, in environmentID: EnvironmentID, at date: Date) async throws -> User {
        try await base.createUser(user, in: environmentID, at: date)
    }
    func createUsers(_ users: [NewUser], in environmentID: EnvironmentID, at date: Date) async throws -> BatchCreation {
        try await base.createUsers(users, in: environmentID, at: date)
    }
    func user(_ reference: String, in environmentID: EnvironmentID) async throws -> User? { try await base.user(reference, in: environmentID) }
    func user(id: UserID, in environmentID: EnvironmentID) async throws -> User? { try await base.user(id: id, in: environmentID) }
    func users(in environmentID: EnvironmentID, after cursor: UserID?, limit: Int) async throws -> UserPage {
        try await base.users(in: environmentID, after: cursor, limit: limit)
    }
    func updateUser(_ id: UserID, in environmentID: EnvironmentID, with changes: UserChanges) async throws -> User? {
        try await base.updateUser(id, in: environmentID, with: changes)
    }
    func deleteUser(_ id: UserID, in environmentID: EnvironmentID) async throws -> Bool { try await base.deleteUser(id, in: environmentID) }
    func users(
        in environmentID: EnvironmentID,
        usernamePrefix prefix: String,
        afterUsername username: String?,
        limit: Int
    )
        async throws -> [User]
    {
        try await base.users(in: environmentID, usernamePrefix: prefix, afterUsername: username, limit: limit)
    }
    func countUsers(in environmentID: EnvironmentID, usernamePrefix prefix: String) async throws -> Int {
        try await base.countUsers(in: environmentID, usernamePrefix: prefix)
    }
    func createAccount(name: String, ownerEmail: String, passwordHash: String, at date: Date, audit: AuditContext) async throws -> (Account, Member) {
        try await base.createAccount(name: name, ownerEmail: ownerEmail, passwordHash: passwordHash, at: date, audit: audit)
    }
    func memberCredentials(email: String) async throws -> (member: Member, passwordHash: String)? { try await base.memberCredentials(email: email) }
    func member(_ id: MemberID, in accountID: AccountID) async throws -> Member? { try await base.member(id, in: accountID) }
    func passwordHash(of id: MemberID) async throws -> String? { try await base.passwordHash(of: id) }
    func changePassword(of id: MemberID, to passwordHash: String, audit: AuditEntry) async throws {
        try await base.changePassword(of: id, to: passwordHash, audit: audit)
    }
    func createSession(_ session: DashboardSession, audit: AuditEntry?) async throws { try await base.createSession(session, audit: audit) }
    func session(digest: KeyDigest, at date: Date) async throws -> DashboardSession? { try await base.session(digest: digest, at: date) }
    func deleteSession(digest: KeyDigest, audit: AuditEntry) async throws { try await base.deleteSession(digest: digest, audit: audit) }
    func deleteExpiredSessions(before date: Date) async throws { try await base.deleteExpiredSessions(before: date) }
    func signingKeys(for environmentID: EnvironmentID) async throws -> [SigningKeyRecord] { try await base.signingKeys(for: environmentID) }
    func signingKey(id: String) async throws -> SigningKeyRecord? { try await base.signingKey(id: id) }
    func hasSigningKeys() async throws -> Bool { try await base.hasSigningKeys() }
    func insertSigningKey(_ key: SigningKeyRecord, retiringActive: Bool, audit: AuditContext) async throws -> SigningKeyRecord {
        try await base.insertSigningKey(key, retiringActive: retiringActive, audit: audit)
    }
    func allowedOrigins(for environmentID: EnvironmentID) async throws -> [String] { try await base.allowedOrigins(for: environmentID) }
    func setAllowedOrigins(_ origins: [BrowserOrigin], for environmentID: EnvironmentID, audit: AuditContext) async throws {
        try await base.setAllowedOrigins(origins, for: environmentID, audit: audit)
    }
    func isOriginAllowedAnywhere(_ origin: String) async throws -> Bool { try await base.isOriginAllowedAnywhere(origin) }
    func rateLimits() async throws -> [EnvironmentID: RateLimitSetting] { try await base.rateLimits() }
    func setRateLimit(_ setting: RateLimitSetting, for environmentID: EnvironmentID, audit: AuditContext) async throws {
        try await base.setRateLimit(setting, for: environmentID, audit: audit)
    }
    func rateLimitsVersion() async throws -> Int64 { try await base.rateLimitsVersion() }
    func insertServiceToken(_ token: ServiceTokenRecord, audit: AuditContext) async throws -> ServiceTokenRecord {
        try await base.insertServiceToken(token, audit: audit)
    }
    func serviceToken(digest: KeyDigest) async throws -> ServiceTokenRecord? { try await base.serviceToken(digest: digest) }
    func serviceTokens() async throws -> [ServiceTokenRecord] { try await base.serviceTokens() }
    func revokeServiceToken(_ reference: ServiceTokenReference, at date: Date, audit: AuditContext) async throws -> ServiceTokenRecord? {
        try await base.revokeServiceToken(reference, at: date, audit: audit)
    }
    func recordAudit(_ entry: AuditEntry) async throws { try await base.recordAudit(entry) }
    func auditEntries(for accountID: AccountID?, matching query: AuditQuery) async throws -> [AuditEntry] {
        try await base.auditEntries(for: accountID, matching: query)
    }
    func deleteAuditEntries(before date: Date) async throws -> Int { try await base.deleteAuditEntries(before: date) }
    func recordExpiredGraces(at date: Date) async throws -> Int { try await base.recordExpiredGraces(at: date) }
    func checkHealth() async throws { try await base.checkHealth() }
    func requireCurrentSchema() async throws { try await base.requireCurrentSchema() }

    /// Down from the start until cancelled: never a notification.
    func listenForRevocations(onNotification: @escaping @Sendable () async throws -> Void, onStateChange: @escaping @Sendable (Bool) -> Void) async {
        onStateChange(false)
        while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
    }
}
