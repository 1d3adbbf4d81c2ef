public import Foundation
import Synchronization

/// Slows down, then refuses for a while, repeated attempts for one key (an
/// email address, a client address, a session) in this process's memory.
///
/// An attempt is *reserved* when it is checked, under one lock: it counts as a
/// failure from that moment, so concurrent attempts cannot all pass the check
/// before any of them is counted. Afterwards it is settled: a failure stays
/// counted, a success ``reset(_:)``s the key, and an attempt that was not made
/// after all (another throttle refused it) is ``release(_:)``d.
///
/// Consulted *before* any expensive check such as a password hash, so that a
/// flood of attempts costs a dictionary lookup each, not a bcrypt. Memory is
/// bounded: at most ``capacity`` keys are tracked, and a new key evicts the
/// least recently used one.
public final class AttemptThrottle: Sendable {
    /// How the throttle behaves.
    public struct Policy: Sendable, Equatable {
        /// Failures allowed inside ``window`` before any waiting is imposed.
        public var freeFailures: Int
        /// After this many failures inside ``window``, the key is refused for ``lockout``.
        public var lockoutAfter: Int
        /// How long failures are remembered.
        public var window: Duration
        /// How long a key is refused once it reaches ``lockoutAfter``.
        public var lockout: Duration

        public init(freeFailures: Int, lockoutAfter: Int, window: Duration, lockout: Duration) {
            precondition(freeFailures >= 1 && lockoutAfter >= freeFailures, "a policy allows at least one attempt")
            self.freeFailures = freeFailures
            self.lockoutAfter = lockoutAfter
            self.window = window
            self.lockout = lockout
        }

        /// Sign-in failures per email address.
        public static let perAccount = Policy(freeFailures: 5, lockoutAfter: 10, window: .seconds(900), lockout: .seconds(900))
        /// Sign-in failures and sign-ups per client address, which may be shared by many people.
        public static let perClient = Policy(freeFailures: 20, lockoutAfter: 40, window: .seconds(900), lockout: .seconds(900))
        /// Wrong passwords re-entered in one signed-in session (before a production key or a password change).
        public static let perSession = Policy(freeFailures: 5, lockoutAfter: 10, window: .seconds(900), lockout: .seconds(900))

        /// Whether one more attempt may be made now, given the failures counted so far.
        /// The one rule, used by this throttle and, under a row lock, by shared ledgers.
        /// - Returns: The refusal, or `nil` when the attempt may go ahead.
        public func refusal(failures: [Date], at now: Date) -> Refusal? {
            guard let last = failures.max() else { return nil }
            // A lockout runs for `lockout` from the failure that reached it: the failures that
            // count are those inside the window before it, not before now, or the lock would
            // lift early as the first of them aged out.
            if failures.count(where: { last.timeIntervalSince($0) < window.seconds }) >= lockoutAfter {
                let remaining = lockout.seconds - now.timeIntervalSince(last)
                if remaining > 0 { return Refusal(retryAfterSeconds: Int(remaining.rounded(.up)), lockedOut: true) }
            }
            let recent = failures.filter { now.timeIntervalSince($0) < window.seconds }
            guard recent.count >= freeFailures, let latest = recent.max() else { return nil }
            // 1 s after the first failure past the free ones, then 2, 4, 8… up to the lockout's length.
            let wait = min(pow(2, Double(recent.count - freeFailures)), lockout.seconds)
            let remaining = wait - now.timeIntervalSince(latest)
            guard remaining > 0 else { return nil }
            return Refusal(retryAfterSeconds: Int(remaining.rounded(.up)), lockedOut: false)
        }

        /// How long a failure matters: through its window, and through a lockout it may end in.
        public var retention: Duration { window + lockout }
    }

    /// A refusal: how long until the key may try again.
    public struct Refusal: Error, Sendable, Equatable {
        public let retryAfterSeconds: Int
        /// Whether the key is locked out, rather than only slowed down.
        public let lockedOut: Bool

        public init(retryAfterSeconds: Int, lockedOut: Bool) {
            self.retryAfterSeconds = retryAfterSeconds
            self.lockedOut = lockedOut
        }
    }

    /// An attempt counted against a key, to settle once its outcome is known.
    public struct Reservation: Sendable, Hashable {
        public let key: String
        /// When it was counted; identifies it among the key's failures.
        public let date: Date
    }

    private struct Record {
        /// Oldest first; never more than the policy's ``Policy/lockoutAfter``.
        var failures: [Date] = []
        /// A refusal learned elsewhere (a shared ledger) holds until then.
        var blocked: (until: Date, lockedOut: Bool)?
    }

    public let policy: Policy
    /// Most keys remembered at once.
    public let capacity: Int
    private let records: Mutex<LeastRecentlyUsed<Record>>

    /// - Parameters:
    ///   - policy: Free failures, lockout threshold and durations.
    ///   - capacity: Most keys remembered; past it the least recently used key is forgotten.
    public init(policy: Policy, capacity: Int = 100_000) {
        self.policy = policy
        self.capacity = capacity
        self.records = Mutex(LeastRecentlyUsed(capacity: capacity))
    }

    /// Counts an attempt against `key`, unless the key must wait.
    /// - Throws: ``Refusal`` when the key must wait; nothing is counted then.
    public func reserve(_ key: String, at now: Date) throws(Refusal) -> Reservation {
        let policy = self.policy
        let result: Result<Reservation, Refusal> = records.withLock { records in
            records.update(key, inserting: Record.init) { record in
                record.failures.removeAll { now.timeIntervalSince($0) >= policy.retention.seconds }
                if let blocked = record.blocked {
                    let remaining = blocked.until.timeIntervalSince(now)
                    if remaining > 0 {
                        return .failure(Refusal(retryAfterSeconds: Int(remaining.rounded(.up)), lockedOut: blocked.lockedOut))
                    }
                    record.blocked = nil
                }
                if let refusal = policy.refusal(failures: record.failures, at: now) { return .failure(refusal) }
                record.failures.append(now)
                // Past the lockout threshold the count no longer changes the answer.
                if record.failures.count > policy.lockoutAfter { record.failures.removeFirst() }
                return .success(Reservation(key: key, date: now))
            }
        }
        return try result.get()
    }

    /// Uncounts a reserved attempt that was not made after all.
    public func release(_ reservation: Reservation) {
        records.withLock { records in
            _ = records.updateIfPresent(reservation.key) { record in
                if let index = record.failures.lastIndex(of: reservation.date) { record.failures.remove(at: index) }
            }
        }
    }

    /// Refuses `key` until `date`, as a shared ledger decided, so the next
    /// attempts here are refused without asking it again.
    public func block(_ key: String, until date: Date, lockedOut: Bool) {
        records.withLock { records in
            records.update(key, inserting: Record.init) { $0.blocked = (date, lockedOut) }
        }
    }

    /// Forgets `key`'s failures, after a success.
    public func reset(_ key: String) {
        records.withLock { $0.remove(key) }
    }

    /// How many keys are remembered now.
    public var trackedCount: Int { records.withLock { $0.count } }
}

extension Duration {
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
