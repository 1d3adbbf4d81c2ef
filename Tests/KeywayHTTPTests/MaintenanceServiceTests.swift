import Foundation
import KeywayCore
import Logging
import Testing

@testable import KeywayHTTP

/// The background work of a running server, with its intervals shortened.
@Suite struct MaintenanceServiceTests {
    @Test func expiredSessionsAreDeletedOnEveryRoundAndLiveOnesKept() async throws {
        let server = try await TestServer.make()
        let store = server.store
        let (_, member) = try await store.createAccount(
            name: "Sessions",
            ownerEmail: "owner@sessions.test",
            passwordHash: "h",
            at: Date(),
            audit: .system
        )
        func session(expiringIn seconds: TimeInterval) async throws -> DashboardSession {
            let now = Date()
            let session = DashboardSession(
                digest: BrowserToken.generate().digest,
                memberID: member.id,
                accountID: member.accountID,
                csrfToken: "csrf",
                createdAt: now.addingTimeInterval(-3600),
                expiresAt: now.addingTimeInterval(seconds)
            )
            try await store.createSession(session, audit: .member(.signedIn, member, at: now, context: .system))
            return session
        }
        /// Whether the row is still stored (the lookup at its creation sees it even once expired).
        func isStored(_ session: DashboardSession) async throws -> Bool {
            try await store.session(digest: session.digest, at: session.createdAt) != nil
        }
        let live = try await session(expiringIn: 3600)
        let first = try await session(expiringIn: -1)
        #expect(try await isStored(first))

        var service = makeService(for: server)
        service.sessionPurgeInterval = .milliseconds(20)
        let running = Task { try await service.run() }
        defer { running.cancel() }

        try await waitUntil { try await !isStored(first) }
        // Created after a round has run: only a later round can delete it.
        let second = try await session(expiringIn: -1)
        try await waitUntil { try await !isStored(second) }
        #expect(try await isStored(live), "a live session is kept")
        running.cancel()
        try await running.value
    }

    @Test func expiredSessionsAreDeletedHourlyByDefault() {
        #expect(MaintenanceService.defaultSessionPurgeInterval == .seconds(3600))
    }

    /// Audit entries past `KEYWAY_AUDIT_RETENTION_DAYS` go in the hourly round; a day within it stays.
    @Test func auditEntriesOlderThanTheRetentionAreDeletedAndNewerOnesKept() async throws {
        let server = try await TestServer.make()
        let now = Date()
        func entry(daysAgo days: Double) async throws -> String {
            let entry = AuditEntry(at: now.addingTimeInterval(-days * 86_400), accountID: server.acme.id, event: .originsChanged, context: .cli)
            try await server.store.recordAudit(entry)
            return entry.id
        }
        // 30 days, not the default: a service that ignored its setting would keep all four.
        let old = [try await entry(daysAgo: 45), try await entry(daysAgo: 31)]
        let recent = [try await entry(daysAgo: 29), try await entry(daysAgo: 1)]
        func stored() async throws -> Set<String> {
            Set(try await server.store.auditEntries(for: server.acme.id, matching: AuditQuery(event: .originsChanged, limit: 100)).map(\.id))
        }
        #expect(try await stored() == Set(old + recent))

        var service = makeService(for: server)
        service.sessionPurgeInterval = .milliseconds(20)
        service.auditRetentionDays = 30
        let running = Task { try await service.run() }
        defer { running.cancel() }

        // One statement deletes every entry past the cutoff: once the old ones are gone, the round is done.
        try await waitUntil { try await stored().isDisjoint(with: old) }
        #expect(try await stored() == Set(recent), "entries within the retention are kept")
        running.cancel()
        try await running.value
    }

    /// The loop that writes `key.expired`: once a grace has ended, one entry, and never another
    /// on later rounds.
    @Test func anEndedGraceIsRecordedOnceByTheMaintenanceRounds() async throws {
        let server = try await TestServer.make()
        let development = EnvironmentID(accountID: server.acme.id, environment: .development)
        let production = EnvironmentID(accountID: server.acme.id, environment: .production)
        func active(_ environment: EnvironmentID) async throws -> SecretKeyRecord {
            try #require(try await server.store.secretKeys(for: server.acme.id).first { $0.environmentID == environment && $0.isActive })
        }
        let rolled = try await active(development)
        _ = try await server.keys.roll(for: development, grace: try KeyGrace(seconds: 1), createdBy: "t")
        func expired() async throws -> [AuditEntry] {
            try await server.store.auditEntries(for: server.acme.id, matching: AuditQuery(event: .keyExpired))
        }
        #expect(try await expired().isEmpty, "the grace has not ended yet")

        var service = makeService(for: server)
        service.graceAuditInterval = .milliseconds(20)
        let running = Task { try await service.run() }
        defer { running.cancel() }

        try await waitUntil { try await !expired().isEmpty }
        let entries = try await expired()
        #expect(entries.map(\.resourceID) == [rolled.id.rawValue] && entries.first?.actor == "system", "\(entries)")
        // A grace that ends after that entry was written is recorded only by a later round: once
        // its entry is there, rounds have looked at the first grace again.
        let later = try await active(production)
        _ = try await server.keys.roll(for: production, grace: try KeyGrace(seconds: 1), createdBy: "t")
        try await waitUntil { try await expired().contains { $0.resourceID == later.id.rawValue } }
        let afterMoreRounds = try await expired()
        #expect(afterMoreRounds.filter { $0.resourceID == rolled.id.rawValue }.count == 1, "\(afterMoreRounds.map(\.resourceID))")
        running.cancel()
        try await running.value
    }

    /// A service over `server`'s store whose rounds are all an hour apart; tests shorten the one they watch.
    func makeService(for server: TestServer) -> MaintenanceService {
        var service = MaintenanceService(
            keys: server.keys,
            serviceTokens: server.serviceTokens,
            store: server.store,
            rateLimits: server.rateLimits,
            rateLimitExchange: nil,
            revocationPollInterval: .seconds(600),
            usageFlushInterval: .seconds(600),
            shutdownTimeout: .seconds(1),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        service.sessionPurgeInterval = .seconds(3600)
        service.graceAuditInterval = .seconds(3600)
        return service
    }

    /// Waits for `condition`; the deadline only keeps a broken build from hanging the suite.
    func waitUntil(sourceLocation: SourceLocation = #_sourceLocation, _ condition: () async throws -> Bool) async throws {
        let end = ContinuousClock.now + .seconds(30)
        while try await !condition() {
            guard ContinuousClock.now < end else {
                Issue.record("the condition did not hold within 30 s", sourceLocation: sourceLocation)
                return
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}
