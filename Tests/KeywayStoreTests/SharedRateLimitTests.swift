import Foundation
import KeywayCore
import KeywayPostgres
import Testing

/// A rate limit held by three instances together through PostgreSQL's `rate_limit_counts`.
///
/// It measures a bound that depends on exchanging every 50 ms, so it runs alone, in a `swift test`
/// of its own (`scripts/test` does). Beside the other suites, on two cores shared with another
/// build, 3 runs of 19 let more than 55/s through (55.1–56.2), the exchanges up to 216–772 ms
/// apart; alone on the same loaded machine, 72–79 ms apart and 51.1–51.5/s.
@Suite(
    .enabled(if: TestPostgres.serverURL != nil, "needs KEYWAY_TEST_POSTGRES_URL"),
    .enabled(
        if: ProcessInfo.processInfo.environment["KEYWAY_TEST_RATE_LIMIT_ALONE"] == "1",
        "timing-sensitive: KEYWAY_TEST_RATE_LIMIT_ALONE=1 swift test --filter SharedRateLimitTests"
    )
)
struct SharedRateLimitTests {
    /// 3N requests a second spread over three instances for ten seconds, each instance
    /// exchanging counts every 50 ms as the server does: between N and 1.1 N a second pass.
    @Test func threeInstancesHoldALimitTogether() async throws {
        let limit = 50
        let seconds = 10
        let (stores, instances, key) = try await Self.threeInstances(sharing: limit)
        let start = ContinuousClock.now + .milliseconds(100)

        let sent = try await withThrowingTaskGroup(of: Outcome.self) { group in
            for (index, instance) in instances.enumerated() {
                // The maintenance loop of each instance.
                group.addTask {
                    let end = start + .seconds(seconds) + .milliseconds(200)
                    var previous = ContinuousClock.now
                    var longestGap = Duration.zero
                    while ContinuousClock.now < end {
                        try await Task.sleep(for: .milliseconds(50))
                        try await instance.exchange(through: stores[index])
                        longestGap = max(longestGap, ContinuousClock.now - previous)
                        previous = ContinuousClock.now
                    }
                    return Outcome(allowed: 0, last: start, longestGap: longestGap)
                }
                // Its share of the traffic: N a second, evenly spaced, from a different phase.
                group.addTask {
                    let phase = start + .milliseconds(index * 1000 / (limit * 3))
                    var allowed = 0
                    for request in 0..<(limit * seconds) {
                        try await Task.sleep(until: phase + .microseconds(request * 1_000_000 / limit))
                        if instance.take(key)?.allowed == true { allowed += 1 }
                    }
                    return Outcome(allowed: allowed, last: ContinuousClock.now, longestGap: .zero)
                }
            }
            return try await group.reduce(Outcome(allowed: 0, last: start, longestGap: .zero)) { total, task in
                Outcome(allowed: total.allowed + task.allowed, last: max(total.last, task.last), longestGap: max(total.longestGap, task.longestGap))
            }
        }
        // Over the whole run: late senders make it last longer than ten seconds, never shorter.
        let elapsed = max(Double(seconds), (sent.last - start) / .seconds(1))
        let perSecond = Double(sent.allowed) / elapsed
        let report = "\(sent.allowed) allowed in \(elapsed) s, \(perSecond)/s; exchanges at most \(sent.longestGap) apart"
        print("three instances, limit \(limit)/s, sent \(limit * 3)/s for \(seconds) s: \(report)")
        #expect(perSecond >= Double(limit), "\(report)")
        #expect(perSecond <= Double(limit) * 1.1, "\(report)")
    }

    /// A burst: three instances that know of each other (idle, exchanging as the server does)
    /// receive the limit's worth of requests each at the same moment, early in one of the
    /// limiter's one-second windows, then a request every millisecond each until the window
    /// ends. One instance alone passes exactly N in that window; three together at most 1.1 N.
    @Test func aBurstOnThreeInstancesPassesAboutOnce() async throws {
        let limit = 60
        let (stores, instances, key) = try await Self.threeInstances(sharing: limit)
        // The limiter's windows are whole seconds of `monotonicNanoseconds`: the burst comes 100 ms
        // into one, at least half a second from now (a few idle exchanges first).
        let now = monotonicNanoseconds()
        var window = now / 1_000_000_000 + 1
        if window * 1_000_000_000 - now < 400_000_000 { window += 1 }
        let start = ContinuousClock.now
        let burst = start + .nanoseconds(window * 1_000_000_000 + 100_000_000 - now)
        let end = start + .nanoseconds((window + 1) * 1_000_000_000 - 20_000_000 - now)

        let allowed = try await withThrowingTaskGroup(of: Int.self) { group in
            for (index, instance) in instances.enumerated() {
                group.addTask {
                    while ContinuousClock.now < end + .milliseconds(100) {
                        try await Task.sleep(for: .milliseconds(50))
                        try await instance.exchange(through: stores[index])
                    }
                    return 0
                }
                group.addTask {
                    try await Task.sleep(until: burst)
                    var allowed = 0
                    for _ in 0..<limit where instance.take(key)?.allowed == true { allowed += 1 }
                    while ContinuousClock.now < end {
                        try await Task.sleep(for: .milliseconds(1))
                        if instance.take(key)?.allowed == true { allowed += 1 }
                    }
                    return allowed
                }
            }
            return try await group.reduce(0, +)
        }
        print("three instances, limit \(limit)/s, a burst of \(limit) on each then 1000/s each: \(allowed) passed in the window")
        #expect(allowed >= limit * 9 / 10, "\(allowed)")
        #expect(Double(allowed) <= Double(limit) * 1.1, "\(allowed)")
    }

    /// Three PostgreSQL-backed instances exchanging counts, and a production key limited to `limit`.
    static func threeInstances(sharing limit: Int) async throws -> ([KeywayPostgresStore], [RateLimits], AuthenticatedKey) {
        let stores = try await TestPostgres.freshStores(3)
        let account = try await stores[0].createAccount(name: "Acme", at: Date())
        let environmentID = EnvironmentID(accountID: account.id, environment: .production)
        try await stores[0].setRateLimit(.requestsPerSecond(limit), for: environmentID, audit: .system)
        let instances = stores.map { RateLimits(store: $0, sharesCounts: true) }
        for instance in instances { try await instance.refresh() }
        let key = AuthenticatedKey(keyID: SecretKeyID(rawValue: "key_shared"), environmentID: environmentID, hint: "kw_prod_…test")
        return (stores, instances, key)
    }

    /// What one task of the test saw: requests allowed, when it ended, the longest time between
    /// two of its exchanges.
    struct Outcome: Sendable {
        let allowed: Int
        let last: ContinuousClock.Instant
        let longestGap: Duration
    }
}
