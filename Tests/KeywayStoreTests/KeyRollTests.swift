import Foundation
import KeywayCore
import Testing

/// Rolling a key with a grace period, on every store: the old key works until the grace ends
/// and never after, at most one key is in grace per environment, and every process bounds it.
@Suite struct KeyRollTests {
    private static let start = Date(timeIntervalSince1970: 1_800_000_000)

    private static func roll(
        _ store: any KeywayStore,
        _ environment: EnvironmentID,
        graceSeconds: Int,
        at date: Date,
        replacing replacement: KeyReplacement = .whicheverIsActive
    ) async throws -> (GeneratedSecretKey, KeyGeneration) {
        let key = GeneratedSecretKey.generate(for: environment.environment)
        let generation = try await store.insertKeyRevokingPrevious(
            key,
            for: environment,
            replacing: replacement,
            retiring: .roll(until: date.addingTimeInterval(TimeInterval(graceSeconds))),
            limit: nil,
            audit: AuditContext(actor: "t"),
            at: date
        )
        return (key, generation)
    }

    @Test(arguments: StoreKind.allCases)
    func aRolledKeyIsRecordedWithTheEndOfItsGrace(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .production)
        let old = GeneratedSecretKey.generate(for: .production)
        _ = try await store.insertKeyRevokingPrevious(old, for: environment, createdBy: "t", at: Self.start)
        let before = try await store.latestRevocationSequence()

        let (new, generation) = try await Self.roll(store, environment, graceSeconds: 3600, at: Self.start.addingTimeInterval(10))
        let end = Self.start.addingTimeInterval(3610)
        #expect(generation.revoked.map(\.digest) == [old.digest])
        #expect(generation.revoked.map(\.revokedAt) == [end])
        #expect(generation.revoked.map(\.reason) == [.expiredAfterRoll])

        let rolled = try #require(try await store.secretKey(digest: old.digest))
        #expect(!rolled.isActive, "the new key is the environment's current key")
        #expect(rolled.revokedAt == end && rolled.revocationReason == .expiredAfterRoll)
        #expect(rolled.isAccepted(at: end.addingTimeInterval(-0.001)))
        #expect(!rolled.isAccepted(at: end))
        #expect(rolled.graceEnd(at: Self.start) == end)
        #expect(rolled.graceEnd(at: end) == nil)
        #expect(try await store.secretKey(digest: new.digest)?.isActive == true)
        // Other processes learn of the roll, with its date, from the revocation log at once.
        let followed = try await store.revocations(after: before, limit: 10)
        #expect(followed.map(\.digest) == [old.digest] && followed.map(\.revokedAt) == [end])
    }

    @Test(arguments: StoreKind.allCases)
    func rollingAgainEndsThePreviousGraceAtOnce(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let first = GeneratedSecretKey.generate(for: .development)
        _ = try await store.insertKeyRevokingPrevious(first, for: environment, createdBy: "t", at: Self.start)
        let (second, _) = try await Self.roll(store, environment, graceSeconds: 86_400, at: Self.start.addingTimeInterval(1))
        let sequenceAfterFirstRoll = try await store.latestRevocationSequence()

        let secondRoll = Self.start.addingTimeInterval(2)
        let (third, generation) = try await Self.roll(store, environment, graceSeconds: 3600, at: secondRoll)
        #expect(Set(generation.revoked.map(\.digest)) == [first.digest, second.digest])
        let ended = try #require(try await store.secretKey(digest: first.digest))
        #expect(ended.revokedAt == secondRoll && ended.revocationReason == .expiredAfterRoll)
        #expect(!ended.isAccepted(at: secondRoll))
        let inGrace = try #require(try await store.secretKey(digest: second.digest))
        #expect(inGrace.revokedAt == secondRoll.addingTimeInterval(3600))
        #expect(try await store.secretKey(digest: third.digest)?.isActive == true)
        let accepted = try await store.secretKeys(for: account.id).filter { $0.isAccepted(at: secondRoll) }
        #expect(Set(accepted.map(\.digest)) == [second.digest, third.digest], "one key in grace at most, and one current")
        // The ended grace moved the first key to a later number, so a follower past the roll sees it.
        let followed = try await store.revocations(after: sequenceAfterFirstRoll, limit: 10)
        #expect(Set(followed.map(\.digest)) == [first.digest, second.digest])
    }

    @Test(arguments: StoreKind.allCases)
    func regeneratingRevokesTheKeyInGraceToo(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let first = GeneratedSecretKey.generate(for: .development)
        _ = try await store.insertKeyRevokingPrevious(first, for: environment, createdBy: "t", at: Self.start)
        let (second, _) = try await Self.roll(store, environment, graceSeconds: 86_400, at: Self.start.addingTimeInterval(1))
        let now = Self.start.addingTimeInterval(2)
        let generation = try await store.insertKeyRevokingPrevious(
            .generate(for: .development),
            for: environment,
            createdBy: "t",
            at: now
        )
        #expect(Set(generation.revoked.map(\.digest)) == [first.digest, second.digest])
        #expect(generation.revoked.allSatisfy { $0.revokedAt == now && $0.reason == .regenerated })
        #expect(try await store.secretKeys(for: account.id).filter { $0.isAccepted(at: now) }.count == 1)
    }

    @Test(arguments: StoreKind.allCases)
    func aFormThatShowedTheCurrentKeyRollsItWhateverIsInGrace(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .production)
        _ = try await store.insertKeyRevokingPrevious(.generate(for: .production), for: environment, createdBy: "t", at: Self.start)
        let (_, rolled) = try await Self.roll(store, environment, graceSeconds: 600, at: Self.start.addingTimeInterval(1))
        // The key in grace is not the current key: naming the current one is what a page does.
        _ = try await Self.roll(store, environment, graceSeconds: 600, at: Self.start.addingTimeInterval(2), replacing: .only(rolled.key.id))
        let stale = await #expect(throws: KeywayError.self) {
            try await Self.roll(store, environment, graceSeconds: 600, at: Self.start.addingTimeInterval(3), replacing: .only(rolled.key.id))
        }
        #expect(stale?.code == .activeKeyChanged)
    }

    @Test(arguments: StoreKind.allCases)
    func concurrentRollsLeaveOneCurrentKeyAndOneInGrace(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .production)
        _ = try await store.insertKeyRevokingPrevious(.generate(for: .production), for: environment, createdBy: "t", at: Date())
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask { _ = try await Self.roll(store, environment, graceSeconds: 3600, at: Date()) }
            }
            try await group.waitForAll()
        }
        let now = Date()
        let records = try await store.secretKeys(for: account.id)
        #expect(records.filter(\.isActive).count == 1)
        #expect(records.filter { $0.graceEnd(at: now) != nil }.count == 1)
        #expect(records.filter { $0.isAccepted(at: now) }.count == 2)
    }

    // MARK: The key service

    @Test(arguments: StoreKind.allCases)
    func bothKeysWorkDuringTheGraceAndOnlyTheNewOneAfter(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let keys = SecretKeys(store: store)
        let environment = EnvironmentID(accountID: account.id, environment: .production)
        let old = try await keys.generate(for: environment, createdBy: "t", at: Self.start).key
        #expect(try await keys.authenticate(Substring(old.revealPlaintext()), at: Self.start).expiresAt == nil)  // cached

        let grace = try KeyGrace(parsing: "24h")
        let rolledAt = Self.start.addingTimeInterval(5)
        let new = try await keys.roll(for: environment, grace: grace, createdBy: "t", at: rolledAt).key
        let end = rolledAt.addingTimeInterval(86_400)
        let duringGrace = end.addingTimeInterval(-1)
        #expect(try await keys.authenticate(Substring(old.revealPlaintext()), at: duringGrace).expiresAt == end)
        #expect(try await keys.authenticate(Substring(new.revealPlaintext()), at: duringGrace).expiresAt == nil)

        let refused = await #expect(throws: KeywayError.self) { try await keys.authenticate(Substring(old.revealPlaintext()), at: end) }
        #expect(refused?.code == .revokedAPIKey)
        #expect(refused?.details["revocationReason"] == "expired_after_roll")
        #expect(refused?.message.contains("grace period ended") == true)
        _ = try await keys.authenticate(Substring(new.revealPlaintext()), at: end)
        // A process that never saw the old key reads the same from the store.
        let fresh = SecretKeys(store: store)
        #expect(try await fresh.authenticate(Substring(old.revealPlaintext()), at: duringGrace).expiresAt == end)
        let refusedFresh = await #expect(throws: KeywayError.self) {
            try await SecretKeys(store: store).authenticate(Substring(old.revealPlaintext()), at: end)
        }
        #expect(refusedFresh?.details["revocationReason"] == "expired_after_roll")
    }

    @Test(arguments: StoreKind.allCases)
    func everyProcessBoundsTheGraceOnceItHasFollowedTheRoll(kind: StoreKind) async throws {
        let stores = try await kind.makeSharedStores(3)
        let account = try await stores[0].createAccount(name: "Acme", at: Date())
        let environment = EnvironmentID(accountID: account.id, environment: .production)
        // Two processes on each database: refusing the key at the grace's end caches it as
        // revoked, so those that check the end cannot also show a later revocation reaching them.
        let checkingTheEnd = stores.map { SecretKeys(store: $0) }
        let followingTheSecondRoll = stores.map { SecretKeys(store: $0) }
        let processes = checkingTheEnd + followingTheSecondRoll
        for process in processes { try await process.followRevocations() }
        let old = try await processes[0].generate(for: environment, createdBy: "t").key
        // Every process caches the old key as the current one.
        for process in processes { #expect(try await process.authenticate(Substring(old.revealPlaintext())).expiresAt == nil) }

        let rolledAt = Date().keywayPrecision
        _ = try await processes[1].roll(for: environment, grace: try KeyGrace(seconds: 60), createdBy: "t", at: rolledAt)
        let end = rolledAt.addingTimeInterval(60)
        for process in processes {
            try await process.followRevocations()
            #expect(try await process.authenticate(Substring(old.revealPlaintext()), at: rolledAt).expiresAt == end)
        }
        for process in checkingTheEnd {
            // After the grace, with nothing more to follow, each refuses it by the clock alone.
            let refused = await #expect(throws: KeywayError.self) { try await process.authenticate(Substring(old.revealPlaintext()), at: end) }
            #expect(refused?.details["revocationReason"] == "expired_after_roll")
        }
        // Ending the grace early (a second roll) reaches every process as a revocation does: these
        // still hold the old key as working until `end`, and only following can tell them otherwise.
        _ = try await processes[2].roll(for: environment, grace: try KeyGrace(seconds: 60), createdBy: "t")
        for process in followingTheSecondRoll {
            try await process.followRevocations()
            let refused = await #expect(throws: KeywayError.self) {
                try await process.authenticate(Substring(old.revealPlaintext()), at: rolledAt.addingTimeInterval(1))
            }
            #expect(refused?.code == .revokedAPIKey)
        }
    }

    // MARK: Grace lengths

    @Test(arguments: [("now", 0), ("0", 0), ("90s", 90), ("45m", 2700), ("24h", 86_400), ("7d", 604_800), (" 36H ", 129_600)])
    func graceLengthsAreRead(text: String, seconds: Int) throws {
        #expect(try KeyGrace(parsing: text).seconds == seconds)
    }

    @Test(arguments: ["", "8d", "169h", "604801s", "-1h", "1.5h", "h", "24", "1w", "soon", "99999999999999999999d"])
    func badGraceLengthsAreRefusedNamingTheField(text: String) {
        let error = #expect(throws: KeywayError.self) { try KeyGrace(parsing: text, field: "customGrace") }
        #expect(error?.code == .invalidInput && error?.details["field"] == "customGrace")
    }

    @Test func graceLengthsPrintInTheirLargestUnit() throws {
        #expect(try KeyGrace(seconds: 0).description == "now")
        #expect(try KeyGrace(seconds: 86_400).description == "1d")
        #expect(try KeyGrace(seconds: 5400).description == "90m")
        #expect(try KeyGrace(seconds: 61).description == "61s")
    }
}
