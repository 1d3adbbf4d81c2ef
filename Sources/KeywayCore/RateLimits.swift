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
        // Counts taken from the limiter but not yet written, kept across a failed exchange.
        var unsent: [RateLimitedKey: Int] = [:]
        var batch: Int64 = 0
        var readAt: Int64?
        var lastBatch: [String: Int64] = [:]
    }

    private let store: any RateLimitStore
    private let limiter: RateLimiter<RateLimitedKey>
    private let state = Mutex(State())
    /// This process, among the instances sharing counts.
    public let instance: String

    /// - Parameters:
    ///   - store: Where the limits are kept.
    ///   - now: Monotonic nanoseconds; tests pass a clock they move by hand.
    public init(store: any RateLimitStore, now: @escaping @Sendable () -> UInt64 = monotonicNanoseconds) {
        self.store = store
        self.limiter = RateLimiter(now: now)
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
        }
    }

    /// Reads the limits again when the store's version moved since the last read (always the first time).
    public func refresh() async throws {
        let version = try await store.rateLimitsVersion()
        guard state.withLock({ $0.version != version }) else { return }
        // Read after the version: a change committed in between is read now and again next time.
        let settings = try await store.rateLimits()
        state.withLock { state in
            state.settings = settings
            state.version = version
        }
    }

    /// Writes what this instance allowed since the last exchange and charges what the others
    /// allowed since theirs, so that together they hold each limit.
    public func exchange(through exchange: any RateLimitExchange) async throws {
        let taken = limiter.takeCounts()
        let (outgoing, batch, since) = state.withLock { state in
            state.unsent.merge(taken, uniquingKeysWith: +)
            state.batch += 1
            return (state.unsent, state.batch, state.readAt.map { $0 - Self.lateCommitAllowance })
        }
        let rows = outgoing.map { key, count in
            SharedRateLimitCount(instance: instance, batch: batch, keyID: key.keyID, environmentID: key.environmentID, count: count)
        }
        let (others, readAt) = try await exchange.exchangeRateLimitCounts(rows, instance: instance, since: since)
        let fresh = state.withLock { state in
            state.unsent = [:]
            state.readAt = readAt
            // Each instance writes its batches one after another, so a batch seen means every
            // earlier one was committed; rows read twice (the window overlaps) are skipped here.
            var fresh: [RateLimitedKey: Int] = [:]
            var newest = state.lastBatch
            for row in others where row.batch > state.lastBatch[row.instance] ?? 0 {
                fresh[RateLimitedKey(keyID: row.keyID, environmentID: row.environmentID), default: 0] += row.count
                newest[row.instance] = max(newest[row.instance] ?? 0, row.batch)
            }
            state.lastBatch = newest
            return fresh
        }
        limiter.absorb(fresh) { key in setting(for: key.environmentID).policy(for: key.environmentID.environment) }
    }

    /// How far back each exchange reads again (milliseconds): a row committed up to this long
    /// after its timestamp was taken is still seen.
    static let lateCommitAllowance: Int64 = 2000

    /// Forgets keys whose windows are empty.
    public func prune() {
        limiter.prune()
    }
}
