import Foundation
import KeywayCore
import Testing

/// Store behaviour behind the dashboard: members, sessions and username search. Runs on every store.
@Suite struct MemberStoreTests {
    @Test(arguments: StoreKind.allCases)
    func signingUpCreatesAnAccountWithItsOwner(kind: StoreKind) async throws {
        let store = try await kind.makeStore()
        let (account, owner) = try await store.createAccount(
            name: "Acme",
            ownerEmail: "owner@acme.test",
            passwordHash: "hash-1",
            at: Date(),
            audit: .system
        )
        #expect(owner.accountID == account.id)
        #expect(owner.role == .owner)
        #expect(try await store.account(account.id) == account)
        #expect(try await store.member(owner.id, in: account.id) == owner)
        let credentials = try #require(try await store.memberCredentials(email: "owner@acme.test"))
        #expect(credentials.member == owner)
        #expect(credentials.passwordHash == "hash-1")
        #expect(try await store.memberCredentials(email: "nobody@acme.test") == nil)
        // Both environments exist: keys can be generated for each.
        for environment in Environment.allCases {
            _ = try await store.insertKeyRevokingPrevious(
                .generate(for: environment),
                for: .init(accountID: account.id, environment: environment),
                createdBy: owner.email,
                at: Date()
            )
        }
    }

    @Test(arguments: StoreKind.allCases)
    func anEmailSignsInToOneAccountOnly(kind: StoreKind) async throws {
        let store = try await kind.makeStore()
        _ = try await store.createAccount(name: "Acme", ownerEmail: "same@example.test", passwordHash: "h", at: Date(), audit: .system)
        await #expect(throws: KeywayError.emailTaken()) {
            try await store.createAccount(name: "Globex", ownerEmail: "same@example.test", passwordHash: "h", at: Date(), audit: .system)
        }
        #expect(try await store.accounts().count == 1, "the refused sign-up left no account behind")
    }

    @Test(arguments: StoreKind.allCases)
    func sessionsExpireAndEndWithAPasswordChange(kind: StoreKind) async throws {
        let store = try await kind.makeStore()
        let (_, owner) = try await store.createAccount(name: "Acme", ownerEmail: "o@acme.test", passwordHash: "old", at: Date(), audit: .system)
        let now = Date()
        let first = DashboardSession.fresh(of: owner, at: now, csrf: "c1")
        let second = DashboardSession.fresh(of: owner, at: now, csrf: "c2")
        try await store.createSession(first, audit: .member(.signedIn, owner, at: now, context: .system))
        try await store.createSession(second, audit: .member(.signedIn, owner, at: now, context: .system))
        #expect(try await store.session(digest: first.digest, at: now) == first)
        #expect(try await store.session(digest: first.digest, at: now.addingTimeInterval(7200)) == nil, "expired sessions are not returned")

        try await store.deleteSession(digest: first.digest, audit: .member(.signedOut, owner, at: now, context: .system))
        #expect(try await store.session(digest: first.digest, at: now) == nil)
        #expect(try await store.session(digest: second.digest, at: now) == second)

        try await store.changePassword(of: owner.id, to: "new", audit: .member(.passwordChanged, owner, at: now, context: .system))
        #expect(try await store.session(digest: second.digest, at: now) == nil)
        #expect(try await store.passwordHash(of: owner.id) == "new")
    }

    @Test(arguments: StoreKind.allCases)
    func expiredSessionsAreDeleted(kind: StoreKind) async throws {
        let store = try await kind.makeStore()
        let (_, owner) = try await store.createAccount(name: "Acme", ownerEmail: "o@acme.test", passwordHash: "h", at: Date(), audit: .system)
        let now = Date()
        let stale = DashboardSession.fresh(of: owner, at: now, lasting: -1)
        try await store.createSession(stale, audit: .member(.signedIn, owner, at: now, context: .system))
        try await store.deleteExpiredSessions(before: now)
        #expect(try await store.session(digest: stale.digest, at: now.addingTimeInterval(-10)) == nil)
    }

    @Test(arguments: StoreKind.allCases)
    func usersAreSearchedAndCountedByUsernamePrefix(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let development = EnvironmentID(accountID: account.id, environment: .development)
        for name in ["anna", "anne", "annabel", "bob", "an", "zoë", "ann%", "ann_x"] {
            _ = try await store.createUser(try NewUser(username: name, fullName: nil), in: development, at: Date())
        }
        _ = try await store.createUser(try NewUser(username: "annika", fullName: nil), in: development.sibling, at: Date())

        #expect(try await store.countUsers(in: development, usernamePrefix: "") == 8)
        #expect(try await store.countUsers(in: development, usernamePrefix: "ann") == 5)
        #expect(try await store.countUsers(in: development, usernamePrefix: "ann%") == 1, "no wildcards in prefixes")
        let firstPage = try await store.users(in: development, usernamePrefix: "ann", afterUsername: nil, limit: 3)
        #expect(firstPage.map(\.username) == ["ann%", "ann_x", "anna"])
        let secondPage = try await store.users(in: development, usernamePrefix: "ann", afterUsername: "anna", limit: 3)
        #expect(secondPage.map(\.username) == ["annabel", "anne"])
        #expect(try await store.users(in: development, usernamePrefix: "zo", afterUsername: nil, limit: 10).map(\.username) == ["zoë"])
        #expect(try await store.users(in: development.sibling, usernamePrefix: "ann", afterUsername: nil, limit: 10).map(\.username) == ["annika"])
    }
}
