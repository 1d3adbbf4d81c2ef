import Foundation
import Synchronization

/// What the limiter counts: a key, with the environment whose limit applies to it.
public struct RateLimitedKey: Sendable, Hashable {
    public let keyID: SecretKeyID
    public let environmentID: EnvironmentID

    public init(keyID: SecretKeyID, environmentID: EnvironmentID) {
        self.keyID = keyID
        self.environmentID = environmentID
    }
}

/// Every environment's request limit, in memory, and the limiter that applies them to keys.
///
/// The request path reads no database: ``take(_:)`` asks memory only. The limits are loaded
/// before serving (``refresh()``), read again whenever the store's version moves (the server
/// checks it every `KEYWAY_REVOCATION_POLL_MS`), and a change made through ``set(_:for:)`` —
/// the dashboard — applies here before it returns. Each key is limited on its own, at its
/// environment's limit. On PostgreSQL, ``exchange(through:)`` shares the counts with the
/// other instances.
public final class RateLimits: Sendable {
    private struct State {
        var settings: [EnvironmentID: RateLimitSetting] = [:]
        var version: Int64?
        // Refreshes and sets are numbered when they begin reading; only a newer one than the
        // last applied may replace the settings, so a slow, stale read never undoes a newer one.
        var issued: UInt64 = 0
        var applied: UInt64 = 0
        // Counts taken from the limiter but not yet written, kept across a failed exchange.
        var unsent: [RateLimitedKey: Int] = [:]
        var batch: Int64 = 0
        // Each other instance's newest batch counted here, and when (monotonic nanoseconds).
        var seen: [String: (batch: Int64, at: UInt64)] = [:]

        mutating func issue() -> UInt64 {
            issued &+= 1
            return issued
        }
    }

    private let store: any RateLimitStore
    private let limiter: RateLimiter<RateLimitedKey>
    private let state = Mutex(State())
    private let now: @Sendable () -> UInt64
    /// This process, among the instances sharing counts.
    public let instance: String

    /// - Parameters:
    ///   - store: Where the limits are kept.
    ///   - sharesCounts: Whether ``exchange(through:)`` will run (PostgreSQL): only then are
    ///     counts kept for the other instances.
    ///   - now: Monotonic nanoseconds; tests pass a clock they move by hand.
    public init(store: any RateLimitStore, sharesCounts: Bool = false, now: @escaping @Sendable () -> UInt64 = monotonicNanoseconds) {
        self.store = store
        self.limiter = RateLimiter(sharesCounts: sharesCounts, now: now)
        self.now = now
        self.instance = "inst_" + UUID().uuidString.lowercased()
    }

    /// Counts one request of `key` against its environment's limit.
    /// - Returns: The decision, or `nil` when the environment has no limit.
    public func take(_ key: AuthenticatedKey) -> RateLimitDecision? {
        let environmentID = key.environmentID
        guard let policy = setting(for: environmentID).policy(for: environmentID.environment) else { return nil }
        return limiter.take(RateLimitedKey(keyID: key.keyID, environmentID: environmentID), policy: policy)
    }

    /// The environment's limit as this process knows it.
    public func setting(for environmentID: EnvironmentID) -> RateLimitSetting {
        state.withLock { $0.settings[environmentID] } ?? .default
    }

    /// Sets an environment's limit in the store and, before returning, here.
    public func set(_ setting: RateLimitSetting, for environmentID: EnvironmentID) async throws {
        try await store.setRateLimit(setting, for: environmentID)
        state.withLock { state in
            state.settings[environmentID] = setting == .default ? nil : setting
            // A refresh that began before this point may have read the old value: it must not apply.
            state.applied = state.issue()
        }
    }

    /// Reads the limits again when the store's version moved since the last read (always the first time).
    public func refresh() async throws {
        let ticket = state.withLock { $0.issue() }
        let version = try await store.rateLimitsVersion()
        guard state.withLock({ $0.version != version }) else { return }
        // Read after the version: a change committed in between is read now and again next time.
        let settings = try await store.rateLimits()
        state.withLock { state in
            guard ticket > state.applied else { return }
            state.settings = settings
            state.version = version
            state.applied = ticket
        }
    }

    /// Writes what this instance allowed since the last exchange and charges what the others
    /// allowed since theirs, so that together they hold each limit.
    public func exchange(through exchange: any RateLimitExchange) async throws {
        let taken = limiter.takeCounts()
        let (outgoing, batch, seen) = state.withLock { state in
            state.unsent.merge(taken, uniquingKeysWith: +)
            state.batch += 1
            return (state.unsent, state.batch, state.seen.mapValues(\.batch))
        }
        let rows = outgoing.map { key, count in
            SharedRateLimitCount(instance: instance, batch: batch, keyID: key.keyID, environmentID: key.environmentID, count: count)
        }
        let (others, otherInstances) = try await exchange.exchangeRateLimitCounts(rows, instance: instance, after: seen)
        let now = now()
        let fresh = state.withLock { state in
            state.unsent = [:]
            // The store returned only batches newer than `seen`; a concurrent exchange cannot
            // exist (the maintenance loop runs one at a time), but skip what is not newer anyway.
            var fresh: [RateLimitedKey: Int] = [:]
            for row in others where row.batch > state.seen[row.instance]?.batch ?? 0 {
                fresh[RateLimitedKey(keyID: row.keyID, environmentID: row.environmentID), default: 0] += row.count
            }
            for row in others {
                state.seen[row.instance] = (max(state.seen[row.instance]?.batch ?? 0, row.batch), now)
            }
            // An instance silent this long has no row left inside the window: forget it, so the
            // map holds only live instances however many have come and gone.
            state.seen = state.seen.filter { now &- $0.value.at < Self.forgetInstanceAfter }
            return fresh
        }
        limiter.absorb(fresh, instances: otherInstances + 1) { key in
            setting(for: key.environmentID).policy(for: key.environmentID.environment)
        }
    }

    /// Other instances remembered while they write, at most this long after their last row.
    static let forgetInstanceAfter: UInt64 = 10_000_000_000

    /// Other instances remembered by the last exchange.
    package var rememberedInstances: Int { state.withLock { $0.seen.count } }

    /// Forgets keys whose windows are empty.
    public func prune() {
        limiter.prune()
    }
}
