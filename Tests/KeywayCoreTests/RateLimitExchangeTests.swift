import Foundation
import KeywayCore
import Synchronization
import Testing

/// What one instance does with the rows the others wrote: charge each batch once, and
/// forget instances that stopped writing.
@Suite struct RateLimitExchangeTests {
    let clock = RateLimiterTests.ManualClock()
    let environment = EnvironmentID(accountID: AccountID(rawValue: "acct_a"), environment: .production)
    var key: AuthenticatedKey { AuthenticatedKey(keyID: SecretKeyID(rawValue: "key_a"), environmentID: environment, hint: "kw_prod_…abcd") }

    func limits() async throws -> RateLimits {
        let store = HeldRateLimitStore()
        try await store.setRateLimit(.requestsPerSecond(10), for: environment, audit: .system)
        let limits = RateLimits(store: store, sharesCounts: true, now: { [clock] in clock.now })
        try await limits.refresh()
        return limits
    }

    func row(_ instance: String, batch: Int64, count: Int, writtenAt: Int64 = 0) -> SharedRateLimitCount {
        SharedRateLimitCount(instance: instance, batch: batch, environmentID: environment, count: count, writtenAt: writtenAt)
    }

    @Test func eachBatchIsChargedOnceAndTheNextExchangeAsksOnlyForNewerOnes() async throws {
        let limits = try await limits()
        let exchange = ScriptedExchange([[row("inst_b", batch: 1, count: 4)], [row("inst_b", batch: 1, count: 4)]])
        try await limits.exchange(through: exchange)
        try await limits.exchange(through: exchange)
        #expect(exchange.asked == [[:], ["inst_b": 1]], "the second exchange names the batch already counted")
        clock.advance(milliseconds: 300)  // past the expectation: only what was charged remains
        var allowed = 0
        while limits.take(key)?.allowed == true { allowed += 1 }
        #expect(allowed == 6, "a batch returned twice is charged once: \(allowed)")
    }

    @Test func instancesThatStopWritingAreForgotten() async throws {
        let limits = try await limits()
        let exchange = ScriptedExchange([
            [row("inst_b", batch: 1, count: 1), row("inst_c", batch: 3, count: 1)], [row("inst_c", batch: 4, count: 1)],
        ])
        try await limits.exchange(through: exchange)
        #expect(limits.rememberedInstances == 2)
        clock.advance(milliseconds: 9_000)
        try await limits.exchange(through: exchange)  // only inst_c wrote
        clock.advance(milliseconds: 2_000)
        try await limits.exchange(through: exchange)
        #expect(limits.rememberedInstances == 1, "inst_b was silent for 11 s")
        try await limits.exchange(through: exchange)
        #expect(exchange.asked.last == ["inst_c": 4])
    }

    @Test func countsAreKeptAcrossAFailedExchange() async throws {
        let limits = try await limits()
        let exchange = ScriptedExchange([], failFirst: true)
        for _ in 0..<3 { _ = limits.take(key) }
        await #expect(throws: ScriptedExchange.Failure.self) { try await limits.exchange(through: exchange) }
        _ = limits.take(key)
        try await limits.exchange(through: exchange)
        #expect(exchange.written.map(\.count) == [4], "the three of the failed exchange and one more")
    }

    /// After a stall, what was counted more than a window ago is not written: the others would
    /// charge it as new and refuse keys that are under their limit.
    @Test func countsOlderThanTheWindowAreDroppedNotWritten() async throws {
        let limits = try await limits()
        let exchange = ScriptedExchange([], failFirst: true)
        for _ in 0..<3 { _ = limits.take(key) }
        await #expect(throws: ScriptedExchange.Failure.self) { try await limits.exchange(through: exchange) }
        clock.advance(milliseconds: 1_000)
        _ = limits.take(key)
        try await limits.exchange(through: exchange)
        #expect(exchange.written.map(\.count) == [1], "only the request of the last second")
    }

    /// A batch that covers a long gap (the other instance stalled) is charged, but not expected
    /// again in full before the next exchange.
    @Test func aBatchAfterAGapIsNotExpectedAgainInFull() async throws {
        let store = HeldRateLimitStore()
        try await store.setRateLimit(.requestsPerSecond(50), for: environment, audit: .system)
        let limits = RateLimits(store: store, sharesCounts: true, now: { [clock] in clock.now })
        try await limits.refresh()
        let exchange = ScriptedExchange([
            [row("inst_b", batch: 1, count: 1, writtenAt: 1_000)], [row("inst_b", batch: 2, count: 40, writtenAt: 5_000)],
        ])
        try await limits.exchange(through: exchange)
        try await limits.exchange(through: exchange)
        var allowed = 0
        while limits.take(key)?.allowed == true { allowed += 1 }
        // 41 charged and 40 × 200 ms / 4 s = 2 expected: 7 left (not 0, as 40 expected would leave).
        #expect(allowed == 7, "\(allowed)")
    }
}

/// Answers each exchange with the next scripted rows and records what it was asked.
final class ScriptedExchange: RateLimitExchange {
    struct Failure: Error {}
    private let state: Mutex<(answers: [[SharedRateLimitCount]], asked: [[String: Int64]], written: [SharedRateLimitCount], failNext: Bool)>

    init(_ answers: [[SharedRateLimitCount]], failFirst: Bool = false) {
        state = Mutex((answers, [], [], failFirst))
    }

    var asked: [[String: Int64]] { state.withLock { $0.asked } }
    var written: [SharedRateLimitCount] { state.withLock { $0.written } }

    func exchangeRateLimitCounts(
        _ counts: [SharedRateLimitCount],
        instance: String,
        after seen: [String: Int64]
    ) async throws -> (rows: [SharedRateLimitCount], otherInstances: Int) {
        try state.withLock { state in
            if state.failNext {
                state.failNext = false
                throw Failure()
            }
            state.asked.append(seen)
            state.written += counts
            return (state.answers.isEmpty ? [] : state.answers.removeFirst(), 0)
        }
    }

    func deleteRateLimitCounts(olderThan milliseconds: Int64) async throws {}
}
