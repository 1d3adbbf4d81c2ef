import Foundation
import KeywayCore
import Testing

/// The key service on top of every store: verification, the in-memory cache and revocation.
@Suite struct SecretKeysTests {
    @Test(arguments: StoreKind.allCases)
    func aGeneratedKeyAuthenticatesToItsEnvironment(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let keys = SecretKeys(store: store)
        let environment = EnvironmentID(accountID: account.id, environment: .production)
        let (key, record) = try await keys.generate(for: environment, createdBy: "test")
        let principal = try await keys.authenticate(Substring(key.revealPlaintext()))
        #expect(principal == AuthenticatedKey(keyID: record.id, environmentID: environment, hint: key.hint))
    }

    @Test(arguments: StoreKind.allCases)
    func regeneratingRevokesThePreviousKeyBeforeReturning(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let keys = SecretKeys(store: store)
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let old = try await keys.generate(for: environment, createdBy: "test").key
        _ = try await keys.authenticate(Substring(old.revealPlaintext()))  // now cached as active
        let new = try await keys.generate(for: environment, createdBy: "test").key

        let error = await #expect(throws: KeywayError.self) { try await keys.authenticate(Substring(old.revealPlaintext())) }
        #expect(error?.code == .revokedAPIKey)
        #expect(error?.details["revocationReason"] == "regenerated")
        #expect(error?.details["revokedAt"] != nil)
        #expect(error?.message.contains("revoked at") == true)
        #expect(error?.message.contains(old.revealPlaintext()) == false)
        _ = try await keys.authenticate(Substring(new.revealPlaintext()))
    }

    @Test(arguments: StoreKind.allCases)
    func concurrentRegeneratesLeaveOneWorkingKey(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let keys = SecretKeys(store: store)
        let environment = EnvironmentID(accountID: account.id, environment: .production)
        let generated = try await withThrowingTaskGroup(of: GeneratedSecretKey.self) { group in
            for _ in 0..<16 {
                group.addTask { try await keys.generate(for: environment, createdBy: "race").key }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        var accepted = 0
        var revoked = 0
        for key in generated {
            do {
                _ = try await keys.authenticate(Substring(key.revealPlaintext()))
                accepted += 1
            } catch let error as KeywayError where error.code == .revokedAPIKey {
                revoked += 1
            }
        }
        #expect(accepted == 1)
        #expect(revoked == 15)
        #expect(try await store.secretKeys(for: account.id).filter(\.isActive).count == 1)
    }

    @Test(arguments: StoreKind.allCases)
    func knownKeysAreVerifiedFromMemory(kind: StoreKind) async throws {
        let (base, account) = try await kind.makeStoreWithAccount()
        let store = CountingStore(base)
        let generator = SecretKeys(store: base)
        let key = try await generator.generate(for: .init(accountID: account.id, environment: .development), createdBy: "t").key
        let keys = SecretKeys(store: store)
        for _ in 0..<50 { _ = try await keys.authenticate(Substring(key.revealPlaintext())) }
        #expect(store.keyLookups == 1, "only the first use of a key may read the store")
    }

    @Test(arguments: StoreKind.allCases)
    func unknownKeysAreRememberedWithinABound(kind: StoreKind) async throws {
        let store = CountingStore(try await kind.makeStore())
        let keys = SecretKeys(store: store, inactiveCacheLimit: 8)
        let invented = (0..<20).map { _ in GeneratedSecretKey.generate(for: .development).revealPlaintext() }
        // Counted by answers: an answer is what memory keeps, and a lookup past its deadline
        // (the test's PostgreSQL under a full parallel run) answered nothing to keep.
        for key in invented.prefix(4) {
            for _ in 0..<3 {
                await #expect(throws: KeywayError.self) { try await keys.authenticate(Substring(key)) }
            }
        }
        #expect(store.answeredKeyLookups == 4, "a repeated unknown key is answered from memory")
        for key in invented.dropFirst(4) {
            await #expect(throws: KeywayError.self) { try await keys.authenticate(Substring(key)) }
        }
        let before = store.answeredKeyLookups
        await #expect(throws: KeywayError.self) { try await keys.authenticate(Substring(invented[0])) }
        #expect(store.answeredKeyLookups == before + 1, "the oldest unknown keys are evicted once the bound is reached")
    }

    @Test(arguments: StoreKind.allCases)
    func malformedKeysNeverReachTheStore(kind: StoreKind) async throws {
        let store = CountingStore(try await kind.makeStore())
        let keys = SecretKeys(store: store)
        let valid = GeneratedSecretKey.generate(for: .development).revealPlaintext()
        let badChecksum = String(valid.dropLast()) + (valid.last == "A" ? "B" : "A")
        for token in ["nonsense", badChecksum, "kw_dev_short", "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"] {
            await #expect(throws: KeywayError.self) { try await keys.authenticate(Substring(token)) }
        }
        #expect(store.keyLookups == 0)
    }

    @Test(arguments: StoreKind.allCases)
    func userTokensAreRecognisedAndRefused(kind: StoreKind) async throws {
        let keys = SecretKeys(store: try await kind.makeStore())
        let error = await #expect(throws: KeywayError.self) {
            try await keys.authenticate("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl")
        }
        #expect(error?.code == .userTokenNotAccepted)
    }

    @Test(arguments: StoreKind.allCases)
    func revocationsByAnotherProcessAreFollowed(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let server = SecretKeys(store: store)
        let cli = SecretKeys(store: store)
        try await server.followRevocations()  // as the server does before it starts
        let old = try await cli.generate(for: environment, createdBy: "cli").key
        _ = try await server.authenticate(Substring(old.revealPlaintext()))  // cached as active
        _ = try await cli.generate(for: environment, createdBy: "cli")

        _ = try await server.authenticate(Substring(old.revealPlaintext()))  // not yet followed: still cached
        try await server.followRevocations()
        let error = await #expect(throws: KeywayError.self) { try await server.authenticate(Substring(old.revealPlaintext())) }
        #expect(error?.code == .revokedAPIKey)
    }

    @Test(arguments: StoreKind.allCases)
    func usageIsWrittenInBatches(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let keys = SecretKeys(store: store)
        let (key, record) = try await keys.generate(for: .init(accountID: account.id, environment: .development), createdBy: "t")
        let usedAt = Date(timeIntervalSince1970: 1_900_000_000)
        _ = try await keys.authenticate(Substring(key.revealPlaintext()), at: usedAt)
        #expect(try await store.secretKey(digest: key.digest)?.lastUsedAt == nil, "use is not written on the request path")
        try await keys.flushUsage()
        let stored = try await store.secretKeys(for: account.id).first { $0.id == record.id }
        #expect(stored?.lastUsedAt == usedAt)
    }
}
