import KeywayCore
import Synchronization
import Testing

/// A sliding-window counter per key: a second's worth at once, never more in any second; what the fields report.
@Suite struct RateLimiterTests {
    /// Nanoseconds moved by hand.
    final class ManualClock: Sendable {
        private let nanoseconds = Mutex<UInt64>(1_000_000_000_000)
        var now: UInt64 { nanoseconds.withLock { $0 } }
        func advance(milliseconds: UInt64) { nanoseconds.withLock { $0 += milliseconds * 1_000_000 } }
    }

    let clock = ManualClock()
    var limiter: RateLimiter<SecretKeyID> { RateLimiter(now: { [clock] in clock.now }) }
    let key = SecretKeyID(rawValue: "key_a")
    let ten = RateLimitPolicy(requestsPerSecond: 10)

    @Test func aBurstOfOneSecondsWorthPassesAndTheNextIsRefused() {
        let limiter = self.limiter
        for expected in (0..<10).reversed() {
            let decision = limiter.take(key, policy: ten)
            #expect(decision.allowed)
            #expect(decision.remaining == expected)
            #expect(decision.retryAfterSeconds == nil)
        }
        let refused = limiter.take(key, policy: ten)
        #expect(!refused.allowed)
        #expect(refused.remaining == 0)
        #expect(refused.retryAfterSeconds == 1)
        #expect(refused.resetSeconds == 1, "t never names a time before Retry-After")
    }

    /// The previous second's requests weigh by the part of it still inside the last second.
    @Test func theWindowSlides() {
        let limiter = self.limiter
        for _ in 0..<10 { _ = limiter.take(key, policy: ten) }
        clock.advance(milliseconds: 1000)
        #expect(!limiter.take(key, policy: ten).allowed, "the last second still holds ten")
        clock.advance(milliseconds: 100)
        #expect(limiter.take(key, policy: ten).allowed, "a tenth later, one request")
        #expect(!limiter.take(key, policy: ten).allowed, "and only one")
        clock.advance(milliseconds: 2000)
        #expect(limiter.take(key, policy: ten).remaining == 9, "two seconds later the whole quota is back")
    }

    /// Over ten seconds of steady overload, what passes is the rate, never the
    /// twice-the-limit a fixed window lets through at its boundary.
    @Test func sustainedOverloadGetsTheRateThrough() {
        let limiter = self.limiter
        var allowed = 0
        for _ in 0..<10_000 {  // 1000 requests a second for ten seconds
            if limiter.take(key, policy: ten).allowed { allowed += 1 }
            clock.advance(milliseconds: 1)
        }
        #expect(allowed >= 100 && allowed <= 101, "\(allowed)")
    }

    @Test func keysAreLimitedApart() {
        let limiter = self.limiter
        for _ in 0..<10 { _ = limiter.take(key, policy: ten) }
        #expect(!limiter.take(key, policy: ten).allowed)
        #expect(limiter.take(SecretKeyID(rawValue: "key_b"), policy: ten).allowed)
    }

    /// What other instances allowed is charged here, and expected again until the next exchange
    /// says otherwise: together they stay within the rate.
    @Test func countsFromOtherInstancesAreCharged() {
        let limiter = self.limiter
        let other = RateLimiter<SecretKeyID>(sharesCounts: true, now: { [clock] in clock.now })
        for _ in 0..<6 { #expect(other.take(key, policy: ten).allowed) }
        limiter.absorb(other.takeCounts(), policies: { _ in ten })
        #expect(other.takeCounts().isEmpty, "counts are handed over once")
        #expect(!limiter.take(key, policy: ten).allowed, "as many again are expected from the other before the next exchange")
        limiter.absorb([:], policies: { _ in ten })
        var allowedHere = 0
        while limiter.take(key, policy: ten).allowed { allowedHere += 1 }
        #expect(allowedHere == 4, "ten a second between the two")
        limiter.absorb([SecretKeyID(rawValue: "key_unlimited"): 50], policies: { _ in nil })
        #expect(limiter.count == 1, "a key without a policy is not charged")
    }

    /// Exchanges stop (the database is down): what the others were expected to take lapses,
    /// and this instance goes on at what it counted itself, never locked out.
    @Test func anExpectationNoExchangeRenewsLapses() {
        let limiter = self.limiter
        limiter.absorb([key: 6], policies: { _ in ten })
        #expect(!limiter.take(key, policy: ten).allowed, "6 charged and 6 expected")
        clock.advance(milliseconds: 999)
        #expect(!limiter.take(key, policy: ten).allowed, "expected for a whole window: late exchanges still hold")
        clock.advance(milliseconds: 1)
        var allowed = 0
        while limiter.take(key, policy: ten).allowed { allowed += 1 }
        #expect(allowed == 4, "only the 6 really taken still count: \(allowed)")
    }

    /// Retry-After counts what the other instances are expected to take, or clients come back
    /// to a refusal.
    @Test func retryAfterCountsWhatOthersAreExpectedToTake() {
        let limiter = self.limiter
        limiter.absorb([key: 10], policies: { _ in ten })
        let refused = limiter.take(key, policy: ten)
        #expect(!refused.allowed)
        // 10 taken and 10 expected this second: in the next, 20 × (1 − e) < 10 from e = ½ on.
        #expect(refused.retryAfterSeconds == 2)
    }

    /// Three instances, none of which has seen the others' requests yet: each lets through its
    /// third of the limit, over this exchange interval and the one before, and no more.
    @Test func beforeTheOthersSeeThemAnInstanceTakesItsShare() {
        let limiter = RateLimiter<SecretKeyID>(sharesCounts: true, now: { [clock] in clock.now })
        let thirty = RateLimitPolicy(requestsPerSecond: 30)
        limiter.absorb([:], instances: 3, policies: { _ in thirty })
        var allowed = 0
        while limiter.take(key, policy: thirty).allowed { allowed += 1 }
        #expect(allowed == 10, "a third of 30: \(allowed)")
        clock.advance(milliseconds: 50)
        limiter.absorb([:], instances: 3, policies: { _ in thirty })
        #expect(!limiter.take(key, policy: thirty).allowed, "the interval before still holds ten")
        clock.advance(milliseconds: 50)
        limiter.absorb([:], instances: 3, policies: { _ in thirty })
        allowed = 0
        while limiter.take(key, policy: thirty).allowed { allowed += 1 }
        #expect(allowed == 10, "two intervals on, another share: \(allowed)")
        // The exchanges stop: a window later this instance is alone again, held by the whole limit only.
        clock.advance(milliseconds: 1100)
        allowed = 0
        while limiter.take(key, policy: thirty).allowed { allowed += 1 }
        #expect(allowed > 0)
    }

    /// However many instances there are, one instance may carry the whole rate alone: its share
    /// is never under a fifth of the limit per two exchange intervals.
    @Test func aShareIsNeverUnderAFifthOfTheLimit() {
        let limiter = RateLimiter<SecretKeyID>(sharesCounts: true, now: { [clock] in clock.now })
        let sixty = RateLimitPolicy(requestsPerSecond: 60)
        limiter.absorb([:], instances: 12, policies: { _ in sixty })
        var allowed = 0
        while limiter.take(key, policy: sixty).allowed { allowed += 1 }
        #expect(allowed == 12, "60 / 5, not 60 / 12: \(allowed)")
    }

    /// A limit smaller than the number of instances: each instance's share is a fraction of a
    /// request, one request with that probability, so a burst everywhere passes about the limit.
    @Test func sharesOfSmallLimitsAddUpToTheLimitOnAverage() {
        let limiter = RateLimiter<Int>(sharesCounts: true, now: { [clock] in clock.now })
        let two = RateLimitPolicy(requestsPerSecond: 2)
        limiter.absorb([:], instances: 3, policies: { _ in two })
        let trials = 3000
        var allowed = 0
        for trial in 0..<trials {
            for _ in 0..<5 where limiter.take(trial, policy: two).allowed { allowed += 1 }
        }
        // A share of 2/3 a request: 2000 expected, with a standard deviation of about 26.
        #expect((1850...2150).contains(allowed), "\(allowed) of \(trials) bursts")
    }

    /// A lone instance (SQLite) never hands its counts over: it keeps no tally of them.
    @Test func aLimiterThatSharesNothingKeepsNoTally() {
        let limiter = self.limiter
        for _ in 0..<5 { _ = limiter.take(key, policy: ten) }
        #expect(limiter.takeCounts().isEmpty)
        let sharing = RateLimiter<SecretKeyID>(sharesCounts: true, now: { [clock] in clock.now })
        for _ in 0..<5 { _ = sharing.take(key, policy: ten) }
        #expect(sharing.takeCounts() == [key: 5])
    }

    @Test func pruneForgetsKeysWhoseWindowsAreEmpty() {
        let limiter = self.limiter
        _ = limiter.take(key, policy: ten)
        limiter.prune()
        #expect(limiter.count == 1)
        clock.advance(milliseconds: 1000)
        limiter.prune()
        #expect(limiter.count == 1, "the last second still counts it")
        clock.advance(milliseconds: 1000)
        limiter.prune()
        #expect(limiter.count == 0)
    }

    @Test func theDefaultsAreTheDocumentedOnes() {
        #expect(RateLimitPolicy.default(for: .production).requestsPerSecond == 100)
        #expect(RateLimitPolicy.default(for: .development).requestsPerSecond == 25)
    }
}
