import Foundation
import KeywayCore
import Testing

/// Updates act on the row the lookup found, in one statement, on every store.
extension StoreConformanceTests {
    @Test(arguments: StoreKind.allCases)
    func aUsernameWrittenBeforeTheRuleThatIsAnotherUsersIdentifierMayBeKept(kind: StoreKind) async throws {
        let (store, account) = try await kind.makeStoreWithAccount()
        let development = EnvironmentID(accountID: account.id, environment: .development)
        let target = try await store.createUser(try NewUser(username: "target", fullName: nil), in: development, at: Date())
        let older = try await store.createUser(try NewUser(username: "older", fullName: nil), in: development, at: Date())
        // Written before usernames could not be identifiers.
        try await kind.writeUnchecked(
            ["UPDATE users SET username = '\(target.id.rawValue)' WHERE id = '\(older.id.rawValue)'"],
            to: store
        )

        let kept = try await store.updateUser(
            older.id,
            in: development,
            with: try UserChanges(username: target.id.rawValue, fullName: "Older")
        )
        #expect(kept?.username == target.id.rawValue)
        #expect(kept?.fullName == "Older")
        // Another user still may not take it; and a user of another environment is not found.
        let other = try await store.createUser(try NewUser(username: "other", fullName: nil), in: development, at: Date())
        await #expect(throws: KeywayError.usernameIsAUserID(target.id.rawValue)) {
            try await store.updateUser(other.id, in: development, with: try UserChanges(username: target.id.rawValue, fullName: nil))
        }
        let elsewhere = try await store.createUser(try NewUser(username: "elsewhere", fullName: nil), in: development.sibling, at: Date())
        #expect(
            try await store.updateUser(elsewhere.id, in: development, with: try UserChanges(username: target.id.rawValue, fullName: nil)) == nil
        )
    }
}
