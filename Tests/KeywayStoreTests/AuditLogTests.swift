import Crypto
import Foundation
import GRDB
import KeywayCore
import Testing

@testable import KeywayPostgres
@testable import KeywaySQLite

/// The audit log on every store: each change writes its entries in its own transaction, an
/// entry that cannot be written undoes its change, and the log reads, pages and trims.
@Suite struct AuditLogTests {
    private static let someone = AuditContext(actor: "ada@acme.test", clientAddress: "203.0.113.9", userAgent: "curl/8", requestID: "req1")

    private static func entries(
        _ store: any KeywayStore,
        _ account: AccountID?,
        _ query: AuditQuery = AuditQuery(limit: 100)
    ) async throws
        -> [AuditEntry]
    {
        try await store.auditEntries(for: account, matching: query)
    }

    @Test(arguments: StoreKind.allCases)
    func keyChangesAreRecordedWithTheKeysHashNeverTheKey(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let keys = SecretKeys(store: store)
        let environment = EnvironmentID(accountID: account.id, environment: .production)
        let (first, firstRecord) = try await keys.generate(for: environment, audit: Self.someone)
        let (second, secondRecord) = try await keys.roll(for: environment, grace: try KeyGrace(parsing: "1h"), audit: Self.someone)
        let (third, thirdRecord) = try await keys.generate(for: environment, audit: .cli)

        let log = try await Self.entries(store, account.id)
        let sha = { (key: GeneratedSecretKey) in Data(SHA256.hash(data: Data(key.revealPlaintext().utf8))).base64EncodedString() }
        let summary = Set(log.map { "\($0.event.rawValue) \($0.resourceID ?? "")" })
        #expect(
            summary == [
                "key.generated \(firstRecord.id)",
                "key.generated \(secondRecord.id)", "key.rolled \(firstRecord.id)",
                "key.generated \(thirdRecord.id)", "key.revoked \(firstRecord.id)", "key.revoked \(secondRecord.id)",
            ],
            "\(summary)"
        )
        #expect(log.count == 6)
        let generated = try #require(log.first { $0.event == .keyGenerated && $0.resourceID == firstRecord.id.rawValue })
        #expect(generated.hashedToken == sha(first), "a holder of the key can find it by its SHA-256")
        #expect(generated.resourceHint == first.hint && generated.resourceType == "key")
        #expect(generated.environment == .production && generated.accountID == account.id)
        #expect(generated.actor == "ada@acme.test" && generated.clientAddress == "203.0.113.9")
        #expect(generated.userAgent == "curl/8" && generated.requestID == "req1")
        let rolled = try #require(log.first { $0.event == .keyRolled })
        #expect(rolled.hashedToken == sha(first) && rolled.details["replacedBy"] == secondRecord.id.rawValue)
        #expect(rolled.details["graceEndsAt"] != nil)
        let revoked = log.filter { $0.event == .keyRevoked }
        #expect(Set(revoked.compactMap(\.hashedToken)) == [sha(first), sha(second)])
        #expect(revoked.allSatisfy { $0.details["revocationReason"] == "regenerated" && $0.actor == "cli" })
        // Never a key, anywhere in what is stored.
        let stored = try await kind.everythingStored(in: store)
        for key in [first, second, third] { #expect(!stored.contains(key.revealPlaintext())) }
    }

    @Test(arguments: StoreKind.allCases)
    func accessChangesAreRecorded(kind: StoreKind) async throws {
        let store = try await kind.makeStore()
        let (account, owner) = try await store.createAccount(
            name: "Acme",
            ownerEmail: "owner@acme.test",
            passwordHash: "h",
            at: Date(),
            audit: Self.someone
        )
        let development = EnvironmentID(accountID: account.id, environment: .development)
        try await store.setRateLimit(.requestsPerSecond(7), for: development, audit: Self.someone)
        try await store.setAllowedOrigins([try BrowserOrigin("https://app.acme.test")], for: development, audit: Self.someone)
        let now = Date()
        let session = DashboardSession.fresh(of: owner, at: now, lasting: 60)
        try await store.createSession(session, audit: .member(.signedIn, owner, at: now, context: Self.someone))
        try await store.deleteSession(digest: session.digest, audit: .member(.signedOut, owner, at: now, context: Self.someone))
        try await store.changePassword(of: owner.id, to: "h2", audit: .member(.passwordChanged, owner, at: now, context: Self.someone))
        try await store.recordAudit(.member(.signInFailed, owner, at: now, context: Self.someone))
        _ = try await UserTokens(store: store, masterKey: try MasterKey(bytes: [UInt8](repeating: 7, count: 32)), issuer: "https://keyway.test")
            .rotate(development, audit: .cli)

        let events = try await Self.entries(store, account.id).map(\.event)
        #expect(
            Set(events) == [
                .signedUp, .rateLimitChanged, .originsChanged, .signedIn, .signedOut, .passwordChanged, .signInFailed, .signingKeyRotated,
            ]
        )
        let limit = try #require(try await Self.entries(store, account.id, AuditQuery(event: .rateLimitChanged)).first)
        #expect(limit.details["limit"] == "7" && limit.environment == .development)
        let origins = try #require(try await Self.entries(store, account.id, AuditQuery(event: .originsChanged)).first)
        #expect(origins.details["origins"] == "https://app.acme.test")

        // Service tokens are the operator's: recorded under no account.
        let tokens = ServiceTokens(store: store)
        let created = try await tokens.create(name: "gateway", audit: .cli)
        _ = try await tokens.revoke(.name("gateway"), audit: .cli)
        let operatorLog = try await Self.entries(store, nil)
        #expect(operatorLog.map(\.event) == [.serviceTokenRevoked, .serviceTokenCreated])
        #expect(operatorLog.allSatisfy { $0.resourceID == created.record.id.rawValue && $0.details["name"] == "gateway" })
        #expect(try await Self.entries(store, account.id).allSatisfy { $0.resourceType != "service_token" })
    }

    /// A change and its entry are one transaction: when the entry cannot be written, the change
    /// does not happen. Each change is tried on state that it would visibly alter.
    @Test(arguments: StoreKind.allCases)
    func anEntryThatCannotBeWrittenUndoesItsChange(kind: StoreKind) async throws {
        let store = try await kind.makeStore()
        let now = Date()
        let (account, owner) = try await store.createAccount(name: "Acme", ownerEmail: "o@acme.test", passwordHash: "h", at: now, audit: .system)
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let keys = SecretKeys(store: store)
        let (current, _) = try await keys.generate(for: environment, createdBy: "t")
        let token = try await ServiceTokens(store: store).create(name: "gateway")
        let before = [try BrowserOrigin("https://before.acme.test")]
        try await store.setAllowedOrigins(before, for: environment, audit: .cli)
        let session = DashboardSession.fresh(of: owner, at: now)
        try await store.createSession(session, audit: .member(.signedIn, owner, at: now, context: .system))
        let userTokens = UserTokens(store: store, masterKey: try MasterKey(bytes: [UInt8](repeating: 7, count: 32)), issuer: "https://keyway.test")
        try await userTokens.rotate(environment)
        let signingKeys = try await store.signingKeys(for: environment)
        try await kind.failAuditInserts(in: store)

        await #expect(throws: (any Error).self) { try await keys.generate(for: environment, createdBy: "t") }
        await #expect(throws: (any Error).self) { try await keys.roll(for: environment, grace: try KeyGrace(parsing: "1h"), createdBy: "t") }
        await #expect(throws: (any Error).self) {
            try await keys.reportLeaked(Substring(current.revealPlaintext()), report: LeakReport(source: "content"), audit: .cli)
        }
        await #expect(throws: (any Error).self) { try await store.setRateLimit(.off, for: environment, audit: .cli) }
        await #expect(throws: (any Error).self) {
            try await store.setAllowedOrigins([try BrowserOrigin("https://after.acme.test")], for: environment, audit: .cli)
        }
        await #expect(throws: (any Error).self) { try await ServiceTokens(store: store).revoke(.name("gateway")) }
        await #expect(throws: (any Error).self) { try await ServiceTokens(store: store).create(name: "other") }
        await #expect(throws: (any Error).self) {
            try await store.changePassword(of: owner.id, to: "h2", audit: .member(.passwordChanged, owner, at: now, context: .system))
        }
        let another = DashboardSession.fresh(of: owner, at: now)
        await #expect(throws: (any Error).self) {
            try await store.createSession(another, audit: .member(.signedIn, owner, at: now, context: .system))
        }
        await #expect(throws: (any Error).self) {
            try await store.deleteSession(digest: session.digest, audit: .member(.signedOut, owner, at: now, context: .system))
        }
        await #expect(throws: (any Error).self) { try await userTokens.rotate(environment) }
        await #expect(throws: (any Error).self) {
            try await store.createAccount(name: "Initech", ownerEmail: "o@initech.test", passwordHash: "h", at: now, audit: .system)
        }

        let stored = try await store.secretKeys(for: account.id)
        #expect(stored.count == 1 && stored.first?.digest == current.digest && stored.first?.isActive == true, "no key made, revoked or leaked")
        #expect((try? await SecretKeys(store: store).authenticate(Substring(current.revealPlaintext()))) != nil, "the key still works")
        #expect(try await store.rateLimits()[environment] == nil, "the limit is unchanged")
        #expect(try await store.allowedOrigins(for: environment) == before.map(\.serialized), "the origins are unchanged")
        #expect(try await store.serviceTokens().map(\.revokedAt) == [nil], "the token is neither revoked nor joined by another")
        #expect(try await store.serviceToken(digest: token.token.digest)?.revokedAt == nil)
        #expect(try await store.passwordHash(of: owner.id) == "h", "the password is unchanged")
        // Changing the password would also have ended the session; signing out, too.
        #expect(try await store.session(digest: session.digest, at: now) != nil, "the session is still open")
        #expect(try await store.session(digest: another.digest, at: now) == nil, "no session was started")
        #expect(try await store.signingKeys(for: environment) == signingKeys, "the signing key is neither retired nor joined")
        #expect(try await store.memberCredentials(email: "o@initech.test") == nil, "nobody signed up")
        #expect(try await store.accounts().map(\.id) == [account.id], "no account was made")
    }

    @Test(arguments: StoreKind.allCases)
    func theLogFiltersAndPagesNewestFirst(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let (other, _) = try await kind.makeStoreWithAccount()
        _ = other
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        for index in 0..<7 {
            try await store.recordAudit(
                AuditEntry(
                    at: start.addingTimeInterval(TimeInterval(index / 2)),  // pairs share a millisecond
                    accountID: account.id,
                    environment: index.isMultiple(of: 2) ? .development : .production,
                    event: index < 5 ? .keyGenerated : .rateLimitChanged,
                    context: .cli
                )
            )
        }
        try await store.recordAudit(AuditEntry(at: start, accountID: AccountID(rawValue: "acct_other"), event: .keyGenerated, context: .cli))

        var pages: [[AuditEntry]] = []
        var query = AuditQuery(limit: 3)
        while true {
            let page = try await store.auditEntries(for: account.id, matching: query)
            if page.isEmpty { break }
            pages.append(page)
            query.before = (page.last!.at, page.last!.id)
        }
        let all = pages.flatMap { $0 }
        #expect(pages.map(\.count) == [3, 3, 1])
        #expect(all.count == 7 && Set(all.map(\.id)).count == 7, "no entry twice, none missed across equal times")
        #expect(zip(all, all.dropFirst()).allSatisfy { ($0.at, $0.id) > ($1.at, $1.id) }, "newest first")
        #expect(try await store.auditEntries(for: account.id, matching: AuditQuery(event: .rateLimitChanged)).count == 2)
        #expect(try await store.auditEntries(for: account.id, matching: AuditQuery(environment: .development)).count == 4)
        #expect(try await store.auditEntries(for: account.id, matching: AuditQuery(since: start.addingTimeInterval(2))).count == 3)

        #expect(try await store.deleteAuditEntries(before: start.addingTimeInterval(1)) == 3, "two of the account's and the other's")
        #expect(try await store.auditEntries(for: account.id, matching: AuditQuery(limit: 100)).count == 5)
    }

    @Test(arguments: StoreKind.allCases)
    func anEndedGraceIsRecordedOnceWhateverTheInstances(kind: StoreKind) async throws {
        let stores = try await kind.makeSharedStores(3)
        let account = try await stores[0].createAccount(name: "Acme", at: Date())
        let environment = EnvironmentID(accountID: account.id, environment: .production)
        let keys = SecretKeys(store: stores[0])
        let rolledAt = Date().addingTimeInterval(-120)
        let (_, first) = try await keys.generate(for: environment, createdBy: "t", at: rolledAt.addingTimeInterval(-1))
        let (_, second) = try await keys.roll(for: environment, grace: try KeyGrace(seconds: 60), createdBy: "t", at: rolledAt)
        // The first key's grace is ended early by the second roll: recorded then, never as expired.
        _ = try await keys.roll(for: environment, grace: try KeyGrace(seconds: 30), createdBy: "t", at: rolledAt.addingTimeInterval(1))
        #expect(try await stores[1].recordExpiredGraces(at: rolledAt.addingTimeInterval(0.5)) == 0, "nothing has ended yet")

        let counts = try await withThrowingTaskGroup(of: Int.self) { group in
            for store in stores { group.addTask { try await store.recordExpiredGraces(at: Date()) } }
            return try await group.reduce(0, +)
        }
        let expired = try await stores[2].auditEntries(for: account.id, matching: AuditQuery(event: .keyExpired))
        #expect(counts == 1 && expired.map(\.resourceID) == [second.id.rawValue], "\(counts) \(expired.map(\.resourceID))")
        #expect(expired.first?.at == rolledAt.addingTimeInterval(31).keywayPrecision, "dated at the end of the grace")
        let endedEarly = try await stores[0].auditEntries(for: account.id, matching: AuditQuery(event: .keyRevoked))
        #expect(endedEarly.map(\.resourceID) == [first.id.rawValue] && endedEarly.first?.details["revocationReason"] == "expired_after_roll")
    }
}

extension AuditLogTests {
    /// A generation dated before a grace's end that reaches the database after the maintenance
    /// service recorded the end leaves the expired key as it is: one final entry, its true end.
    @Test(arguments: StoreKind.allCases)
    func aLateGenerationLeavesAGraceRecordedAsEndedAlone(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let keys = SecretKeys(store: store)
        let start = Date().addingTimeInterval(-10).keywayPrecision
        let (_, old) = try await keys.generate(for: environment, createdBy: "t", at: start)
        _ = try await keys.roll(for: environment, grace: try KeyGrace(seconds: 2), createdBy: "t", at: start.addingTimeInterval(1))
        let end = start.addingTimeInterval(3)
        #expect(try await store.recordExpiredGraces(at: Date()) == 1)
        _ = try await keys.generate(for: environment, createdBy: "late", at: end.addingTimeInterval(-0.5))
        let record = try #require(try await store.secretKeys(for: account.id).first { $0.id == old.id })
        #expect(record.revokedAt == end && record.revocationReason == .expiredAfterRoll, "\(record)")
        let aboutIt = try await store.auditEntries(for: account.id, matching: AuditQuery(limit: 100)).filter { $0.resourceID == old.id.rawValue }
        #expect(aboutIt.map(\.event).sorted { $0.rawValue < $1.rawValue } == [.keyExpired, .keyGenerated, .keyRolled])
    }

    /// Only a sign-out that ended a session is recorded: a second one (another tab) is none.
    @Test(arguments: StoreKind.allCases)
    func aSignOutOfAnEndedSessionIsNotRecorded(kind: StoreKind) async throws {
        let store = try await kind.makeStore()
        let (account, owner) = try await store.createAccount(name: "Acme", ownerEmail: "o@acme.test", passwordHash: "h", at: Date(), audit: .system)
        let now = Date()
        let session = DashboardSession.fresh(of: owner, at: now, lasting: 60)
        try await store.createSession(session, audit: .member(.signedIn, owner, at: now, context: .system))
        for _ in 0..<2 {
            try await store.deleteSession(digest: session.digest, audit: .member(.signedOut, owner, at: now, context: .system))
        }
        #expect(try await store.auditEntries(for: account.id, matching: AuditQuery(event: .signedOut)).count == 1)
    }
}

extension StoreKind {
    /// Makes every insert into the audit log fail, as a full disk or a broken table would.
    func failAuditInserts(in store: any KeywayStore) async throws {
        switch self {
        case .sqlite:
            let store = try #require(store as? KeywaySQLiteStore)
            try await store.database.write { db in
                try db.execute(sql: "CREATE TRIGGER audit_fails BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit log unavailable'); END")
            }
        case .postgres:
            let store = try #require(store as? KeywayPostgresStore)
            try await store.execute(
                "CREATE FUNCTION audit_fails() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'audit log unavailable'; END $$ LANGUAGE plpgsql"
            )
            try await store.execute("CREATE TRIGGER audit_fails BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_fails()")
        }
    }
}
