import Foundation
import KeywayCore
import Testing

/// Each environment's request limit, on every store.
extension StoreConformanceTests {
    @Test(arguments: StoreKind.allCases)
    func rateLimitsAreStoredPerEnvironmentAndMoveTheVersion(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let production = EnvironmentID(accountID: account.id, environment: .production)
        #expect(try await store.rateLimits().isEmpty, "every environment starts on its default")
        let start = try await store.rateLimitsVersion()

        try await store.setRateLimit(.requestsPerSecond(50), for: development, audit: .system)
        try await store.setRateLimit(.off, for: production, audit: .system)
        #expect(try await store.rateLimits() == [development: .requestsPerSecond(50), production: .off])
        let afterTwo = try await store.rateLimitsVersion()
        #expect(afterTwo >= start + 2, "every change moves the version")

        try await store.setRateLimit(.default, for: development, audit: .system)
        #expect(try await store.rateLimits() == [production: .off], "default is stored as no setting")
        #expect(try await store.rateLimitsVersion() > afterTwo)

        let unknown = EnvironmentID(accountID: AccountID(rawValue: "acct_missing"), environment: .development)
        let refused = await #expect(throws: KeywayError.self) { try await store.setRateLimit(.off, for: unknown, audit: .system) }
        #expect(refused?.code == .accountNotFound)
    }

    /// Another process (the CLI) sets a limit: a server sharing the database sees it at its next refresh.
    @Test(arguments: StoreKind.allCases)
    func aLimitSetByAnotherProcessIsReadAtTheNextRefresh(kind: StoreKind) async throws {
        let stores = try await kind.makeSharedStores(2)
        let account = try await stores[0].createAccount(name: "Acme", at: Date())
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let server = RateLimits(store: stores[0])
        try await server.refresh()
        #expect(server.setting(for: development) == .default)
        try await stores[1].setRateLimit(.requestsPerSecond(7), for: development, audit: .system)
        try await server.refresh()
        #expect(server.setting(for: development) == .requestsPerSecond(7))
    }
}
