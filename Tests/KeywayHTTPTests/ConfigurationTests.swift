import Crypto
import Foundation
import KeywayCore
import Logging
import ServiceLifecycleTestKit
import Testing

@testable import KeywayHTTP

/// Every variable the HTTP server reads: its default, a good value, and a bad one refused with
/// the variable's name. The executable's own settings are `SettingsTests`.
@Suite struct ConfigurationTests {
    @Test func defaultsRunOutOfTheBox() throws {
        let configuration = try ServerConfiguration(environment: [:])
        #expect(configuration == ServerConfiguration())
        // Every default, pinned: a changed default is a changed promise of the README's table.
        #expect(configuration.host == "127.0.0.1")
        #expect(configuration.port == 8080)
        #expect(configuration.revocationPollMilliseconds == 250)
        #expect(configuration.shutdownTimeoutSeconds == 10)
        #expect(configuration.effectivePublicURL == "http://127.0.0.1:8080")
        #expect(configuration.egressIPs.isEmpty)
        #expect(configuration.usageFlushSeconds == 10)
        #expect(configuration.publicURL == nil)
        #expect(configuration.trustedProxies == .direct)
        #expect(configuration.throttleEntries == 100_000)
        #expect(configuration.metricsToken == nil)
        #expect(configuration.metricsAddress == nil)
        #expect(configuration.idleTimeoutSeconds == 60)
        #expect(configuration.requestHeadTimeoutSeconds == 10)
        #expect(configuration.requestBodyTimeoutSeconds == 30)
        #expect(configuration.maximumConnections == 768)
        #expect(configuration.egressBind == nil)
        #expect(configuration.webhookAllowInsecure == false)
        #expect(configuration.webhookDelivery)
        #expect(configuration.auditRetentionDays == 365)
        #expect(configuration.secretScanningKeys == nil, "leak reports need no signature unless GitHub's keys are given")
    }

    @Test func theEgressBindMustBeAPublishedAddress() throws {
        let published = try ServerConfiguration(environment: [
            "KEYWAY_EGRESS_IPS": "203.0.113.7, 2001:db8::/32", "KEYWAY_EGRESS_BIND": "2001:db8::5", "KEYWAY_WEBHOOK_ALLOW_INSECURE": "1",
        ])
        #expect(published.egressBind == "2001:db8::5", "inside a published range")
        #expect(published.webhookAllowInsecure)
        for (ips, bind) in [(nil, "203.0.113.7"), ("203.0.113.7", "203.0.113.8"), ("203.0.113.7", "203.0.113.0/24"), ("203.0.113.7", "eth0")] {
            var environment = ["KEYWAY_EGRESS_BIND": bind]
            environment["KEYWAY_EGRESS_IPS"] = ips
            #expect(throws: ConfigurationError.self, "\(bind) with \(ips ?? "nothing") published") {
                do {
                    _ = try ServerConfiguration(environment: environment)
                } catch let error as ConfigurationError {
                    #expect(error.variable == "KEYWAY_EGRESS_BIND")
                    throw error
                }
            }
        }
        #expect(throws: ConfigurationError.self) { try ServerConfiguration(environment: ["KEYWAY_WEBHOOK_ALLOW_INSECURE": "yes"]) }
        #expect(try ServerConfiguration(environment: ["KEYWAY_WEBHOOK_DELIVERY": "off"]).webhookDelivery == false)
        #expect(throws: ConfigurationError.self) { try ServerConfiguration(environment: ["KEYWAY_WEBHOOK_DELIVERY": "no"]) }
    }

    @Test func everyVariableIsRead() throws {
        let configuration = try ServerConfiguration(environment: [
            "KEYWAY_HOST": "::1", "KEYWAY_PORT": "9000", "KEYWAY_EGRESS_IPS": " 203.0.113.7, 2001:db8::/32 ,",
            "KEYWAY_REVOCATION_POLL_MS": "100", "KEYWAY_USAGE_FLUSH_SECONDS": "3", "KEYWAY_PUBLIC_URL": "https://keyway.example.com/",
            "KEYWAY_SHUTDOWN_TIMEOUT_SECONDS": "3", "KEYWAY_AUDIT_RETENTION_DAYS": "30",
        ])
        #expect(configuration.host == "::1")
        #expect(configuration.port == 9000)
        #expect(configuration.egressIPs == ["203.0.113.7", "2001:db8::/32"])
        #expect(configuration.revocationPollMilliseconds == 100)
        #expect(configuration.usageFlushSeconds == 3)
        #expect(configuration.publicURL == "https://keyway.example.com")
        #expect(configuration.effectivePublicURL == "https://keyway.example.com")
        #expect(configuration.shutdownTimeoutSeconds == 3)
        #expect(configuration.auditRetentionDays == 30)
        var ipv6 = ServerConfiguration()
        ipv6.host = "::1"
        #expect(ipv6.effectivePublicURL == "http://[::1]:8080")
    }

    @Test(arguments: [
        ("KEYWAY_PORT", "http"), ("KEYWAY_PORT", "70000"), ("KEYWAY_EGRESS_IPS", "203.0.113.7, nope"),
        ("KEYWAY_EGRESS_IPS", "10.0.0.0/33"), ("KEYWAY_REVOCATION_POLL_MS", "10"), ("KEYWAY_USAGE_FLUSH_SECONDS", "0"),
        ("KEYWAY_PUBLIC_URL", "keyway.example.com"), ("KEYWAY_PUBLIC_URL", "ftp://keyway.example.com"),
        ("KEYWAY_SHUTDOWN_TIMEOUT_SECONDS", "0"), ("KEYWAY_SHUTDOWN_TIMEOUT_SECONDS", "601"),
        ("KEYWAY_AUDIT_RETENTION_DAYS", "0"), ("KEYWAY_AUDIT_RETENTION_DAYS", "36501"),
    ])
    func badValuesNameTheirVariable(variable: String, value: String) {
        #expect(throws: ConfigurationError.self) { try ServerConfiguration(environment: [variable: value]) }
        do {
            _ = try ServerConfiguration(environment: [variable: value])
        } catch {
            #expect(error.variable == variable)
            #expect("\(error)".hasPrefix(variable))
        }
    }

    @Test func connectionMetricsAndLimitSettingsAreRead() throws {
        let configuration = try ServerConfiguration(environment: [
            "KEYWAY_METRICS_TOKEN": "0123456789abcdef0123", "KEYWAY_METRICS_ADDRESS": "[::1]:9090", "KEYWAY_IDLE_TIMEOUT_SECONDS": "30",
            "KEYWAY_REQUEST_HEAD_TIMEOUT_SECONDS": "4", "KEYWAY_REQUEST_BODY_TIMEOUT_SECONDS": "8", "KEYWAY_MAX_CONNECTIONS": "100",
        ])
        #expect(configuration.metricsToken == "0123456789abcdef0123")
        #expect(configuration.metricsAddress == ListenAddress(host: "::1", port: 9090))
        #expect(ListenAddress("127.0.0.1:9090") == ListenAddress(host: "127.0.0.1", port: 9090))
        #expect(configuration.idleTimeoutSeconds == 30)
        #expect(configuration.requestHeadTimeoutSeconds == 4)
        #expect(configuration.requestBodyTimeoutSeconds == 8)
        #expect(configuration.maximumConnections == 100)
    }

    @Test(arguments: [
        ("KEYWAY_METRICS_TOKEN", "short"), ("KEYWAY_METRICS_TOKEN", "has a space in it, sixteen+"),
        ("KEYWAY_METRICS_ADDRESS", "9090"), ("KEYWAY_METRICS_ADDRESS", "::1:9090"), ("KEYWAY_METRICS_ADDRESS", "localhost:99999"),
        ("KEYWAY_IDLE_TIMEOUT_SECONDS", "0"), ("KEYWAY_REQUEST_HEAD_TIMEOUT_SECONDS", "601"), ("KEYWAY_REQUEST_BODY_TIMEOUT_SECONDS", "x"),
        ("KEYWAY_MAX_CONNECTIONS", "0"),
    ])
    func badOperationalValuesNameTheirVariableAndNeverEchoAToken(variable: String, value: String) {
        do {
            _ = try ServerConfiguration(environment: [variable: value])
            Issue.record("\(variable)=\(value) was accepted")
        } catch {
            #expect(error.variable == variable)
            if variable == "KEYWAY_METRICS_TOKEN" { #expect(!"\(error)".contains(value)) }
        }
    }

    @Test func gitHubsSecretScanningKeysAreReadFromTheNamedFile() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("github-keys-\(UUID().uuidString).json")
        let publicKey = P256.Signing.PrivateKey().publicKey.pemRepresentation
        try JSONSerialization.data(withJSONObject: ["public_keys": [["key_identifier": "k1", "key": publicKey]]]).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let configuration = try ServerConfiguration(environment: ["KEYWAY_GITHUB_SECRET_SCANNING_KEYS": file.path])
        #expect(configuration.secretScanningKeys == (try SecretScanningKeys(json: try Data(contentsOf: file), source: "the test's file")))
    }

    @Test func blankValuesMeanTheDefault() throws {
        #expect(try ServerConfiguration(environment: ["KEYWAY_PORT": "  ", "KEYWAY_HOST": ""]) == ServerConfiguration())
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

    /// A failover mid-transaction: the periodic work never answers, and a graceful shutdown
    /// must still end the loop at once instead of waiting for it (CI saw the process aborted).
    @Test func aGracefulShutdownEndsALoopWhoseWorkIsStuck() async {
        let started = AsyncStream<Void>.makeStream()
        await testGracefulShutdown { trigger in
            let loop = Task {
                await MaintenanceService.repeatUntilShutdown(every: .milliseconds(1)) {
                    started.continuation.yield()
                    await Self.stuck()
                } onFailure: { _ in
                }
            }
            for await _ in started.stream { break }
            trigger.triggerGracefulShutdown()
            // Bounded, so that a regression fails here instead of hanging the suite.
            guard case .written = await MaintenanceService.outcome(within: .seconds(30), { await loop.value }) else {
                Issue.record("the loop was still waiting for its stuck work 30 s after the shutdown began")
                return
            }
        }
    }

    @Test func aFailingRoundIsReportedAndTheLoopGoesOn() async {
        struct Refused: Error {}
        let failures = AsyncStream<Void>.makeStream()
        await testGracefulShutdown { trigger in
            let loop = Task {
                await MaintenanceService.repeatUntilShutdown(every: .milliseconds(1)) {
                    throw Refused()
                } onFailure: { error in
                    if error is Refused { failures.continuation.yield() }
                }
            }
            var count = 0
            for await _ in failures.stream {
                count += 1
                if count == 3 { break }
            }
            trigger.triggerGracefulShutdown()
            await loop.value
            #expect(count == 3)
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
