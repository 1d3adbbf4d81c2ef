public import Foundation
import Synchronization

/// Slows down, then refuses for a while, repeated failures for one key
/// (an email address, a client address).
///
/// Consulted *before* any expensive check such as a password hash, so that a
/// flood of attempts costs a dictionary lookup each, not a bcrypt.
/// Memory is bounded: when more than ``maximumTracked`` keys are tracked, the
/// ones with no failure inside the window are forgotten.
public final class AttemptThrottle: Sendable {
    /// How the throttle behaves.
    public struct Policy: Sendable {
        /// Failures allowed inside ``window`` before any waiting is imposed.
        public var freeFailures: Int
        /// After this many failures inside ``window``, the key is refused for ``lockout``.
        public var lockoutAfter: Int
        /// How long failures are remembered.
        public var window: Duration
        /// How long a key is refused once it reaches ``lockoutAfter``.
        public var lockout: Duration

        public init(freeFailures: Int, lockoutAfter: Int, window: Duration, lockout: Duration) {
            self.freeFailures = freeFailures
            self.lockoutAfter = lockoutAfter
            self.window = window
            self.lockout = lockout
        }

        /// Sign-in failures per email address.
        public static let perAccount = Policy(freeFailures: 5, lockoutAfter: 10, window: .seconds(900), lockout: .seconds(900))
        /// Sign-in failures and sign-ups per client address, which may be shared by many people.
        public static let perClient = Policy(freeFailures: 20, lockoutAfter: 40, window: .seconds(900), lockout: .seconds(900))
    }

    /// A refusal: how long until the key may try again.
    public struct Refusal: Error, Sendable, Equatable {
        public let retryAfterSeconds: Int
        /// Whether the key is locked out, rather than only slowed down.
        public let lockedOut: Bool
    }

    private struct Record {
        var failures: [Date] = []
    }

    public let policy: Policy
    public let maximumTracked: Int
    private let records = Mutex<[String: Record]>([:])

    /// - Parameters:
    ///   - policy: Free failures, lockout threshold and durations.
    ///   - maximumTracked: How many keys to remember before pruning old ones.
    public init(policy: Policy, maximumTracked: Int = 100_000) {
        self.policy = policy
        self.maximumTracked = maximumTracked
    }

    /// Throws if `key` must wait before trying again.
    public func check(_ key: String, at now: Date = Date()) throws(Refusal) {
        let failures = records.withLock { records in
            records[key]?.failures.filter { now.timeIntervalSince($0) < policy.window.seconds } ?? []
        }
        guard failures.count >= policy.freeFailures, let last = failures.last else { return }
        let wait: Double
        if failures.count >= policy.lockoutAfter {
            wait = policy.lockout.seconds
        } else {
            // 1 s after the first failure past the free ones, then 2, 4, 8…
            wait = min(pow(2, Double(failures.count - policy.freeFailures)), policy.lockout.seconds)
        }
        let remaining = wait - now.timeIntervalSince(last)
        if remaining > 0 {
            throw Refusal(retryAfterSeconds: Int(remaining.rounded(.up)), lockedOut: failures.count >= policy.lockoutAfter)
        }
    }

    /// Counts a failure (or, for sign-ups, an attempt) against `key`.
    public func recordFailure(_ key: String, at now: Date = Date()) {
        records.withLock { records in
            if records.count >= maximumTracked {
                records = records.filter { _, record in
                    record.failures.contains { now.timeIntervalSince($0) < policy.window.seconds }
                }
            }
            var record = records[key] ?? Record()
            record.failures.removeAll { now.timeIntervalSince($0) >= policy.window.seconds }
            record.failures.append(now)
            records[key] = record
        }
    }

    /// How many keys are remembered now.
    var trackedCount: Int { records.withLock { $0.count } }

    /// Forgets `key`'s failures, after a success.
    public func reset(_ key: String) {
        _ = records.withLock { $0.removeValue(forKey: key) }
    }
}

extension Duration {
    fileprivate var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
