import Foundation
import KeywayCore
import Testing

/// Key-generation limits and allowed origins, on every store.
extension StoreConformanceTests {
    // MARK: Key generation limit

    @Test(arguments: StoreKind.allCases)
    func generationsBeyondTheLimitAreRefusedPerEnvironmentUntilTheWindowMoves(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let production = EnvironmentID(accountID: account.id, environment: .production)
        let limit = KeyGenerationLimit(count: 2, windowSeconds: 60)
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        for second in [0, 10] {
            _ = try await store.insertKeyRevokingPrevious(
                .generate(for: .development),
                for: development,
                replacing: .whicheverIsActive,
                limit: limit,
                createdBy: "t",
                at: start.addingTimeInterval(TimeInterval(second))
            )
        }
        let refused = await #expect(throws: KeywayError.self) {
            try await store.insertKeyRevokingPrevious(
                .generate(for: .development),
                for: development,
                replacing: .whicheverIsActive,
                limit: limit,
                createdBy: "t",
                at: start.addingTimeInterval(20)
            )
        }
        #expect(refused?.code == .tooManyKeyGenerations)
        #expect(refused?.details["retryAfter"] == "40", "the oldest generation leaves the window at 60 s")
        #expect(try await store.secretKeys(for: account.id).count == 2, "nothing was generated")
        // Another environment has its own count.
        _ = try await store.insertKeyRevokingPrevious(
            .generate(for: .production),
            for: production,
            replacing: .whicheverIsActive,
            limit: limit,
            createdBy: "t",
            at: start.addingTimeInterval(20)
        )
        // Once the oldest leaves the window, one more may be generated.
        _ = try await store.insertKeyRevokingPrevious(
            .generate(for: .development),
            for: development,
            replacing: .whicheverIsActive,
            limit: limit,
            createdBy: "t",
            at: start.addingTimeInterval(61)
        )
    }

    @Test(arguments: StoreKind.allCases)
    func concurrentGenerationsCannotAllPassTheLimit(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let limit = KeyGenerationLimit(count: 3, windowSeconds: 60)
        let outcomes = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<12 {
                group.addTask {
                    do {
                        _ = try await store.insertKeyRevokingPrevious(
                            .generate(for: .development),
                            for: environment,
                            replacing: .whicheverIsActive,
                            limit: limit,
                            createdBy: "race",
                            at: Date()
                        )
                        return true
                    } catch let error as KeywayError where error.code == .tooManyKeyGenerations {
                        return false
                    }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(outcomes.filter { $0 }.count == 3)
        #expect(try await store.secretKeys(for: account.id).count == 3)
    }

    // MARK: Allowed origins

    @Test(arguments: StoreKind.allCases)
    func allowedOriginsAreKeptInOrderAndFoundFromAnyEnvironment(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let other = try await store.createAccount(name: "Globex", at: Date())
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let production = EnvironmentID(accountID: account.id, environment: .production)
        try await store.setAllowedOrigins(
            try origins("https://b.acme.test", "https://a.acme.test", "https://b.acme.test"),
            for: development,
            audit: .system
        )
        try await store.setAllowedOrigins(try origins("https://shared.test"), for: production, audit: .system)
        try await store.setAllowedOrigins(
            try origins("https://shared.test"),
            for: EnvironmentID(accountID: other.id, environment: .development),
            audit: .system
        )

        #expect(try await store.allowedOrigins(for: development) == ["https://b.acme.test", "https://a.acme.test"])
        #expect(try await store.allowedOrigins(for: EnvironmentID(accountID: other.id, environment: .production)) == [])
        for origin in ["https://a.acme.test", "https://b.acme.test", "https://shared.test"] {
            #expect(try await store.isOriginAllowedAnywhere(origin), "\(origin)")
        }
        for origin in ["", "https://c.acme.test", "https://A.acme.test", "https://a.acme.test\nhttps://b.acme.test", "https://a.acme"] {
            #expect(try await !store.isOriginAllowedAnywhere(origin), "\(origin)")
        }

        // Replacing a list forgets what it no longer names, and one environment's list leaves another's alone.
        try await store.setAllowedOrigins(try origins("https://c.acme.test"), for: development, audit: .system)
        #expect(try await store.allowedOrigins(for: development) == ["https://c.acme.test"])
        #expect(try await !store.isOriginAllowedAnywhere("https://a.acme.test"))
        #expect(try await store.isOriginAllowedAnywhere("https://c.acme.test"))
        try await store.setAllowedOrigins([], for: production, audit: .system)
        #expect(try await store.isOriginAllowedAnywhere("https://shared.test"), "still allowed by the other account")

        let missing = EnvironmentID(accountID: AccountID(rawValue: "acct_missing"), environment: .development)
        await #expect(throws: KeywayError.accountNotFound(missing.accountID)) {
            try await store.setAllowedOrigins(try origins("https://x.test"), for: missing, audit: .system)
        }
    }
}
