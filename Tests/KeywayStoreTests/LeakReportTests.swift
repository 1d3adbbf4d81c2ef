import Foundation
import KeywayCore
import Testing

/// Leak reports on every store: a live key reported is revoked at once, once, whatever races it.
@Suite struct LeakReportTests {
    static let report = LeakReport(url: "https://github.com/acme/app/blob/main/.env", source: "content", type: "keyway_api_key")

    @Test(arguments: StoreKind.allCases)
    func aReportedKeyIsRevokedEverywhereItIsFollowed(kind: StoreKind) async throws {
        let stores = try await kind.makeSharedStores(2)
        let account = try await stores[0].createAccount(name: "Acme", at: Date())
        let environment = EnvironmentID(accountID: account.id, environment: .production)
        let here = SecretKeys(store: stores[0])
        let there = SecretKeys(store: stores[1])
        try await there.followRevocations()
        let key = try await here.generate(for: environment, createdBy: "t").key
        _ = try await there.authenticate(Substring(key.revealPlaintext()))  // cached as active there

        let outcome = try await here.reportLeaked(Substring(key.revealPlaintext()), report: Self.report, audit: .cli)
        guard case .revoked(let record, let revocation) = outcome else {
            Issue.record("\(outcome)")
            return
        }
        #expect(record.digest == key.digest && revocation.reason == .leaked)
        let refused = await #expect(throws: KeywayError.self) { try await here.authenticate(Substring(key.revealPlaintext())) }
        #expect(refused?.details["revocationReason"] == "leaked", "refused here before the report returns")
        try await there.followRevocations()
        let refusedThere = await #expect(throws: KeywayError.self) { try await there.authenticate(Substring(key.revealPlaintext())) }
        #expect(refusedThere?.details["revocationReason"] == "leaked", "and by every process that follows revocations")

        // Reported again, or a token that is no key: nothing more happens.
        #expect(
            try await here.reportLeaked(Substring(key.revealPlaintext()), report: Self.report, audit: .cli)
                == .alreadyRevoked(record.revoked(at: revocation.revokedAt, reason: .leaked))
        )
        #expect(try await here.reportLeaked("kw_prod_nonsense", report: Self.report, audit: .cli) == .unknown)
        #expect(
            try await here.reportLeaked(Substring(GeneratedSecretKey.generate(for: .production).revealPlaintext()), report: Self.report, audit: .cli)
                == .unknown
        )
        let entries = try await stores[1].auditEntries(for: account.id, matching: AuditQuery(event: .keyReportedLeaked))
        #expect(entries.count == 1 && entries.first?.details == Self.report.details && entries.first?.hashedToken == key.digest.base64)
    }

    /// A report racing a roll of the same key ends with the key refused as leaked in either
    /// order: the report takes the generation's lock, so neither overwrites the other.
    @Test(arguments: StoreKind.allCases)
    func aReportRacingARollLeavesTheKeyRevokedAsLeaked(kind: StoreKind) async throws {
        let stores = try await kind.makeSharedStores(2)
        let account = try await stores[0].createAccount(name: "Acme", at: Date())
        let environment = EnvironmentID(accountID: account.id, environment: .production)
        for _ in 0..<5 {
            let key = try await SecretKeys(store: stores[0]).generate(for: environment, createdBy: "t").key
            async let rolled = SecretKeys(store: stores[0]).roll(for: environment, grace: try KeyGrace(parsing: "1h"), createdBy: "t")
            async let reported = SecretKeys(store: stores[1]).reportLeaked(Substring(key.revealPlaintext()), report: Self.report, audit: .cli)
            _ = try await (rolled, reported)
            let record = try #require(try await stores[0].secretKey(digest: key.digest))
            #expect(record.revocationReason == .leaked && !record.isAccepted(at: Date()), "\(record)")
            let records = try await stores[0].secretKeys(for: account.id)
            #expect(records.filter(\.isActive).count == 1, "the roll's new key is the current one")
        }
    }
}

extension LeakReportTests {
    /// Invented keys (their checksum is public, so anyone can make them) and dead ones cost a
    /// read each, never a write transaction or an environment's lock.
    @Test(arguments: StoreKind.allCases)
    func reportsOfInventedOrDeadKeysWriteNothing(kind: StoreKind) async throws {
        let (base, account) = try await kind.makeStoreWithAccount()
        let store = CountingStore(base)
        let keys = SecretKeys(store: store)
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let dead = try await keys.generate(for: environment, createdBy: "t").key
        _ = try await keys.generate(for: environment, createdBy: "t")
        for _ in 0..<50 {
            let invented = GeneratedSecretKey.generate(for: .production).revealPlaintext()
            #expect(try await keys.reportLeaked(Substring(invented), report: Self.report, audit: .cli) == .unknown)
        }
        guard case .alreadyRevoked = try await keys.reportLeaked(Substring(dead.revealPlaintext()), report: Self.report, audit: .cli) else {
            Issue.record("a regenerated key is a real key, revoked before")
            return
        }
        #expect(store.leakRevocations == 0)
    }

    /// A report written by a process whose clock is ahead is dated after now: it still applies
    /// at once everywhere, as `leaked`, and is never taken for a roll's grace.
    @Test(arguments: StoreKind.allCases)
    func aReportDatedAheadAppliesAtOnceAsLeaked(kind: StoreKind) async throws {
        let stores = try await kind.makeSharedStores(2)
        let account = try await stores[0].createAccount(name: "Acme", at: Date())
        let environment = EnvironmentID(accountID: account.id, environment: .production)
        let there = SecretKeys(store: stores[1])
        try await there.followRevocations()
        let key = try await SecretKeys(store: stores[0]).generate(for: environment, createdBy: "t").key
        _ = try await there.authenticate(Substring(key.revealPlaintext()))  // cached as active there
        let ahead = Date().addingTimeInterval(30)
        _ = try await SecretKeys(store: stores[0]).reportLeaked(Substring(key.revealPlaintext()), report: Self.report, audit: .cli, at: ahead)
        try await there.followRevocations()
        let refused = await #expect(throws: KeywayError.self) { try await there.authenticate(Substring(key.revealPlaintext())) }
        #expect(refused?.details["revocationReason"] == "leaked")
        let fresh = await #expect(throws: KeywayError.self) {
            try await SecretKeys(store: stores[1]).authenticate(Substring(key.revealPlaintext()))
        }
        #expect(fresh?.details["revocationReason"] == "leaked", "read from the store too")
        let record = try #require(try await stores[1].secretKey(digest: key.digest))
        #expect(!record.isAccepted(at: Date()) && record.graceEnd(at: Date()) == nil)
    }
}

extension SecretKeyRecord {
    /// This record as revoked at `date` for `reason`.
    fileprivate func revoked(at date: Date, reason: RevocationReason) -> SecretKeyRecord {
        var copy = self
        copy.revokedAt = date
        copy.revocationReason = reason
        return copy
    }
}
