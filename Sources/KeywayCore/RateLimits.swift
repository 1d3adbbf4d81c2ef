import Foundation
import Synchronization

/// Every environment's request limit, in memory, and the limiter that applies them to keys.
///
/// The request path reads no database: ``take(_:)`` asks memory only. The limits are loaded
/// before serving (``refresh()``), read again whenever the store's version moves (the server
/// checks it every `KEYWAY_REVOCATION_POLL_MS`), and a change made through ``set(_:for:)`` —
/// the dashboard — applies here before it returns. The count belongs to the environment's
/// key, not to one key id: a key regenerated to replace it goes on with its count, so that
/// regenerating is no way around the limit. On PostgreSQL, ``exchange(through:)`` shares the
/// counts with the other instances.
public final class RateLimits: Sendable {
    private struct State {
        var settings: [EnvironmentID: RateLimitSetting] = [:]
        var version: Int64?
        // Refreshes and sets are numbered when they begin reading; only a newer one than the
        // last applied may replace the settings, so a slow, stale read never undoes a newer one.
        var issued: UInt64 = 0
        var applied: UInt64 = 0
        // Counts taken from the limiter but not yet written, kept across failed exchanges with
        // when each was taken: those older than the window are dropped, not written as new.
        var unsent: [(at: UInt64, counts: [EnvironmentID: Int])] = []
        var batch: Int64 = 0
        // Each other instance's newest batch counted here, when it was written (database
        // milliseconds), and when it was seen (monotonic nanoseconds).
        var seen: [String: (batch: Int64, writtenAt: Int64, at: UInt64)] = [:]

        mutating func issue() -> UInt64 {
            issued &+= 1
            return issued
        }
    }

    private let store: any RateLimitStore
    private let limiter: RateLimiter<EnvironmentID>
    private let state = Mutex(State())
    /// The clock limits are counted by (monotonic nanoseconds), for other limiters of the process.
    public let now: @Sendable () -> UInt64
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
        return limiter.take(environmentID, policy: policy)
    }

    /// The environment's limit as this process knows it.
    public func setting(for environmentID: EnvironmentID) -> RateLimitSetting {
        state.withLock { $0.settings[environmentID] } ?? .default
    }

    /// Sets an environment's limit in the store and, before returning, here.
    public func set(_ setting: RateLimitSetting, for environmentID: EnvironmentID, audit: AuditContext) async throws {
        try await store.setRateLimit(setting, for: environmentID, audit: audit)
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
        let start = now()
        let (outgoing, batch, seen) = state.withLock { state in
            if !taken.isEmpty { state.unsent.append((start, taken)) }
            // After a stall, counts older than the window would be charged elsewhere as if new.
            state.unsent.removeAll { start &- $0.at >= Self.window }
            state.batch += 1
            var outgoing: [EnvironmentID: Int] = [:]
            for chunk in state.unsent { outgoing.merge(chunk.counts, uniquingKeysWith: +) }
            return (outgoing, state.batch, state.seen.mapValues(\.batch))
        }
        let rows = outgoing.map { environmentID, count in
            SharedRateLimitCount(instance: instance, batch: batch, environmentID: environmentID, count: count)
        }
        let (others, otherInstances) = try await exchange.exchangeRateLimitCounts(rows, instance: instance, after: seen)
        let now = now()
        let (charged, expected) = state.withLock { state in
            state.unsent = []
            // The store returned only batches newer than `seen`; a concurrent exchange cannot
            // exist (the maintenance loop runs one at a time), but skip what is not newer anyway.
            var charged: [EnvironmentID: Int] = [:]
            var expected: [EnvironmentID: Int] = [:]
            var newest = state.seen
            for row in others where row.batch > state.seen[row.instance]?.batch ?? 0 {
                charged[row.environmentID, default: 0] += row.count
                // What a batch held is expected again before the next, scaled down when it covers
                // a long gap (a stall): 4 s of counts are not 4 s' worth in the next 50 ms.
                let span = state.seen[row.instance].map { row.writtenAt - $0.writtenAt } ?? 0
                let expectation = span > Self.normalBatchSpan ? row.count * Int(Self.normalBatchSpan) / Int(span) : row.count
                expected[row.environmentID, default: 0] += expectation
                if row.batch > newest[row.instance]?.batch ?? 0 {
                    newest[row.instance] = (row.batch, row.writtenAt, now)
                }
            }
            // An instance silent this long has no row left inside the window: forget it, so the
            // map holds only live instances however many have come and gone.
            state.seen = newest.filter { now &- $0.value.at < Self.forgetInstanceAfter }
            return (charged, expected)
        }
        limiter.absorb(charged, expecting: expected, instances: otherInstances + 1) { environmentID in
            setting(for: environmentID).policy(for: environmentID.environment)
        }
    }

    /// The sliding window's length: what is older counts for nothing.
    static let window: UInt64 = 1_000_000_000
    /// The most time one batch of another instance covers in a steady flow (milliseconds): four
    /// exchange intervals of 50 ms, for exchanges that come late under load.
    static let normalBatchSpan: Int64 = 200

    /// Other instances remembered while they write, at most this long after their last row.
    static let forgetInstanceAfter: UInt64 = 10_000_000_000

    /// Other instances remembered by the last exchange.
    package var rememberedInstances: Int { state.withLock { $0.seen.count } }

    /// Forgets keys whose windows are empty.
    public func prune() {
        limiter.prune()
    }
}
