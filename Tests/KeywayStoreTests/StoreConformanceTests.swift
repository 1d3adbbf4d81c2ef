import Foundation
import KeywayCore
import Testing

/// The behaviour every ``KeywayStore`` must have. Each test runs on every store.
@Suite struct StoreConformanceTests {
    // MARK: Accounts

    @Test(arguments: StoreKind.allCases)
    func accountsAreStoredAndListedOldestFirst(kind: StoreKind) async throws {
        let store = try await kind.makeStore()
        let first = try await store.createAccount(name: "Acme", at: Date(timeIntervalSince1970: 1_000))
        let second = try await store.createAccount(name: "Globex", at: Date(timeIntervalSince1970: 2_000))
        #expect(try await store.account(first.id) == first)
        #expect(try await store.accounts() == [first, second])
        #expect(try await store.account(AccountID(rawValue: "acct_missing")) == nil)
    }

    // MARK: Secret keys

    @Test(arguments: StoreKind.allCases)
    func generatingRevokesThePreviousKey(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .development)
        let before = try await store.latestRevocationSequence()
        let first = GeneratedSecretKey.generate(for: .development)
        let firstGeneration = try await store.insertKeyRevokingPrevious(first, for: environment, createdBy: "test", at: Date())
        #expect(firstGeneration.revoked.isEmpty)
        let second = GeneratedSecretKey.generate(for: .development)
        let secondGeneration = try await store.insertKeyRevokingPrevious(second, for: environment, createdBy: "test", at: Date())

        #expect(secondGeneration.revoked.map(\.digest) == [first.digest])
        let revoked = try #require(try await store.secretKey(digest: first.digest))
        #expect(!revoked.isActive)
        #expect(revoked.revocationReason == .regenerated)
        #expect(revoked.revokedAt == secondGeneration.key.createdAt)
        let current = try #require(try await store.secretKey(digest: second.digest))
        #expect(current.isActive)
        #expect(current.hint == second.hint)
        #expect(current.createdBy == "test")
        #expect(current.environmentID == environment)

        let latest = try await store.latestRevocationSequence()
        #expect(latest > before)
        let followed = try await store.revocations(after: before, limit: 100)
        #expect(followed.map(\.digest) == [first.digest])
        #expect(followed.map(\.sequence) == [latest])
        #expect(try await store.revocations(after: latest, limit: 100).isEmpty)
    }

    @Test(arguments: StoreKind.allCases)
    func environmentsHaveIndependentKeys(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let development = GeneratedSecretKey.generate(for: .development)
        let production = GeneratedSecretKey.generate(for: .production)
        _ = try await store.insertKeyRevokingPrevious(
            development,
            for: .init(accountID: account.id, environment: .development),
            createdBy: "t",
            at: Date()
        )
        let generation = try await store.insertKeyRevokingPrevious(
            production,
            for: .init(accountID: account.id, environment: .production),
            createdBy: "t",
            at: Date()
        )
        #expect(generation.revoked.isEmpty)
        let keys = try await store.secretKeys(for: account.id)
        #expect(keys.count == 2)
        #expect(keys.allSatisfy { $0.isActive })
    }

    @Test(arguments: StoreKind.allCases)
    func concurrentGenerationsLeaveExactlyOneActiveKey(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let environment = EnvironmentID(accountID: account.id, environment: .production)
        let generated = try await withThrowingTaskGroup(of: GeneratedSecretKey.self) { group in
            for _ in 0..<24 {
                group.addTask {
                    let key = GeneratedSecretKey.generate(for: .production)
                    _ = try await store.insertKeyRevokingPrevious(key, for: environment, createdBy: "race", at: Date())
                    return key
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let records = try await store.secretKeys(for: account.id)
        #expect(records.count == 24)
        #expect(records.filter(\.isActive).count == 1)
        let revocations = try await store.revocations(after: 0, limit: 100)
        #expect(revocations.count == 23)
        #expect(Set(revocations.map(\.sequence)).count == 23, "revocation sequence numbers must be unique")
        var active = 0
        for key in generated where try await store.secretKey(digest: key.digest)?.isActive == true { active += 1 }
        #expect(active == 1)
    }

    @Test(arguments: StoreKind.allCases)
    func generatingForAMissingAccountFails(kind: StoreKind) async throws {
        let store = try await kind.makeStore()
        let missing = EnvironmentID(accountID: AccountID(rawValue: "acct_missing"), environment: .development)
        await #expect(throws: KeywayError.accountNotFound(missing.accountID)) {
            try await store.insertKeyRevokingPrevious(.generate(for: .development), for: missing, createdBy: "t", at: Date())
        }
    }

    @Test(arguments: StoreKind.allCases)
    func unknownDigestsAreNotFound(kind: StoreKind) async throws {
        let store = try await kind.makeStore()
        #expect(try await store.secretKey(digest: GeneratedSecretKey.generate(for: .development).digest) == nil)
    }

    @Test(arguments: StoreKind.allCases)
    func keyUsageKeepsTheLatestTime(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let key = GeneratedSecretKey.generate(for: .development)
        let record = try await store.insertKeyRevokingPrevious(
            key,
            for: .init(accountID: account.id, environment: .development),
            createdBy: "t",
            at: Date()
        ).key
        let later = Date(timeIntervalSince1970: 1_900_000_000)
        try await store.recordKeyUsage([record.id: later])
        try await store.recordKeyUsage([record.id: Date(timeIntervalSince1970: 1_800_000_000)])
        #expect(try await store.secretKey(digest: key.digest)?.lastUsedAt == later)
    }

    // MARK: Users

    @Test(arguments: StoreKind.allCases)
    func usernamesAreUniquePerEnvironmentOnly(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let other = try await store.createAccount(name: "Globex", at: Date())
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let alice = try NewUser(username: "alice", fullName: "Alice")
        let created = try await store.createUser(alice, in: development, at: Date())
        await #expect(throws: KeywayError.usernameTaken("alice")) {
            try await store.createUser(alice, in: development, at: Date())
        }
        let inProduction = try await store.createUser(alice, in: development.sibling, at: Date())
        let inOtherAccount = try await store.createUser(alice, in: .init(accountID: other.id, environment: .development), at: Date())
        #expect(Set([created.id, inProduction.id, inOtherAccount.id]).count == 3)
        #expect(try await store.user("alice", in: development) == created)
        #expect(try await store.user("alice", in: development.sibling) == inProduction)
    }

    @Test(arguments: StoreKind.allCases)
    func usersAreFoundByIdOrUsernameOnlyInTheirEnvironment(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let user = try await store.createUser(try NewUser(username: "bob@example.com", fullName: nil), in: development, at: Date())
        #expect(try await store.user(user.id.rawValue, in: development) == user)
        #expect(try await store.user("bob@example.com", in: development) == user)
        #expect(try await store.user(user.id.rawValue, in: development.sibling) == nil)
        #expect(try await store.user("bob@example.com", in: development.sibling) == nil)
        #expect(try await store.user("nobody", in: development) == nil)
        #expect(user.fullName == nil)
    }

    @Test(arguments: StoreKind.allCases)
    func aUsernameCannotBeAnotherUsersIdentifier(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let target = try await store.createUser(try NewUser(username: "target", fullName: nil), in: development, at: Date())
        let impostor = try NewUser(username: target.id.rawValue, fullName: nil)
        let refusal = KeywayError.usernameIsAUserID(target.id.rawValue)

        await #expect(throws: refusal) { try await store.createUser(impostor, in: development, at: Date()) }
        let batch = try await store.createUsers([impostor, try NewUser(username: "fine", fullName: nil)], in: development, at: Date())
        #expect(batch.refused == [target.id.rawValue: .usernameIsAUserID(target.id.rawValue)])
        #expect(batch.created.map(\.username) == ["fine"])
        let other = try await store.createUser(try NewUser(username: "other", fullName: nil), in: development, at: Date())
        await #expect(throws: refusal) {
            try await store.updateUser(other.id, in: development, with: try UserChanges(username: target.id.rawValue, fullName: nil))
        }
        #expect(refusal.details["field"] == "username")
        #expect(try await store.user(target.id.rawValue, in: development) == target)
        #expect(try await store.user(other.id.rawValue, in: development)?.username == "other", "a refused update changes nothing")

        // Another environment's identifiers are not this one's: no rule across them.
        let elsewhere = try await store.createUser(impostor, in: development.sibling, at: Date())
        #expect(try await store.user(target.id.rawValue, in: development.sibling) == elsewhere)
        // Shaped like an identifier, but no user has it: allowed, and the username finds its user.
        let lookalike = try await store.createUser(try NewUser(username: "0123456789abcdef01234567", fullName: nil), in: development, at: Date())
        #expect(try await store.user("0123456789abcdef01234567", in: development) == lookalike)
        // A user may take its own identifier as username; it still names only itself.
        let selfNamed = try await store.updateUser(other.id, in: development, with: try UserChanges(username: other.id.rawValue, fullName: nil))
        #expect(selfNamed?.username == other.id.rawValue)
        // Once the identifier's user is gone, the string is free.
        #expect(try await store.deleteUser(target.id, in: development))
        let successor = try await store.createUser(impostor, in: development, at: Date())
        #expect(try await store.user(target.id.rawValue, in: development) == successor)
        #expect(try await store.user(id: target.id, in: development) == nil, "an identifier lookup never finds a username")
    }

    @Test(arguments: StoreKind.allCases)
    func aNewUserNeverGetsAnIdentifierThatIsAlreadyAUsername(kind: StoreKind) async throws {
        let taken = UserID.generate()
        let fresh = UserID.generate()
        // The first user is named like the identifier the second one would draw first.
        let store = try await kind.makeStore(drawingUserIDs: [UserID.generate(), taken, fresh, taken, UserID.generate()])
        let account = try await store.createAccount(name: "Acme", at: Date())
        let development = EnvironmentID(accountID: account.id, environment: .development)
        _ = try await store.createUser(try NewUser(username: taken.rawValue, fullName: nil), in: development, at: Date())
        let second = try await store.createUser(try NewUser(username: "second", fullName: nil), in: development, at: Date())
        #expect(second.id == fresh, "the identifier equal to a username was drawn again")
        let batch = try await store.createUsers([try NewUser(username: "third", fullName: nil)], in: development, at: Date())
        #expect(batch.created.first?.id != taken)
        #expect(try await store.user(taken.rawValue, in: development)?.username == taken.rawValue, "the name still names one user")
    }

    @Test(arguments: StoreKind.allCases)
    func usernamesThatLookTheSameAreOneUsernameEvenWhenCreatedAtOnce(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let composed = try NewUser(username: "caf\u{E9}", fullName: nil)
        let decomposed = try NewUser(username: "cafe\u{301}", fullName: nil)
        #expect(Array(decomposed.username.unicodeScalars) == Array("caf\u{E9}".unicodeScalars), "stored in NFC")
        let outcomes = await withTaskGroup(of: Result<User, KeywayError>.self) { group in
            for user in [composed, decomposed, composed, decomposed] {
                group.addTask {
                    do { return .success(try await store.createUser(user, in: development, at: Date())) } catch {
                        return .failure(error as? KeywayError ?? KeywayError(.invalidInput, "\(error)"))
                    }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(outcomes.filter { if case .success = $0 { true } else { false } }.count == 1)
        #expect(outcomes.filter { if case .failure(let error) = $0 { error.code == .usernameTaken } else { false } }.count == 3)
        #expect(try await store.countUsers(in: development, usernamePrefix: "") == 1)
    }

    @Test(arguments: StoreKind.allCases)
    func aReferenceIsMatchedWhole(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let bob = try await store.createUser(try NewUser(username: "bob", fullName: nil), in: development, at: Date())
        // A NUL must not end the text early (C strings do), nor a prefix match anything.
        #expect(try await store.user("bob\u{0}x", in: development) == nil)
        #expect(try await store.user(bob.id.rawValue + "\u{0}", in: development) == nil)
        #expect(try await store.user("bo", in: development) == nil)
        #expect(try await store.user(String(bob.id.rawValue.dropLast()), in: development) == nil)
    }

    @Test(arguments: StoreKind.allCases)
    func paginationVisitsEveryUserOnceInIdentifierOrder(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let development = EnvironmentID(accountID: account.id, environment: .development)
        var created: [UserID] = []
        for index in 0..<23 {
            created.append(try await store.createUser(try NewUser(username: "user\(index)", fullName: nil), in: development, at: Date()).id)
        }
        _ = try await store.createUser(try NewUser(username: "elsewhere", fullName: nil), in: development.sibling, at: Date())
        var seen: [UserID] = []
        var cursor: UserID?
        var pages = 0
        repeat {
            let page = try await store.users(in: development, after: cursor, limit: 5)
            #expect(page.users.count <= 5)
            seen += page.users.map(\.id)
            cursor = page.nextCursor
            pages += 1
        } while cursor != nil && pages < 100
        #expect(pages == 5)
        #expect(seen == created.sorted())
        let exact = try await store.users(in: development, after: nil, limit: 23)
        #expect(exact.users.count == 23)
        #expect(exact.nextCursor == nil, "a page that ends exactly at the last user has no next cursor")
    }

    @Test(arguments: StoreKind.allCases)
    func batchCreationSkipsTakenUsernames(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let development = EnvironmentID(accountID: account.id, environment: .development)
        _ = try await store.createUser(try NewUser(username: "taken", fullName: nil), in: development, at: Date())
        let result = try await store.createUsers(
            [
                try NewUser(username: "new1", fullName: "One"), try NewUser(username: "taken", fullName: nil),
                try NewUser(username: "new2", fullName: nil),
            ],
            in: development,
            at: Date()
        )
        #expect(result.created.map(\.username) == ["new1", "new2"])
        #expect(result.refused == ["taken": .usernameTaken("taken")])
        #expect(try await store.users(in: development, after: nil, limit: 10).users.count == 3)
    }

    @Test(arguments: StoreKind.allCases)
    func updatesChangeOnlyWhatIsGivenAndKeepUsernamesUnique(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let carol = try await store.createUser(try NewUser(username: "carol", fullName: "Carol"), in: development, at: Date())
        _ = try await store.createUser(try NewUser(username: "dave", fullName: nil), in: development, at: Date())

        let renamed = try await store.updateUser(carol.id, in: development, with: try UserChanges(username: "caroline", fullName: nil))
        #expect(renamed?.username == "caroline")
        #expect(renamed?.fullName == "Carol")
        let cleared = try await store.updateUser(carol.id, in: development, with: try UserChanges(username: nil, fullName: .some(nil)))
        #expect(cleared?.fullName == nil)
        #expect(cleared?.username == "caroline")
        await #expect(throws: KeywayError.usernameTaken("dave")) {
            try await store.updateUser(carol.id, in: development, with: try UserChanges(username: "dave", fullName: nil))
        }
        #expect(try await store.user(carol.id.rawValue, in: development)?.username == "caroline")
        #expect(try await store.updateUser(carol.id, in: development.sibling, with: try UserChanges(username: "x", fullName: nil)) == nil)
    }

    @Test(arguments: StoreKind.allCases)
    func deletionIsConfinedToTheEnvironment(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let erin = try await store.createUser(try NewUser(username: "erin", fullName: nil), in: development, at: Date())
        #expect(try await store.deleteUser(erin.id, in: development.sibling) == false)
        #expect(try await store.user("erin", in: development) != nil)
        #expect(try await store.deleteUser(erin.id, in: development) == true)
        #expect(try await store.user("erin", in: development) == nil)
        #expect(try await store.deleteUser(erin.id, in: development) == false)
    }

    @Test(arguments: StoreKind.allCases)
    func timestampsRoundTripAtMillisecondPrecision(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let moment = Date(timeIntervalSince1970: 1_764_000_000.123_456)
        let created = try await store.createUser(try NewUser(username: "frank", fullName: nil), in: development, at: moment)
        #expect(created.createdAt == moment.keywayPrecision)
        #expect(try await store.user("frank", in: development)?.createdAt == moment.keywayPrecision)
    }

    @Test(arguments: StoreKind.allCases)
    func aHealthyStoreSaysSo(kind: StoreKind) async throws {
        try await kind.makeStore().checkHealth()
    }
}
