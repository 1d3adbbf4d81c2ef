import Foundation
import GRDB
import KeywayCore
import Logging
import PostgresNIO
import Synchronization
import Testing

@testable import KeywayPostgres
@testable import KeywaySQLite

/// Every store the conformance suite runs against.
enum StoreKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite
    case postgres

    var testDescription: String { rawValue }

    /// The stores to test: PostgreSQL when `KEYWAY_TEST_POSTGRES_URL` names a
    /// server (scripts/test starts one). In CI it must: nothing is skipped there.
    static var allCases: [StoreKind] {
        if TestPostgres.serverURL != nil { return [.sqlite, .postgres] }
        precondition(
            ProcessInfo.processInfo.environment["CI"] != "true",
            "KEYWAY_TEST_POSTGRES_URL is not set: in CI the PostgreSQL store must be tested (run scripts/test)"
        )
        return [.sqlite]
    }

    /// A fresh, empty, migrated store.
    func makeStore() async throws -> any KeywayStore {
        try await makeSharedStores(1)[0]
    }

    /// `count` stores on one fresh database, each with connections of its own, as
    /// `count` processes (servers, the CLI) would have.
    func makeSharedStores(_ count: Int, makeUserID: @escaping @Sendable (Date) -> UserID = UserID.generate(at:)) async throws -> [any KeywayStore] {
        switch self {
        case .sqlite:
            let path = temporaryDatabasePath()
            return try (0..<count).map { _ in try KeywaySQLiteStore(path: path, migrate: true, makeUserID: makeUserID) }
        case .postgres:
            return try await TestPostgres.freshStores(count, makeUserID: makeUserID)
        }
    }

    /// A fresh store whose new users get `identifiers`, in order, then random ones.
    func makeStore(drawingUserIDs identifiers: [UserID]) async throws -> any KeywayStore {
        let queue = Mutex(identifiers)
        return try await makeSharedStores(1) { date in
            queue.withLock { $0.isEmpty ? nil : $0.removeFirst() } ?? UserID.generate(at: date)
        }[0]
    }
}

/// Checked origins from literals.
func origins(_ list: String...) throws -> [BrowserOrigin] {
    try list.map(BrowserOrigin.init)
}

func temporaryDatabasePath() -> String {
    FileManager.default.temporaryDirectory
        .appendingPathComponent("keyway-tests-\(UUID().uuidString)", isDirectory: true)
        .appendingPathComponent("keyway.sqlite").path
}

extension StoreKind {
    /// A store with one account, for tests that need somewhere to put things.
    func makeStoreWithAccount() async throws -> (any KeywayStore, Account) {
        let store = try await makeStore()
        let account = try await store.createAccount(name: "Acme", at: Date())
        return (store, account)
    }

    /// Runs `statements` on `store`'s database past its foreign keys and checks, as a
    /// damaged or hand-edited database would hold them.
    /// Everything the store keeps, every row of every table as text, to search for what must not be there.
    func everythingStored(in store: any KeywayStore) async throws -> String {
        switch self {
        case .sqlite:
            let store = try #require(store as? KeywaySQLiteStore)
            return try await store.database.read { db in
                let tables = try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table'")
                var text = ""
                for table in tables {
                    for row in try Row.fetchAll(db, sql: "SELECT * FROM \"\(table)\"") {
                        for value in row.databaseValues {
                            switch value.storage {
                            case .string(let string): text += string + "\n"
                            case .blob(let data): text += String(decoding: data, as: UTF8.self) + "\n"
                            default: text += "\(value)\n"
                            }
                        }
                    }
                }
                return text
            }
        case .postgres:
            let store = try #require(store as? KeywayPostgresStore)
            let tables = try await store.all("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", as: String.self)
            var text = ""
            for table in tables {
                // Every column as text; bytea shows as hex (`\\x…`), which the caller searches too.
                let query = PostgresQuery(unsafeSQL: "SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM \"\(table)\" t")
                text += try await store.first(query, as: String.self) ?? ""
            }
            return text
        }
    }

    func writeUnchecked(_ statements: [String], to store: any KeywayStore) async throws {
        switch self {
        case .sqlite:
            let store = try #require(store as? KeywaySQLiteStore)
            try await store.database.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA foreign_keys = OFF")
                defer { try? db.execute(sql: "PRAGMA foreign_keys = ON") }
                for statement in statements { try db.execute(sql: statement) }
            }
        case .postgres:
            let store = try #require(store as? KeywayPostgresStore)
            // A fresh database per test: its foreign keys to environments can go.
            for table in ["secret_keys", "signing_keys"] {
                try await store.execute("ALTER TABLE \(table) DROP CONSTRAINT \(table)_account_id_environment_fkey")
            }
            for statement in statements { try await store.execute(statement) }
        }
    }
}

/// Forwards to a store and counts key lookups, to prove what the cache saves.
final class CountingStore: KeywayStore, ForwardingWebhookStore, ForwardingMembershipStore, ForwardingTwoFactorStore, @unchecked Sendable {
    let base: any KeywayStore
    var webhookStore: any WebhookStore { base }
    var membershipStore: any MembershipStore { base }
    var twoFactorStore: any TwoFactorStore { base }
    private let lock = NSLock()
    private var _keyLookups = 0
    private var _failingRevocationReads = 0

    init(_ base: any KeywayStore) { self.base = base }

    var keyLookups: Int { lock.withLock { _keyLookups } }
    private var _serviceTokenLookups = 0
    var serviceTokenLookups: Int { lock.withLock { _serviceTokenLookups } }

    /// Makes the next `count` reads of revocations fail, as a dropped connection would.
    func failRevocationReads(_ count: Int) { lock.withLock { _failingRevocationReads = count } }
    var failingRevocationReads: Int { lock.withLock { _failingRevocationReads } }

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
    func secretKey(digest: KeyDigest) async throws -> SecretKeyRecord? {
        lock.withLock { _keyLookups += 1 }
        let record = try await base.secretKey(digest: digest)
        lock.withLock { _answeredKeyLookups += 1 }
        return record
    }
    private var _answeredKeyLookups = 0
    /// Key lookups the store answered: a lookup that failed (a PostgreSQL lookup past its
    /// deadline on a loaded machine) has nothing for the cache to remember.
    var answeredKeyLookups: Int { lock.withLock { _answeredKeyLookups } }
    private var _leakRevocations = 0
    /// Calls of the leak report's write transaction.
    var leakRevocations: Int { lock.withLock { _leakRevocations } }
    func revokeLeakedKey(digest: KeyDigest, report: LeakReport, audit: AuditContext, at date: Date) async throws -> LeakedKeyOutcome {
        lock.withLock { _leakRevocations += 1 }
        return try await base.revokeLeakedKey(digest: digest, report: report, audit: audit, at: date)
    }
    func secretKeys(for accountID: AccountID) async throws -> [SecretKeyRecord] { try await base.secretKeys(for: accountID) }
    func revocations(after sequence: Int64, limit: Int) async throws -> [KeyRevocation] {
        let fails = lock.withLock {
            defer { _failingRevocationReads = max(0, _failingRevocationReads - 1) }
            return _failingRevocationReads > 0
        }
        if fails { throw CancellationError() }
        return try await base.revocations(after: sequence, limit: limit)
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
    func serviceToken(digest: KeyDigest) async throws -> ServiceTokenRecord? {
        lock.withLock { _serviceTokenLookups += 1 }
        return try await base.serviceToken(digest: digest)
    }
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
    func listenForRevocations(onNotification: @escaping @Sendable () async throws -> Void, onStateChange: @escaping @Sendable (Bool) -> Void) async {
        await base.listenForRevocations(onNotification: onNotification, onStateChange: onStateChange)
    }
}

extension DashboardSession {
    /// A new session of `member` in its account, from `date` for `seconds` (negative: expired), at
    /// the stores' precision so that it compares equal to what they read back.
    static func fresh(of member: Member, at date: Date, lasting seconds: TimeInterval = 3600, csrf: String = "c") -> DashboardSession {
        DashboardSession(
            digest: BrowserToken.generate().digest,
            memberID: member.id,
            accountID: member.accountID,
            csrfToken: csrf,
            createdAt: date.keywayPrecision,
            expiresAt: date.addingTimeInterval(seconds).keywayPrecision
        )
    }
}
