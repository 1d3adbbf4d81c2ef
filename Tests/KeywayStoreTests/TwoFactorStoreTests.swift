import Foundation
import KeywayCore
import Testing

/// Second factors in storage: each code step, recovery code and confirmation works once, on every store, under races.
@Suite struct TwoFactorStoreTests {
    static let sealer = TwoFactorSecrets(masterKey: try! MasterKey(bytes: [UInt8](repeating: 9, count: 32)))

    func enrolled(_ kind: StoreKind) async throws -> (any KeywayStore, Member, [KeyDigest]) {
        let store = try await kind.makeStore()
        let (_, owner) = try await store.createAccount(name: "Acme", ownerEmail: "o@acme.test", passwordHash: "h", at: Date(), audit: .system)
        #expect(try await store.twoFactor(of: owner.id) == nil)
        #expect(try await store.hasSigningKeys() == false)
        let pending = try Self.sealer.seal("secret", for: owner.id)
        try await store.setPendingTwoFactorSecret(pending, of: owner.id)
        #expect(try await store.hasSigningKeys(), "a sealed secret keeps the master key file from being replaced")
        let codes = (0..<10).map { KeyDigest(hashing: "code-\($0)".utf8) }
        #expect(
            try await store.enableTwoFactor(
                of: owner.id,
                pending: pending,
                usedStep: 100,
                recoveryCodes: codes,
                keepingSession: nil,
                audit: .member(.twoFactorEnabled, owner, at: Date(), context: .system)
            )
        )
        return (store, owner, codes)
    }

    @Test(arguments: StoreKind.allCases)
    func enablingNeedsAPendingSecretAndHappensOnce(kind: StoreKind) async throws {
        let (store, owner, _) = try await enrolled(kind)
        let record = try #require(try await store.twoFactor(of: owner.id))
        #expect(try Self.sealer.unseal(record.sealedSecret, for: owner.id) == "secret")
        #expect(record.lastStep == 100 && record.recoveryCodesLeft == 10)
        #expect(try await store.pendingTwoFactorSecret(of: owner.id) == nil)
        #expect(
            try await store.enableTwoFactor(
                of: owner.id,
                pending: record.sealedSecret,
                usedStep: 101,
                recoveryCodes: [],
                keepingSession: nil,
                audit: .member(.twoFactorEnabled, owner, at: Date(), context: .system)
            ) == false,
            "a resubmitted confirmation changes nothing"
        )
        #expect(try await store.member(owner.id, in: owner.accountID)?.hasTwoFactor == true)
        let enabled = try await store.auditEntries(for: owner.accountID, matching: AuditQuery(event: .twoFactorEnabled))
        #expect(enabled.count == 1)

        #expect(
            try await store.disableTwoFactor(
                of: owner.id,
                keepingSession: nil,
                audit: .member(.twoFactorDisabled, owner, at: Date(), context: .system)
            )
        )
        #expect(try await store.twoFactor(of: owner.id) == nil)
        #expect(try await store.member(owner.id, in: owner.accountID)?.hasTwoFactor == false)
        #expect(try await store.useRecoveryCode(KeyDigest(hashing: "code-0".utf8), of: owner.id, at: Date()) == false, "codes go with it")
    }

    @Test(arguments: StoreKind.allCases)
    func aStepIsUsedOnceEvenByTwoSignInsAtOnce(kind: StoreKind) async throws {
        let (store, owner, _) = try await enrolled(kind)
        #expect(try await store.useTwoFactorStep(100, of: owner.id) == false, "the confirming code's step is spent")
        let outcomes = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<4 { group.addTask { (try? await store.useTwoFactorStep(101, of: owner.id)) == true } }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(outcomes.filter { $0 }.count == 1, "\(outcomes)")
        #expect(try await store.useTwoFactorStep(100, of: owner.id) == false, "an older step after a newer one")
        #expect(try await store.useTwoFactorStep(102, of: owner.id))
    }

    @Test(arguments: StoreKind.allCases)
    func aRecoveryCodeIsUsedOnceEvenTwiceAtOnce(kind: StoreKind) async throws {
        let (store, owner, codes) = try await enrolled(kind)
        let outcomes = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<4 { group.addTask { (try? await store.useRecoveryCode(codes[3], of: owner.id, at: Date())) == true } }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(outcomes.filter { $0 }.count == 1, "\(outcomes)")
        #expect(try await store.twoFactor(of: owner.id)?.recoveryCodesLeft == 9)
        #expect(try await store.useRecoveryCode(KeyDigest(hashing: "not a code".utf8), of: owner.id, at: Date()) == false)
    }

    @Test(arguments: StoreKind.allCases)
    func aSessionWaitingForItsCodeIsCompletedOnce(kind: StoreKind) async throws {
        let (store, owner, _) = try await enrolled(kind)
        let now = Date()
        var session = DashboardSession.fresh(of: owner, at: now, lasting: 300)
        session.secondFactorPending = true
        try await store.createSession(session, audit: nil)
        #expect(try await store.session(digest: session.digest, at: now)?.secondFactorPending == true)
        #expect(try await store.auditEntries(for: owner.accountID, matching: AuditQuery(event: .signedIn)).isEmpty, "no sign-in yet")
        let later = now.addingTimeInterval(12 * 3600).keywayPrecision
        let signedIn = AuditEntry.member(.signedIn, owner, at: now, context: .system)
        #expect(
            try await store.completeSecondFactor(digest: session.digest, at: now.addingTimeInterval(300), expiresAt: later, audit: signedIn) == false,
            "the five minutes are over"
        )
        #expect(try await store.completeSecondFactor(digest: session.digest, at: now, expiresAt: later, audit: signedIn))
        #expect(try await store.completeSecondFactor(digest: session.digest, at: now, expiresAt: later, audit: signedIn) == false)
        let completed = try #require(try await store.session(digest: session.digest, at: now.addingTimeInterval(3600)))
        #expect(completed.secondFactorPending == false && completed.expiresAt == later)
        #expect(try await store.auditEntries(for: owner.accountID, matching: AuditQuery(event: .signedIn)).count == 1)
    }

    /// A setup restarted in another tab (a new pending secret) is not turned on by a code checked
    /// against the old one; and turning two-factor on or off ends the member's other sessions.
    @Test(arguments: StoreKind.allCases)
    func onlyTheConfirmedSecretIsTurnedOnAndOtherSessionsEnd(kind: StoreKind) async throws {
        let (store, owner, _) = try await enrolled(kind)
        let now = Date()
        let here = DashboardSession.fresh(of: owner, at: now)
        let elsewhere = DashboardSession.fresh(of: owner, at: now)
        for session in [here, elsewhere] { try await store.createSession(session, audit: nil) }
        let checked = try Self.sealer.seal("checked", for: owner.id)
        try await store.setPendingTwoFactorSecret(checked, of: owner.id)
        let restarted = try Self.sealer.seal("restarted", for: owner.id)
        try await store.setPendingTwoFactorSecret(restarted, of: owner.id)
        let audit = AuditEntry.member(.twoFactorEnabled, owner, at: now, context: .system)
        #expect(
            try await store.enableTwoFactor(
                of: owner.id,
                pending: checked,
                usedStep: 200,
                recoveryCodes: [],
                keepingSession: here.digest,
                audit: audit
            ) == false
        )
        #expect(try Self.sealer.unseal(try #require(try await store.twoFactor(of: owner.id)).sealedSecret, for: owner.id) == "secret", "unchanged")
        #expect(try await store.session(digest: elsewhere.digest, at: now) != nil, "nothing changed, nothing ended")
        #expect(
            try await store.enableTwoFactor(
                of: owner.id,
                pending: restarted,
                usedStep: 200,
                recoveryCodes: [],
                keepingSession: here.digest,
                audit: audit
            )
        )
        #expect(
            try Self.sealer.unseal(try #require(try await store.twoFactor(of: owner.id)).sealedSecret, for: owner.id) == "restarted",
            "a new phone replaces the old"
        )
        #expect(try await store.session(digest: here.digest, at: now) != nil)
        #expect(try await store.session(digest: elsewhere.digest, at: now) == nil, "a session opened the old way ends")
    }

    @Test(arguments: StoreKind.allCases)
    func wrongCodesAreCountedUntilARightOneOrARecoveryCode(kind: StoreKind) async throws {
        let (store, owner, codes) = try await enrolled(kind)
        for _ in 0..<3 { try await store.recordTwoFactorFailure(of: owner.id) }
        #expect(try await store.twoFactor(of: owner.id)?.failures == 3)
        #expect(try await store.useTwoFactorStep(101, of: owner.id))
        #expect(try await store.twoFactor(of: owner.id)?.failures == 0, "a right code clears them")
        for _ in 0..<2 { try await store.recordTwoFactorFailure(of: owner.id) }
        #expect(try await store.useRecoveryCode(codes[0], of: owner.id, at: Date()) == true)
        #expect(try await store.twoFactor(of: owner.id)?.failures == 0, "so does a recovery code")
        try await store.recordTwoFactorFailure(of: owner.id)
        #expect(try await store.useRecoveryCode(codes[0], of: owner.id, at: Date()) == false)
        #expect(try await store.twoFactor(of: owner.id)?.failures == 1, "a used recovery code clears nothing")
    }
}
