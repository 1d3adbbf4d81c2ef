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

    /// The README's bound: while no change watch is up, a key revoked by another process
    /// (the CLI, another instance) works here at most `KEYWAY_REVOCATION_POLL_MS` longer.
    @Test func aKeyRevokedByAnotherProcessIsRefusedWithinThePollInterval() async throws {
        let configuration = TestServer.defaultConfiguration
        #expect(configuration.revocationPollMilliseconds == 250)
        // Only the poll can tell this server: the store offers it no change watch.
        let server = try await TestServer.make(configuration: configuration, changeWatch: false)
        let environment = EnvironmentID(accountID: server.acme.id, environment: .development)
        let old = server.key(server.acme, .development)
        // The documented bound, plus 2 s so that a noisy shared machine does not fail it.
        let bound = Duration.milliseconds(configuration.revocationPollMilliseconds) + .seconds(2)
        try await server.test { client in
            #expect(try await client.call(.get, "/whoami", key: old).status == .ok)  // cached as active
            // A second key service on the same database stands in for `keyway keys generate`.
            let cli = SecretKeys(store: server.store)
            _ = try await cli.generate(for: environment, createdBy: "cli")
            let revoked = ContinuousClock.now
            var code = try await client.call(.get, "/whoami", key: old).code
            while code != "revoked_api_key", ContinuousClock.now - revoked < bound {
                try await Task.sleep(for: .milliseconds(10))
                code = try await client.call(.get, "/whoami", key: old).code
            }
            #expect(code == "revoked_api_key", "still accepted \(bound) after another process revoked it")
        }
    }

    /// A request only notes in memory when its key was used: it writes nothing.
    @Test func aRequestWritesNoLastUsedTime() async throws {
        var configuration = TestServer.defaultConfiguration
        // No periodic flush while the test runs: whatever is written, a request wrote.
        configuration.usageFlushSeconds = 3600
        let server = try await TestServer.make(configuration: configuration)
        try await server.test { client in
            for _ in 0..<5 {
                let response = try await client.call(.get, "/whoami", key: server.key(server.acme, .development))
                #expect(response.status == .ok)
            }
            #expect(try await server.lastUsed(server.acme, .development) == nil, "a request wrote its key's last use")
        }
        // Leaving the test stops the service, which writes what it gathered.
        #expect(try await server.lastUsed(server.acme, .development) != nil)
    }

    /// Last-used times are written every `KEYWAY_USAGE_FLUSH_SECONDS` while the server runs.
    @Test func lastUsedTimesAreWrittenPeriodicallyWhileTheServerRuns() async throws {
        var configuration = TestServer.defaultConfiguration
        configuration.usageFlushSeconds = 1
        let server = try await TestServer.make(configuration: configuration)
        // The documented interval, plus 2 s so that a noisy shared machine does not fail it.
        let bound = Duration.seconds(configuration.usageFlushSeconds) + .seconds(2)
        let key = server.key(server.acme, .development)
        try await server.test { client in
            func lastUsedOnceWritten(after previous: Date?) async throws -> Date? {
                let start = ContinuousClock.now
                while true {
                    let written = try await server.lastUsed(server.acme, .development)
                    if let written, previous.map({ written > $0 }) ?? true { return written }
                    if ContinuousClock.now - start > bound { return nil }
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            #expect(try await client.call(.get, "/whoami", key: key).status == .ok)
            let first = try #require(try await lastUsedOnceWritten(after: nil), "not written within \(bound)")
            #expect(try await client.call(.get, "/whoami", key: key).status == .ok)
            let second = try await lastUsedOnceWritten(after: first)
            #expect(second != nil, "a second use was not written within \(bound): the flush ran only once")
        }
    }
}

extension TestServer {
    /// When the store says the current key of `account`'s `environment` was last used.
    func lastUsed(_ account: Account, _ environment: Environment) async throws -> Date? {
        try await store.secretKeys(for: account.id)
            .first { $0.environmentID.environment == environment && $0.isActive }?.lastUsedAt
    }
}
