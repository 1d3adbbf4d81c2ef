import Foundation
import KeywayCore
import KeywayPostgres
import Synchronization
import Testing

/// A rate limit held by three instances together through PostgreSQL's `rate_limit_counts`.
@Suite(.enabled(if: TestPostgres.serverURL != nil, "needs KEYWAY_TEST_POSTGRES_URL"))
struct SharedRateLimitTests {
    /// 3N requests a second spread over three instances for ten seconds, each instance
    /// exchanging counts every 50 ms as the server does: between N and 1.1 N a second pass.
    @Test func threeInstancesHoldALimitTogether() async throws {
        let limit = 50
        let seconds = 10
        let stores = try await TestPostgres.freshStores(3)
        let account = try await stores[0].createAccount(name: "Acme", at: Date())
        let environmentID = EnvironmentID(accountID: account.id, environment: .production)
        try await stores[0].setRateLimit(.requestsPerSecond(limit), for: environmentID)
        let instances = stores.map { RateLimits(store: $0) }
        for instance in instances { try await instance.refresh() }
        let key = AuthenticatedKey(keyID: SecretKeyID(rawValue: "key_shared"), environmentID: environmentID, hint: "kw_prod_…test")

        let allowed = try await withThrowingTaskGroup(of: Int.self) { group in
            for (index, instance) in instances.enumerated() {
                // The maintenance loop of each instance.
                group.addTask {
                    let end = ContinuousClock.now + .seconds(seconds) + .milliseconds(200)
                    while ContinuousClock.now < end {
                        try await Task.sleep(for: .milliseconds(50))
                        try await instance.exchange(through: stores[index])
                    }
                    return 0
                }
                // Its share of the traffic: N a second, evenly spaced, from a different phase.
                group.addTask {
                    let start = ContinuousClock.now + .milliseconds(index * 1000 / (limit * 3))
                    var allowed = 0
                    for request in 0..<(limit * seconds) {
                        try await Task.sleep(until: start + .microseconds(request * 1_000_000 / limit))
                        if instance.take(key)?.allowed == true { allowed += 1 }
                    }
                    return allowed
                }
            }
            return try await group.reduce(0, +)
        }
        let perSecond = Double(allowed) / Double(seconds)
        print("three instances, limit \(limit)/s, sent \(limit * 3)/s for \(seconds) s: \(allowed) allowed, \(perSecond)/s")
        #expect(perSecond >= Double(limit), "\(perSecond)/s")
        #expect(perSecond <= Double(limit) * 1.1, "\(perSecond)/s")
    }
}
