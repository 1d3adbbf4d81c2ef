import Foundation
import KeywayCore
import KeywayPostgres
import Synchronization
import Testing

/// Sign-in throttling shared by every instance on PostgreSQL (`AttemptLedger`).
/// SQLite runs one instance per file and keeps the count in memory, so these run on PostgreSQL only.
@Suite(.enabled(if: TestPostgres.serverURL != nil, "needs KEYWAY_TEST_POSTGRES_URL"))
struct AttemptLedgerTests {
    let policy = AttemptThrottle.Policy.perAccount

    /// Three instances on one fresh database, each with its own pool and its own memory throttle.
    func instances(clock: TestTime) async throws -> [AttemptLimiter] {
        try await TestPostgres.freshStores(3).map { store in AttemptLimiter(policy: policy, ledger: store, now: { clock.now }) }
    }

    @Test func threeInstancesAllowTheFreeAttemptsOnceBetweenThem() async throws {
        let clock = TestTime()
        let limiters = try await instances(clock: clock)
        let granted = try await withThrowingTaskGroup(of: Bool.self) { group in
            for attempt in 0..<200 {
                group.addTask {
                    do {
                        _ = try await limiters[attempt % 3].reserve("signin-email:victim@acme.test")
                        return true
                    } catch is AttemptThrottle.Refusal {
                        return false
                    }
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        // Each instance alone would have allowed its own five.
        #expect(granted == policy.freeFailures)
    }

    @Test func aLockoutReachedThroughSeveralInstancesHoldsOnAll() async throws {
        let clock = TestTime()
        let limiters = try await instances(clock: clock)
        for attempt in 0..<policy.lockoutAfter {
            _ = try await limiters[attempt % 3].reserve("signin-email:victim@acme.test")
            clock.advance(by: 20)
        }
        for limiter in limiters {
            // Locked for 15 minutes from the last failure, 20 s ago.
            await #expect(throws: AttemptThrottle.Refusal(retryAfterSeconds: 880, lockedOut: true)) {
                try await limiter.reserve("signin-email:victim@acme.test")
            }
        }
        _ = try await limiters[0].reserve("signin-email:someone-else@acme.test")
        clock.advance(by: 900)
        _ = try await limiters[1].reserve("signin-email:victim@acme.test")
    }

    /// The shared table keeps failures for the window plus the lockout, so an instance that
    /// never saw them (just started, or its memory evicted the key) still refuses for the
    /// lock's whole length, after the first failures have left the window.
    @Test func aFreshInstanceSeesTheLockForItsWholeLength() async throws {
        let clock = TestTime()
        let stores = try await TestPostgres.freshStores(2)
        let first = AttemptLimiter(policy: policy, ledger: stores[0], now: { clock.now })
        for _ in 0..<policy.lockoutAfter {
            _ = try await first.reserve("signin-email:victim@acme.test")
            clock.advance(by: 20)
        }
        // The tenth failure was at 180 s; at 950 s the first three are out of the window.
        clock.advance(by: 950 - 200)
        let fresh = AttemptLimiter(policy: policy, ledger: stores[1], now: { clock.now })
        await #expect(throws: AttemptThrottle.Refusal(retryAfterSeconds: 130, lockedOut: true)) {
            try await fresh.reserve("signin-email:victim@acme.test")
        }
        clock.advance(by: 130)
        _ = try await fresh.reserve("signin-email:victim@acme.test")
    }

    @Test func releasesAndSuccessesAreSeenByEveryInstance() async throws {
        let clock = TestTime()
        let limiters = try await instances(clock: clock)
        var reservations: [AttemptThrottle.Reservation] = []
        for attempt in 0..<policy.freeFailures { reservations.append(try await limiters[attempt % 2].reserve("k")) }
        await #expect(throws: AttemptThrottle.Refusal.self) { try await limiters[2].reserve("k") }

        // An attempt that was not made is uncounted for everyone.
        try await limiters[0].release(reservations[0])
        _ = try await limiters[1].reserve("k")
        await #expect(throws: AttemptThrottle.Refusal.self) { try await limiters[1].reserve("k") }

        // A success on one instance clears the key for the others (once the 1 s
        // wait instance 2 learned from the table above is over).
        clock.advance(by: 2)
        try await limiters[0].reset("k")
        for _ in 0..<policy.freeFailures { _ = try await limiters[2].reserve("k") }
    }

    @Test func theSharedTableForgetsKeysThatDecideNothing() async throws {
        let clock = TestTime()
        let stores = try await TestPostgres.freshStores(1)
        let limiter = AttemptLimiter(policy: policy, ledger: stores[0], now: { clock.now })
        for _ in 0..<policy.freeFailures { _ = try await limiter.reserve("old") }
        try await stores[0].deleteAttempts(before: clock.now.addingTimeInterval(1))
        // A fresh instance (empty memory) now sees no attempt of "old".
        let fresh = AttemptLimiter(policy: policy, ledger: stores[0], now: { clock.now })
        for _ in 0..<policy.freeFailures { _ = try await fresh.reserve("old") }
    }
}

/// A clock moved by hand.
final class TestTime: Sendable {
    private let current = Mutex(Date(timeIntervalSince1970: 1_900_000_000))
    var now: Date { current.withLock { $0 } }
    func advance(by seconds: TimeInterval) { current.withLock { $0 = $0.addingTimeInterval(seconds) } }
}
