import Synchronization

/// How many requests a key may make: at most `requestsPerSecond` in any second.
public struct RateLimitPolicy: Sendable, Hashable, CustomStringConvertible {
    /// Requests a second, at least 1.
    public let requestsPerSecond: Int

    /// - Precondition: `requestsPerSecond` is at least 1; "no limit" is `nil`, not 0.
    public init(requestsPerSecond: Int) {
        precondition(requestsPerSecond >= 1, "a limit allows at least one request a second")
        self.requestsPerSecond = requestsPerSecond
    }

    /// The default of a development environment: a sandbox for building, not for load.
    public static let developmentDefault = RateLimitPolicy(requestsPerSecond: 25)
    /// The default of a production environment.
    public static let productionDefault = RateLimitPolicy(requestsPerSecond: 100)

    /// The default of `environment` (Stripe's figures, which API users already plan for).
    public static func `default`(for environment: Environment) -> RateLimitPolicy {
        environment == .production ? productionDefault : developmentDefault
    }

    public var description: String { "\(requestsPerSecond)/s" }
}

/// What the limiter decided about one request, with what the IETF RateLimit fields say.
public struct RateLimitDecision: Sendable, Hashable {
    /// Whether the request may proceed.
    public let allowed: Bool
    /// The policy it was measured against (`q`, with a window `w` of one second).
    public let policy: RateLimitPolicy
    /// Requests the key may still make in the current second (`r`).
    public let remaining: Int
    /// Whole seconds until more quota is available (`t`): 1 on a success (the window slides
    /// within the second); when refused, the same as ``retryAfterSeconds``, which must not
    /// name an earlier time.
    public let resetSeconds: Int
    /// When refused, whole seconds until one request would be allowed (`Retry-After`), at least 1.
    public let retryAfterSeconds: Int?
}

/// Per-key rate limiting by a sliding-window counter, in memory.
///
/// Each key holds the requests it made in the current one-second window and in the
/// previous one. A request is allowed when the previous window's count, weighted by
/// the part of it still inside the last second, plus the current count stays within
/// the policy: so at most the limit passes in any second (within the estimate's error,
/// which assumes the previous window's requests were spread evenly), and never twice
/// the limit at a window's boundary as with a fixed window. A burst of the whole
/// limit at once is allowed; what follows is refused until the window slides.
///
/// Instances of one deployment share their consumption: ``takeCounts()`` hands over
/// what this instance allowed since it was last asked (only when the limiter was made
/// with `sharesCounts`, so a lone instance keeps no such tally), and
/// ``absorb(_:policies:)`` counts what the others allowed as if it had been allowed here
/// now, and expects as much again before the next exchange — for at most
/// `expectationLifetime`, so that exchanges that stop (a database outage) leave each
/// instance alone at its own share, not locked out (see docs/architecture.md,
/// "Rate limits", for the bound this gives).
public final class RateLimiter<Key: Hashable & Sendable>: Sendable {
    private struct Window {
        var index: UInt64
        var current: Int
        var previous: Int
        /// What other instances allowed in their last exchange, expected again before the next:
        /// counted as used so that the exchange's lag does not become overshoot.
        var expected = 0
        /// When the expectation lapses if no exchange replaced it (monotonic nanoseconds).
        var expectedUntil: UInt64 = 0

        /// The exchange (see `State.epoch`) the next two counts belong to.
        var epoch: UInt64 = 0
        /// Requests this instance allowed since the last exchange, and in the exchange interval before.
        var ownThisEpoch = 0
        var ownLastEpoch = 0
        /// Drawn at each epoch, 0..<1000: whether a share's fraction of a request is one more.
        var draw: UInt64 = 0

        /// The expectation at `now`: nothing once it lapsed.
        func expected(at now: UInt64) -> Int { now < expectedUntil ? expected : 0 }

        /// Moves the own counts to the exchange interval `epoch`.
        mutating func roll(toEpoch epoch: UInt64) {
            guard epoch != self.epoch else { return }
            ownLastEpoch = epoch == self.epoch + 1 ? ownThisEpoch : 0
            ownThisEpoch = 0
            self.epoch = epoch
            draw = UInt64.random(in: 0..<1000)
        }

        /// Whether this instance may allow one more request before the others have seen its
        /// last two intervals' worth: its share of `limit` among `instances`, at least a fifth
        /// of it (so that one instance alone can carry the whole rate), a fraction of a request
        /// being one more request with that probability.
        func withinShare(of limit: Int, among instances: Int) -> Bool {
            let shareInThousandths = max(UInt64(limit) * 1000 / UInt64(instances), UInt64(limit) * 1000 / RateLimiterShare.floorDivisor)
            let allowance = shareInThousandths / 1000 + (draw < shareInThousandths % 1000 ? 1 : 0)
            return UInt64(ownThisEpoch + ownLastEpoch) < allowance
        }

        /// Moves to the window `index`, dropping what is older than the previous one.
        mutating func roll(to index: UInt64) {
            guard index != self.index else { return }
            previous = index == self.index + 1 ? current : 0
            current = 0
            self.index = index
        }
    }

    private struct State {
        var windows: [Key: Window] = [:]
        var counts: [Key: Int] = [:]
        var expecting: Set<Key> = []
        /// Exchanges absorbed so far.
        var epoch: UInt64 = 0
        /// Instances writing counts, this one included, as the last exchange saw them.
        var instances = 1
        var lastExchangeAt: UInt64?

        /// How many instances share each limit at `now`: 1 once exchanges stopped arriving,
        /// so an instance cut off from the others is never held to a fraction of the limit.
        func sharing(at now: UInt64, lifetime: UInt64) -> Int {
            guard let lastExchangeAt, now &- lastExchangeAt < lifetime else { return 1 }
            return instances
        }
    }

    private static var second: UInt64 { 1_000_000_000 }
    private let state = Mutex(State())
    private let now: @Sendable () -> UInt64
    private let sharesCounts: Bool
    private let expectationLifetime: UInt64

    /// - Parameters:
    ///   - sharesCounts: Whether ``takeCounts()`` will be called: only then is a tally kept.
    ///   - expectationLifetime: How long (nanoseconds) after the last exchange what it said is
    ///     expected again and each instance keeps to its share; then this instance is alone.
    ///     One window: exchanges that come late under load (hundreds of ms) still hold the
    ///     limit, and a database that is gone costs at most a second of refusals.
    ///   - now: Monotonic nanoseconds; tests pass a clock they move by hand.
    public init(
        sharesCounts: Bool = false,
        expectationLifetime: UInt64 = 1_000_000_000,
        now: @escaping @Sendable () -> UInt64 = monotonicNanoseconds
    ) {
        self.sharesCounts = sharesCounts
        self.expectationLifetime = expectationLifetime
        self.now = now
    }

    /// Asks whether `key` may make one more request under `policy`, and counts it when it may.
    public func take(_ key: Key, policy: RateLimitPolicy) -> RateLimitDecision {
        let now = now()
        let index = now / Self.second
        let elapsed = now % Self.second
        let limit = policy.requestsPerSecond
        return state.withLock { state in
            var window = state.windows[key] ?? Window(index: index, current: 0, previous: 0)
            window.roll(to: index)
            // In nanosecond-requests: the previous window's share still inside the last second.
            let sharing = state.sharing(at: now, lifetime: expectationLifetime)
            window.roll(toEpoch: state.epoch)
            let carried = UInt64(window.previous) &* (Self.second - elapsed)
            let expected = window.expected(at: now)
            let used = carried &+ UInt64(window.current + expected) &* Self.second
            // Allowed while the estimate is under the limit: so in a steady overload each window
            // ends with the limit, not one less, as "estimate + 1 ≤ limit" would leave it.
            guard used < UInt64(limit) &* Self.second else {
                state.windows[key] = window
                let wait = Self.wait(current: window.current + expected, previous: window.previous, elapsed: elapsed, limit: limit)
                let seconds = max(1, Self.wholeSeconds(wait))
                return RateLimitDecision(allowed: false, policy: policy, remaining: 0, resetSeconds: seconds, retryAfterSeconds: seconds)
            }
            // Before the others have seen them, this instance's requests are its share of the limit
            // at most: a burst reaching every instance at once passes about once, not once per instance.
            guard sharing == 1 || window.withinShare(of: limit, among: sharing) else {
                state.windows[key] = window
                return RateLimitDecision(allowed: false, policy: policy, remaining: 0, resetSeconds: 1, retryAfterSeconds: 1)
            }
            window.current += 1
            window.ownThisEpoch += 1
            state.windows[key] = window
            if sharesCounts { state.counts[key, default: 0] += 1 }
            let after = used &+ Self.second
            let remaining = after >= UInt64(limit) &* Self.second ? 0 : (UInt64(limit) &* Self.second &- after) / Self.second
            return RateLimitDecision(allowed: true, policy: policy, remaining: Int(remaining), resetSeconds: 1, retryAfterSeconds: nil)
        }
    }

    /// Nanoseconds until the estimate is under `limit` again, so one more request fits,
    /// counting what other instances are expected to take as taken here.
    private static func wait(current: Int, previous: Int, elapsed: UInt64, limit: Int) -> UInt64 {
        let limit = UInt64(limit)
        let current = UInt64(current)
        let previous = UInt64(previous)
        let left = second - elapsed
        if current < limit, previous > 0 {
            // Later in this window: previous × (second − e) < (limit − current) × second.
            let share = (limit - current) * second / previous
            if share < second, second - share > elapsed { return second - share - elapsed }
        }
        guard current > 0 else { return left }
        // In the next window the current count is the previous one: current × (second − e′) < limit × second.
        let share = limit * second / current
        return left + (share >= second ? 0 : second - share)
    }

    /// The requests this instance allowed per key since the last call, for the others.
    public func takeCounts() -> [Key: Int] {
        state.withLock { state in
            defer { state.counts = [:] }
            return state.counts
        }
    }

    /// Counts requests other instances allowed, as if allowed here now.
    /// - Parameters:
    ///   - expecting: What the others are expected to allow again before the next exchange,
    ///     per key; `nil`: as much as `counts`.
    ///   - instances: How many instances write counts, this one included: until the others
    ///     have seen a request, each instance lets through at most its share of a limit.
    ///   - policies: Each key's policy; keys without one are not limited and are skipped.
    public func absorb(
        _ counts: [Key: Int],
        expecting: [Key: Int]? = nil,
        instances: Int = 1,
        policies: (Key) -> RateLimitPolicy?
    ) {
        let now = now()
        let index = now / Self.second
        let expectedUntil = now &+ expectationLifetime
        let charges = counts.filter { $0.value > 0 && policies($0.key) != nil }
        state.withLock { state in
            state.epoch &+= 1
            state.instances = max(1, instances)
            state.lastExchangeAt = now
            // Last exchange's expectation is replaced by what really arrived.
            for key in state.expecting where charges[key] == nil {
                state.windows[key]?.expected = 0
            }
            state.expecting = Set(charges.keys)
            for (key, count) in charges {
                var window = state.windows[key] ?? Window(index: index, current: 0, previous: 0)
                window.roll(to: index)
                window.current += count
                window.expected = expecting?[key] ?? count
                window.expectedUntil = expectedUntil
                state.windows[key] = window
            }
        }
    }

    /// Forgets keys that made no request in the last two windows: they behave exactly as unknown ones.
    public func prune() {
        let index = now() / Self.second
        state.withLock { state in
            state.windows = state.windows.filter { $0.value.index + 1 >= index && ($0.value.current > 0 || $0.value.index == index) }
        }
    }

    /// Keys currently remembered.
    public var count: Int { state.withLock { $0.windows.count } }

    private static func wholeSeconds(_ nanoseconds: UInt64) -> Int {
        Int((nanoseconds + second - 1) / second)
    }
}

/// Constants of the share rule of ``RateLimiter``.
enum RateLimiterShare {
    /// An instance's share is never under limit / 5: over two exchange intervals (100 ms) that
    /// is twice what one instance needs to carry the whole rate alone (limit / 10), so that a
    /// key whose traffic all reaches one instance gets its limit. The price: a burst reaching
    /// more than five instances at once passes up to k / 5 times the limit.
    static let floorDivisor: UInt64 = 5
}

/// The system's monotonic clock, in nanoseconds since the process first asked.
public func monotonicNanoseconds() -> UInt64 {
    // The origin is made on first use: read it before the clock, or the first call is negative.
    let origin = monotonicOrigin
    let elapsed = ContinuousClock.now - origin
    return UInt64(elapsed.components.seconds) &* 1_000_000_000 &+ UInt64(elapsed.components.attoseconds / 1_000_000_000)
}

private let monotonicOrigin = ContinuousClock.now
