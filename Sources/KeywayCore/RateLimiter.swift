import Synchronization

/// How many requests a key may make: `requestsPerSecond`, of which a whole second's
/// worth may arrive at once (the burst).
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
    /// Requests the key may still make at once (`r`).
    public let remaining: Int
    /// Seconds until the key's whole quota is back (`t`); 0 when it already is.
    public let resetSeconds: Int
    /// When refused, whole seconds until one request would be allowed (`Retry-After`), at least 1.
    public let retryAfterSeconds: Int?
}

/// Per-key rate limiting by the generic cell rate algorithm (GCRA), in memory.
///
/// Each key holds one number, its theoretical arrival time (TAT): the instant by which
/// every request it made so far would have been paid for at the policy's rate. A
/// request is allowed when the TAT is at most a burst's worth ahead of now, and pushes
/// it one emission interval further. Nothing is counted per window, so there is no
/// boundary at which twice the limit gets through.
///
/// Instances of one deployment share their consumption: ``takeCounts()`` hands over
/// what this instance allowed since it was last asked, and ``absorb(_:policies:)``
/// charges what the others allowed, pushing those keys' TATs ahead (see
/// docs/architecture.md, "Rate limits", for the bound this gives).
public final class RateLimiter: Sendable {
    private struct State {
        var arrivals: [SecretKeyID: UInt64] = [:]
        var counts: [SecretKeyID: Int] = [:]
    }

    private let state = Mutex(State())
    private let now: @Sendable () -> UInt64

    /// - Parameter now: Monotonic nanoseconds; tests pass a clock they move by hand.
    public init(now: @escaping @Sendable () -> UInt64 = RateLimiter.monotonicNanoseconds) {
        self.now = now
    }

    private static let origin = ContinuousClock.now

    /// The system's monotonic clock, in nanoseconds since the process first asked.
    public static func monotonicNanoseconds() -> UInt64 {
        let elapsed = ContinuousClock.now - origin
        return UInt64(elapsed.components.seconds) &* 1_000_000_000 &+ UInt64(elapsed.components.attoseconds / 1_000_000_000)
    }

    /// Asks whether `key` may make one more request under `policy`, and counts it when it may.
    public func take(_ key: SecretKeyID, policy: RateLimitPolicy) -> RateLimitDecision {
        let now = now()
        let interval = Self.interval(policy)
        let tolerance = interval &* UInt64(policy.requestsPerSecond - 1)
        return state.withLock { state in
            let arrival = max(state.arrivals[key] ?? now, now)
            guard arrival - now <= tolerance else {
                let wait = arrival - now - tolerance
                return RateLimitDecision(
                    allowed: false,
                    policy: policy,
                    remaining: 0,
                    resetSeconds: Self.wholeSeconds(arrival - now),
                    retryAfterSeconds: max(1, Self.wholeSeconds(wait))
                )
            }
            let next = arrival + interval
            state.arrivals[key] = next
            state.counts[key, default: 0] += 1
            let used = Int((next - now + interval - 1) / interval)
            return RateLimitDecision(
                allowed: true,
                policy: policy,
                remaining: max(0, policy.requestsPerSecond - used),
                resetSeconds: Self.wholeSeconds(next - now),
                retryAfterSeconds: nil
            )
        }
    }

    /// The requests this instance allowed per key since the last call, for the others.
    public func takeCounts() -> [SecretKeyID: Int] {
        state.withLock { state in
            defer { state.counts = [:] }
            return state.counts
        }
    }

    /// Charges requests other instances allowed, as if made here now.
    /// - Parameter policies: Each key's policy; keys without one are not limited and are skipped.
    public func absorb(_ counts: [SecretKeyID: Int], policies: (SecretKeyID) -> RateLimitPolicy?) {
        let now = now()
        let charges = counts.compactMap { key, count in policies(key).map { (key, UInt64(count) &* Self.interval($0)) } }
        guard !charges.isEmpty else { return }
        state.withLock { state in
            for (key, charge) in charges {
                state.arrivals[key] = max(state.arrivals[key] ?? now, now) + charge
            }
        }
    }

    /// Forgets keys whose quota is whole again: they behave exactly as unknown ones.
    public func prune() {
        let now = now()
        state.withLock { state in
            state.arrivals = state.arrivals.filter { $0.value > now }
        }
    }

    /// Keys currently remembered.
    public var count: Int { state.withLock { $0.arrivals.count } }

    private static func interval(_ policy: RateLimitPolicy) -> UInt64 {
        1_000_000_000 / UInt64(policy.requestsPerSecond)
    }

    private static func wholeSeconds(_ nanoseconds: UInt64) -> Int {
        Int((nanoseconds + 999_999_999) / 1_000_000_000)
    }
}
