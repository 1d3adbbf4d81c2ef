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

        var service = MaintenanceService(
            keys: server.keys,
            serviceTokens: server.serviceTokens,
            store: store,
            rateLimits: server.rateLimits,
            rateLimitExchange: nil,
            revocationPollInterval: .seconds(600),
            usageFlushInterval: .seconds(600),
            shutdownTimeout: .seconds(1),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        )
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
