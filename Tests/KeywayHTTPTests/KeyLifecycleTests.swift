import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KeywayCore
import KeywayHTTP
import Testing

@Suite struct KeyLifecycleTests {
    @Test func regeneratingRevokesThePreviousKeyImmediately() async throws {
        let server = try await TestServer.make()
        let environment = EnvironmentID(accountID: server.acme.id, environment: .production)
        let old = server.key(server.acme, .production)
        try await server.test { client in
            #expect(try await client.call(.get, "/whoami", key: old).status == .ok)  // cached as active
            let new = try await server.keys.generate(for: environment, createdBy: "test").key.revealPlaintext()
            let rejected = try await client.call(.get, "/whoami", key: old)
            #expect(rejected.status == .unauthorized)
            #expect(rejected.code == "revoked_api_key")
            #expect(try await client.call(.get, "/whoami", key: new).status == .ok)
            // The other environment's key is untouched.
            #expect(try await client.call(.get, "/whoami", key: server.key(server.acme, .development)).status == .ok)
        }
    }

    @Test func concurrentRegeneratesLeaveExactlyOneWorkingKey() async throws {
        let server = try await TestServer.make()
        let environment = EnvironmentID(accountID: server.acme.id, environment: .development)
        let keys = server.keys
        try await server.test { client in
            let generated = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<12 {
                    group.addTask { try await keys.generate(for: environment, createdBy: "race").key.revealPlaintext() }
                }
                return try await group.reduce(into: [String]()) { $0.append($1) }
            }
            var statuses: [String: Int] = [:]
            for key in generated + [server.key(server.acme, .development)] {
                let response = try await client.call(.get, "/whoami", key: key)
                statuses[response.code ?? "ok", default: 0] += 1
            }
            #expect(statuses == ["ok": 1, "revoked_api_key": 12])
        }
        #expect(try await server.store.secretKeys(for: server.acme.id).filter { $0.isActive }.count == 2)
    }

    @Test func aKeyRevokedByAnotherProcessIsRefusedWithinThePollInterval() async throws {
        var configuration = TestServer.defaultConfiguration
        configuration.revocationPollMilliseconds = 50
        let server = try await TestServer.make(configuration: configuration)
        let environment = EnvironmentID(accountID: server.acme.id, environment: .development)
        let old = server.key(server.acme, .development)
        try await server.test { client in
            #expect(try await client.call(.get, "/whoami", key: old).status == .ok)
            // A second key service on the same database stands in for `keyway keys generate`.
            let cli = SecretKeys(store: server.store)
            _ = try await cli.generate(for: environment, createdBy: "cli")
            var code: String?
            let deadline = ContinuousClock.now + .seconds(10)
            repeat {
                try await Task.sleep(for: .milliseconds(20))
                code = try await client.call(.get, "/whoami", key: old).code
            } while code != "revoked_api_key" && ContinuousClock.now < deadline
            #expect(code == "revoked_api_key")
        }
    }

    @Test func lastUsedTimesAreRecordedOffTheRequestPath() async throws {
        var configuration = TestServer.defaultConfiguration
        configuration.usageFlushSeconds = 1
        let server = try await TestServer.make(configuration: configuration)
        let environment = EnvironmentID(accountID: server.acme.id, environment: .development)
        try await server.test { client in
            let response = try await client.call(.get, "/whoami", key: server.key(server.acme, .development))
            #expect(response.status == .ok)
        }
        // Leaving the test stops the service, which flushes what it gathered.
        let records = try await server.store.secretKeys(for: server.acme.id)
        let record = records.first { $0.environmentID == environment && $0.isActive }
        #expect(record?.lastUsedAt != nil)
    }
}
