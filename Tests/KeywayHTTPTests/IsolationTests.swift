import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import Testing

/// Isolation, the core promise: a key reaches only its own environment's users,
/// and hears of the same account's other environment, never of another account.
@Suite struct IsolationTests {
    /// Deterministic, so a failure can be replayed from its seed.
    struct SplitMix64: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    struct ModelUser: Sendable {
        let id: String
        let environment: EnvironmentID
        var username: String
    }

    @Test(arguments: [1 as UInt64, 2, 3])
    func randomOperationsStayInsideTheirEnvironment(seed: UInt64) async throws {
        let server = try await TestServer.make()
        let environments = [server.acme, server.globex].flatMap { account in
            Environment.allCases.map { EnvironmentID(accountID: account.id, environment: $0) }
        }
        try await server.test { client in
            var random = SplitMix64(state: seed)
            var users: [ModelUser] = []
            let names = (0..<10).map { "name\($0)" }

            for step in 0..<300 {
                let environment = environments.randomElement(using: &random)!
                let key = server.initialKeys[environment]!
                let label = "seed \(seed) step \(step)"
                switch Int.random(in: 0..<8, using: &random) {
                case 0, 1:
                    let username = names.randomElement(using: &random)!
                    let response = try await client.call(.post, "/users", key: key, json: #"{"username": "\#(username)"}"#)
                    if users.contains(where: { $0.environment == environment && $0.username == username }) {
                        #expect(response.status == .conflict, "\(label)")
                    } else {
                        #expect(response.status == .ok, "\(label): \(response.text)")
                        users.append(ModelUser(id: response["userId"] as! String, environment: environment, username: username))
                    }
                case 2:
                    let (reference, owner) = pickReference(users: users, names: names, random: &random)
                    let response = try await client.call(.get, "/users/\(reference)", key: key)
                    try check(response, reference: reference, owner: owner, users: users, caller: environment, label: label)
                case 3:
                    let (reference, owner) = pickReference(users: users, names: names, random: &random)
                    let response = try await client.call(.put, "/users/\(reference)", key: key, json: #"{"fullName": "Step \#(step)"}"#)
                    try check(response, reference: reference, owner: owner, users: users, caller: environment, label: label)
                case 4:
                    let (reference, owner) = pickReference(users: users, names: names, random: &random)
                    let response = try await client.call(.delete, "/users/\(reference)", key: key)
                    try check(response, reference: reference, owner: owner, users: users, caller: environment, label: label)
                    if response.status == .ok, let owner = owner(environment) {
                        users.removeAll { $0.id == owner.id }
                    }
                case 5:
                    let batch = (0..<3).map { _ in names.randomElement(using: &random)! }
                    let json = "[" + batch.map { #"{"username": "\#($0)"}"# }.joined(separator: ",") + "]"
                    let response = try await client.call(.post, "/users/batch", key: key, json: json)
                    var fresh: [String] = []
                    for username in batch where !fresh.contains(username) {
                        if !users.contains(where: { $0.environment == environment && $0.username == username }) { fresh.append(username) }
                    }
                    #expect(response.status == (fresh.isEmpty ? .conflict : .ok), "\(label): \(response.text)")
                    if !fresh.isEmpty {
                        let listed = try await client.call(.get, "/users?limit=1000", key: key)["data"] as? [[String: Any]] ?? []
                        for username in fresh {
                            let id = try #require(listed.first { $0["username"] as? String == username }?["userId"] as? String, "\(label)")
                            users.append(ModelUser(id: id, environment: environment, username: username))
                        }
                    }
                case 6:
                    let response = try await client.call(.get, "/whoami", key: key)
                    #expect(response["accountId"] as? String == environment.accountID.rawValue, "\(label)")
                    #expect(response["environment"] as? String == environment.environment.rawValue, "\(label)")
                default:
                    let response = try await client.call(.get, "/users?limit=1000", key: key)
                    let listed = (response["data"] as? [[String: Any]] ?? []).compactMap { $0["userId"] as? String }
                    let expected = users.filter { $0.environment == environment }.map(\.id).sorted()
                    #expect(listed == expected, "\(label): list shows exactly the environment's users")
                }
            }
        }
    }

    /// A user reference (id or username) drawn from any environment, or one that exists nowhere,
    /// with a function that names the user it denotes in a given environment.
    func pickReference(
        users: [ModelUser],
        names: [String],
        random: inout SplitMix64
    )
        -> (String, @Sendable (EnvironmentID) -> ModelUser?)
    {
        let snapshot = users
        if snapshot.isEmpty || Int.random(in: 0..<8, using: &random) == 0 {
            let ghost = UserID.generate().rawValue
            return (ghost, { _ in nil })
        }
        let target = snapshot.randomElement(using: &random)!
        if Bool.random(using: &random) {
            return (target.id, { environment in snapshot.first { $0.id == target.id && $0.environment == environment } })
        }
        return (target.username, { environment in snapshot.first { $0.username == target.username && $0.environment == environment } })
    }

    func check(
        _ response: JSONResponse,
        reference: String,
        owner: (EnvironmentID) -> ModelUser?,
        users: [ModelUser],
        caller: EnvironmentID,
        label: String
    ) throws {
        // No answer names a user of another environment, nor another account, except the
        // reference the caller sent itself (echoed in a 404's message).
        let othersIDs = users.filter { $0.environment != caller && $0.id != reference }.map(\.id)
        #expect(!othersIDs.contains { response.text.contains($0) }, "\(label): another environment's user id in \(response.text)")
        let otherAccounts = Set(users.map(\.environment.accountID)).subtracting([caller.accountID])
        #expect(!otherAccounts.contains { response.text.contains($0.rawValue) }, "\(label): another account's id")
        if let mine = owner(caller) {
            #expect(response.status == .ok, "\(label): \(response.text)")
            if response["userId"] != nil {
                #expect(response["userId"] as? String == mine.id, "\(label)")
            }
            return
        }
        #expect(response.status == .notFound, "\(label): \(response.text)")
        #expect(response.code == "user_not_found", "\(label)")
        // The hint is for identifiers only: usernames of the other environment are not probed.
        let inSibling = UserID(validating: reference) != nil && owner(caller.sibling) != nil
        if inSibling {
            #expect(response["otherEnvironment"] as? String == caller.environment.other.rawValue, "\(label)")
            #expect(response.message?.contains("exists in your \(caller.environment.other.rawValue) environment") == true, "\(label)")
        } else {
            #expect(response["otherEnvironment"] == nil, "\(label): hinted at another account or a missing user")
            #expect(response.message?.contains("exists in your") == false, "\(label)")
        }
    }

    @Test func theOtherEnvironmentHintNeverCrossesAccounts() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            let acmeProduction = server.key(server.acme, .production)
            let id = try await client.createUser("shared-name", key: server.key(server.globex, .production))
            for key in [server.key(server.acme, .development), acmeProduction] {
                for reference in [id, "shared-name"] {
                    let response = try await client.call(.get, "/users/\(reference)", key: key)
                    #expect(response.status == .notFound)
                    #expect(response["otherEnvironment"] == nil)
                }
            }
            let hinted = try await client.call(.get, "/users/\(id)", key: server.key(server.globex, .development))
            #expect(hinted.status == .notFound)
            #expect(hinted["otherEnvironment"] as? String == "production")
        }
    }
}
