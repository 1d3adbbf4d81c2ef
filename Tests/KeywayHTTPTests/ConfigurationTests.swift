import Foundation
import KeywayCore
import Logging
import Testing

@testable import KeywayHTTP

/// Every `KEYWAY_*` variable: its default, a good value, and a bad one refused with the variable's name.
@Suite struct ConfigurationTests {
    @Test func defaultsRunOutOfTheBox() throws {
        let configuration = try KeywayConfiguration(environment: [:])
        #expect(configuration == KeywayConfiguration())
        #expect(configuration.host == "127.0.0.1")
        #expect(configuration.port == 8080)
        #expect(configuration.databasePath == "keyway-data/keyway.sqlite")
        #expect(configuration.databaseURL == nil)
        #expect(configuration.revocationPollMilliseconds == 250)
        #expect(configuration.userTokenMinutes == 30)
        #expect(configuration.databaseCAFile == nil)
        #expect(configuration.shutdownTimeoutSeconds == 10)
        #expect(configuration.effectivePublicURL == "http://127.0.0.1:8080")
        // Every other default, pinned: a changed default is a changed promise of the README's table.
        #expect(configuration.egressIPs.isEmpty)
        #expect(configuration.logLevel == .info)
        #expect(configuration.usageFlushSeconds == 10)
        #expect(configuration.keyCacheLimit == 10_000)
        #expect(configuration.publicURL == nil)
        #expect(configuration.databasePoolSize == 10)
        #expect(configuration.databaseConnectTimeoutMilliseconds == 5000)
        #expect(configuration.masterKey == nil)
        #expect(configuration.trustedProxies == .direct)
        #expect(configuration.throttleEntries == 100_000)
        #expect(configuration.keyGenerationsPerMinute == 20)
        #expect(configuration.metricsToken == nil)
        #expect(configuration.metricsAddress == nil)
        #expect(configuration.idleTimeoutSeconds == 60)
        #expect(configuration.requestHeadTimeoutSeconds == 10)
        #expect(configuration.requestBodyTimeoutSeconds == 30)
        #expect(configuration.maximumConnections == 768)
        #expect(configuration.keyLookupTimeoutMilliseconds == 5000)
    }

    @Test func everyVariableIsRead() throws {
        let caFile = FileManager.default.temporaryDirectory.appendingPathComponent("keyway-ca-\(UUID().uuidString).pem").path
        try Data("-----BEGIN CERTIFICATE-----".utf8).write(to: URL(fileURLWithPath: caFile))
        defer { try? FileManager.default.removeItem(atPath: caFile) }
        let configuration = try KeywayConfiguration(environment: [
            "KEYWAY_HOST": "::1", "KEYWAY_PORT": "9000", "KEYWAY_DATABASE": "/var/lib/keyway/db.sqlite",
            "KEYWAY_EGRESS_IPS": " 203.0.113.7, 2001:db8::/32 ,", "KEYWAY_LOG_LEVEL": "DEBUG", "KEYWAY_REVOCATION_POLL_MS": "100",
            "KEYWAY_USAGE_FLUSH_SECONDS": "3", "KEYWAY_KEY_CACHE_LIMIT": "500", "KEYWAY_PUBLIC_URL": "https://keyway.example.com/",
            "KEYWAY_USER_TOKEN_MINUTES": "60", "KEYWAY_MASTER_KEY": Data(repeating: 1, count: 32).base64EncodedString(),
            "KEYWAY_DATABASE_URL": "postgres://keyway:secret@db.internal:5432/keyway", "KEYWAY_DATABASE_POOL_SIZE": "4",
            "KEYWAY_DATABASE_CONNECT_TIMEOUT_MS": "1500", "KEYWAY_DATABASE_CA_FILE": caFile, "KEYWAY_SHUTDOWN_TIMEOUT_SECONDS": "3",
        ])
        #expect(configuration.host == "::1")
        #expect(configuration.port == 9000)
        #expect(configuration.databasePath == "/var/lib/keyway/db.sqlite")
        #expect(configuration.egressIPs == ["203.0.113.7", "2001:db8::/32"])
        #expect(configuration.logLevel == .debug)
        #expect(configuration.revocationPollMilliseconds == 100)
        #expect(configuration.usageFlushSeconds == 3)
        #expect(configuration.keyCacheLimit == 500)
        #expect(configuration.publicURL == "https://keyway.example.com")
        #expect(configuration.effectivePublicURL == "https://keyway.example.com")
        #expect(configuration.userTokenMinutes == 60)
        #expect(configuration.masterKey != nil)
        #expect(configuration.databaseURL == "postgres://keyway:secret@db.internal:5432/keyway")
        #expect(configuration.databasePoolSize == 4)
        #expect(configuration.databaseConnectTimeoutMilliseconds == 1500)
        #expect(configuration.databaseCAFile == caFile)
        #expect(configuration.shutdownTimeoutSeconds == 3)
    }

    @Test(arguments: [
        ("KEYWAY_PORT", "http"), ("KEYWAY_PORT", "70000"), ("KEYWAY_EGRESS_IPS", "203.0.113.7, nope"),
        ("KEYWAY_EGRESS_IPS", "10.0.0.0/33"), ("KEYWAY_LOG_LEVEL", "loud"), ("KEYWAY_REVOCATION_POLL_MS", "10"),
        ("KEYWAY_USAGE_FLUSH_SECONDS", "0"), ("KEYWAY_KEY_CACHE_LIMIT", "-1"), ("KEYWAY_PUBLIC_URL", "keyway.example.com"),
        ("KEYWAY_PUBLIC_URL", "ftp://keyway.example.com"), ("KEYWAY_USER_TOKEN_MINUTES", "61"), ("KEYWAY_MASTER_KEY", "dG9vIHNob3J0"),
        ("KEYWAY_DATABASE_URL", "mysql://db/keyway"), ("KEYWAY_DATABASE_POOL_SIZE", "0"), ("KEYWAY_DATABASE_CONNECT_TIMEOUT_MS", "5"),
        ("KEYWAY_DATABASE_CA_FILE", "/nonexistent/ca.pem"), ("KEYWAY_SHUTDOWN_TIMEOUT_SECONDS", "0"), ("KEYWAY_SHUTDOWN_TIMEOUT_SECONDS", "601"),
    ])
    func badValuesNameTheirVariable(variable: String, value: String) {
        #expect(throws: ConfigurationError.self) { try KeywayConfiguration(environment: [variable: value]) }
        do {
            _ = try KeywayConfiguration(environment: [variable: value])
        } catch {
            #expect(error.variable == variable)
            #expect("\(error)".hasPrefix(variable))
        }
    }

    @Test func connectionMetricsAndLimitSettingsAreRead() throws {
        let configuration = try KeywayConfiguration(environment: [
            "KEYWAY_KEY_GENERATIONS_PER_MINUTE": "5", "KEYWAY_METRICS_TOKEN": "0123456789abcdef0123",
            "KEYWAY_METRICS_ADDRESS": "[::1]:9090", "KEYWAY_IDLE_TIMEOUT_SECONDS": "30", "KEYWAY_REQUEST_HEAD_TIMEOUT_SECONDS": "4",
            "KEYWAY_REQUEST_BODY_TIMEOUT_SECONDS": "8", "KEYWAY_MAX_CONNECTIONS": "100", "KEYWAY_KEY_LOOKUP_TIMEOUT_MS": "700",
        ])
        #expect(configuration.keyGenerationLimit == KeyGenerationLimit(count: 5, windowSeconds: 60))
        #expect(configuration.metricsToken == "0123456789abcdef0123")
        #expect(configuration.metricsAddress == ListenAddress(host: "::1", port: 9090))
        #expect(ListenAddress("127.0.0.1:9090") == ListenAddress(host: "127.0.0.1", port: 9090))
        #expect(configuration.idleTimeoutSeconds == 30)
        #expect(configuration.requestHeadTimeoutSeconds == 4)
        #expect(configuration.requestBodyTimeoutSeconds == 8)
        #expect(configuration.maximumConnections == 100)
        #expect(configuration.keyLookupTimeoutMilliseconds == 700)
        let defaults = KeywayConfiguration()
        #expect(defaults.metricsToken == nil && defaults.metricsAddress == nil)
        #expect(defaults.keyGenerationsPerMinute == 20)
    }

    @Test(arguments: [
        ("KEYWAY_KEY_GENERATIONS_PER_MINUTE", "0"), ("KEYWAY_METRICS_TOKEN", "short"), ("KEYWAY_METRICS_TOKEN", "has a space in it, sixteen+"),
        ("KEYWAY_METRICS_ADDRESS", "9090"), ("KEYWAY_METRICS_ADDRESS", "::1:9090"), ("KEYWAY_METRICS_ADDRESS", "localhost:99999"),
        ("KEYWAY_IDLE_TIMEOUT_SECONDS", "0"), ("KEYWAY_REQUEST_HEAD_TIMEOUT_SECONDS", "601"), ("KEYWAY_REQUEST_BODY_TIMEOUT_SECONDS", "x"),
        ("KEYWAY_MAX_CONNECTIONS", "0"), ("KEYWAY_KEY_LOOKUP_TIMEOUT_MS", "10"),
    ])
    func badOperationalValuesNameTheirVariableAndNeverEchoAToken(variable: String, value: String) {
        do {
            _ = try KeywayConfiguration(environment: [variable: value])
            Issue.record("\(variable)=\(value) was accepted")
        } catch {
            #expect(error.variable == variable)
            if variable == "KEYWAY_METRICS_TOKEN" { #expect(!"\(error)".contains(value)) }
        }
    }

    @Test func blankValuesMeanTheDefault() throws {
        #expect(try KeywayConfiguration(environment: ["KEYWAY_PORT": "  ", "KEYWAY_HOST": ""]) == KeywayConfiguration())
    }
}

@Suite struct ListenerStateTests {
    @Test func pollsEveryTickWhileNotListeningAndRarelyWhileListening() {
        let state = ListenerState()
        let start = Date(timeIntervalSince1970: 1_000_000)
        #expect(state.shouldPoll(now: start))
        #expect(state.shouldPoll(now: start.addingTimeInterval(0.25)), "not listening: every tick")
        state.set(true)
        #expect(!state.shouldPoll(now: start.addingTimeInterval(0.5)), "listening: notifications bring revocations")
        #expect(state.shouldPoll(now: start.addingTimeInterval(0.25 + ListenerState.safetyNetInterval)), "but a safety-net poll still runs")
        #expect(!state.shouldPoll(now: start.addingTimeInterval(1 + ListenerState.safetyNetInterval)))
        state.set(false)
        #expect(state.shouldPoll(now: start.addingTimeInterval(2 + ListenerState.safetyNetInterval)), "a lost listener means polling at once")
    }
}

/// The shutdown flush answers by its deadline even when the database never does.
@Suite struct ShutdownFlushTests {
    /// Work that neither ends nor notices cancellation, as a lease on a pool that cannot connect.
    static func stuck() async {
        await withCheckedContinuation { (_: CheckedContinuation<Void, Never>) in }
    }

    @Test func workThatIgnoresCancellationIsAbandonedAtTheDeadline() async {
        let outcome = await MaintenanceService.outcome(within: .milliseconds(50)) { await Self.stuck() }
        guard case .timedOut = outcome else {
            Issue.record("expected timedOut, got \(outcome)")
            return
        }
    }

    @Test func aCancelledShutdownAnswersAtOnce() async {
        let flush = Task { await MaintenanceService.outcome(within: .seconds(600)) { await Self.stuck() } }
        try? await Task.sleep(for: .milliseconds(20))
        flush.cancel()
        guard case .cancelled = await flush.value else {
            Issue.record("expected cancelled")
            return
        }
    }

    @Test func finishedWorkIsReportedWithItsResult() async {
        guard case .written = await MaintenanceService.outcome(within: .seconds(600), {}) else {
            Issue.record("expected written")
            return
        }
        struct Refused: Error {}
        guard case .failed(let error) = await MaintenanceService.outcome(within: .seconds(600), { throw Refused() }), error is Refused else {
            Issue.record("expected the work's error")
            return
        }
    }

    /// The sign-in throttles as the README states them: 5 free failures per email then
    /// doubling waits, locked after 10 for 15 minutes; 20 and 40 per client address.
    @Test func theThrottlePoliciesAreTheDocumentedOnes() {
        for (policy, free, lockout) in [
            (AttemptThrottle.Policy.perAccount, 5, 10), (.perClient, 20, 40), (.perSession, 5, 10),
        ] {
            #expect(policy.freeFailures == free)
            #expect(policy.lockoutAfter == lockout)
            #expect(policy.window == .seconds(900))
            #expect(policy.lockout == .seconds(900))
        }
    }
}
