import Foundation
import KeywayCore
import Synchronization
import Testing

/// Two reads of the same table racing: the one begun later wins, whichever finishes last.
/// The server refreshes service tokens on every notification and every poll, and rate limits
/// on every poll and on the dashboard's change, so two refreshes in flight at once are normal.
@Suite struct RefreshOrderTests {
    @Test func aSlowRefreshBegunBeforeARevocationNeverRestoresTheToken() async throws {
        let token = GeneratedServiceToken.generate()
        let store = HeldServiceTokenStore(
            ServiceTokenRecord(id: .generate(), name: "gateway", digest: token.digest, hint: token.hint, createdAt: Date(), revokedAt: nil)
        )
        let tokens = ServiceTokens(store: store)
        try await tokens.refresh()
        _ = try await tokens.authenticate(Substring(token.revealPlaintext()))

        store.gate.arm()
        async let stale: Void = tokens.refresh()  // reads "active", then is held
        await store.gate.waitUntilHeld()
        store.revokeAll()
        try await tokens.refresh()  // begun after the revocation: reads "revoked"
        store.gate.release()
        try await stale

        let error = await #expect(throws: KeywayError.self) { try await tokens.authenticate(Substring(token.revealPlaintext())) }
        #expect(error?.code == .revokedServiceToken, "the stale read was applied over the newer one")
    }

    @Test func aSlowRefreshBegunBeforeANewerOneNeverRestoresTheOldLimit() async throws {
        let environment = EnvironmentID(accountID: AccountID(rawValue: "acct_a"), environment: .production)
        let store = HeldRateLimitStore()
        let limits = RateLimits(store: store)
        try await limits.refresh()
        // Another environment changes, so the next refresh reads the limits (the version moved).
        try await store.setRateLimit(
            .requestsPerSecond(3),
            for: EnvironmentID(accountID: AccountID(rawValue: "acct_b"), environment: .production),
            audit: .system
        )

        store.gate.arm()
        async let stale: Void = limits.refresh()  // reads version 2, then the old limits, held
        await store.gate.waitUntilHeld()
        try await store.setRateLimit(.requestsPerSecond(7), for: environment, audit: .system)  // another process
        try await limits.refresh()
        #expect(limits.setting(for: environment) == .requestsPerSecond(7))
        store.gate.release()
        try await stale
        #expect(limits.setting(for: environment) == .requestsPerSecond(7), "the stale read was applied over the newer one")
    }

    @Test func aSlowRefreshNeverUndoesALimitSetHere() async throws {
        let environment = EnvironmentID(accountID: AccountID(rawValue: "acct_a"), environment: .production)
        let store = HeldRateLimitStore()
        let limits = RateLimits(store: store)
        try await limits.refresh()
        // Another environment changes, so the next refresh reads the limits (the version moved).
        try await store.setRateLimit(
            .requestsPerSecond(3),
            for: EnvironmentID(accountID: AccountID(rawValue: "acct_b"), environment: .production),
            audit: .system
        )

        store.gate.arm()
        async let stale: Void = limits.refresh()
        await store.gate.waitUntilHeld()
        try await limits.set(.off, for: environment, audit: .system)  // the dashboard
        store.gate.release()
        try await stale
        #expect(limits.setting(for: environment) == .off, "the stale read was applied over the dashboard's change")
    }
}

/// Holds the next read a fake store makes, after it took its snapshot, until released.
final class ReadGate: Sendable {
    private struct State {
        var armed = false
        var held: CheckedContinuation<Void, Never>?
        var released = false
        var watcher: CheckedContinuation<Void, Never>?
        var isHeld = false
    }

    private let state = Mutex(State())

    func arm() { state.withLock { $0.armed = true } }

    /// Called by the store after its snapshot: waits for ``release()`` when armed.
    func pass() async {
        guard
            state.withLock({ state in
                defer { state.armed = false }
                return state.armed
            })
        else { return }
        await withCheckedContinuation { continuation in
            let watcher = state.withLock { state -> CheckedContinuation<Void, Never>? in
                state.isHeld = true
                if state.released {
                    continuation.resume()
                } else {
                    state.held = continuation
                }
                defer { state.watcher = nil }
                return state.watcher
            }
            watcher?.resume()
        }
    }

    func waitUntilHeld() async {
        await withCheckedContinuation { continuation in
            let isHeld = state.withLock { state in
                if !state.isHeld { state.watcher = continuation }
                return state.isHeld
            }
            if isHeld { continuation.resume() }
        }
    }

    func release() {
        let held = state.withLock { state in
            state.released = true
            defer { state.held = nil }
            return state.held
        }
        held?.resume()
    }
}

final class HeldServiceTokenStore: ServiceTokenStore {
    let gate = ReadGate()
    private let records: Mutex<[ServiceTokenRecord]>

    init(_ records: ServiceTokenRecord...) { self.records = Mutex(records) }

    func revokeAll() {
        records.withLock { records in
            records = records.map {
                ServiceTokenRecord(id: $0.id, name: $0.name, digest: $0.digest, hint: $0.hint, createdAt: $0.createdAt, revokedAt: Date())
            }
        }
    }

    func insertServiceToken(_ token: ServiceTokenRecord, audit: AuditContext) async throws -> ServiceTokenRecord {
        records.withLock { $0.append(token) }
        return token
    }

    func serviceToken(digest: KeyDigest) async throws -> ServiceTokenRecord? {
        records.withLock { $0.first { $0.digest == digest } }
    }

    func serviceTokens() async throws -> [ServiceTokenRecord] {
        let snapshot = records.withLock { $0 }
        await gate.pass()
        return snapshot
    }

    func revokeServiceToken(_ reference: ServiceTokenReference, at date: Date, audit: AuditContext) async throws -> ServiceTokenRecord? { nil }
}

final class HeldRateLimitStore: RateLimitStore {
    let gate = ReadGate()
    private let table = Mutex<(version: Int64, limits: [EnvironmentID: RateLimitSetting])>((1, [:]))

    func rateLimits() async throws -> [EnvironmentID: RateLimitSetting] {
        let snapshot = table.withLock { $0.limits }
        await gate.pass()
        return snapshot
    }

    func setRateLimit(_ setting: RateLimitSetting, for environmentID: EnvironmentID, audit: AuditContext) async throws {
        table.withLock { table in
            table.limits[environmentID] = setting == .default ? nil : setting
            table.version += 1
        }
    }

    func rateLimitsVersion() async throws -> Int64 { table.withLock { $0.version } }
}
