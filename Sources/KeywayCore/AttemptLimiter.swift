public import Foundation
import Synchronization

/// Attempts counted where every instance of a deployment sees them: a table
/// in the shared database (PostgreSQL). Keys arrive as SHA-256 digests, so the
/// table holds no email or address in clear.
public protocol AttemptLedger: Sendable {
    /// Atomically for `key`, across every instance: drops its attempts before
    /// `cutoff`, asks `decide` about the remaining ones and, when it allows,
    /// records one more at `date`. Two reservations of one key never decide on
    /// the same state.
    /// - Returns: The refusal `decide` returned, or `nil` when the attempt was recorded.
    func reserveAttempt(
        key: KeyDigest,
        at date: Date,
        forgettingBefore cutoff: Date,
        decide: @Sendable ([Date]) -> AttemptThrottle.Refusal?
    ) async throws -> AttemptThrottle.Refusal?
    /// Removes one attempt of `key` recorded at `date`: it was not made after all.
    func releaseAttempt(key: KeyDigest, at date: Date) async throws
    /// Forgets every attempt of `key`, after a success.
    func clearAttempts(key: KeyDigest) async throws
    /// Deletes the keys whose latest attempt is older than `date`.
    func deleteAttempts(before date: Date) async throws
}

/// A throttle for one kind of key (email, client address, session): in this
/// process's memory, and, when a ``AttemptLedger`` is given, across every
/// instance that shares it.
///
/// The memory throttle is asked first. It counts only this instance's attempts,
/// so when it refuses the shared count would refuse too, and a flood is turned
/// away without a query; only the attempts it lets through reach the ledger,
/// which decides under the key's row lock.
public final class AttemptLimiter: Sendable {
    public let local: AttemptThrottle
    public let ledger: (any AttemptLedger)?
    private let now: @Sendable () -> Date
    private let lastPruned: Mutex<Date?>

    /// - Parameters:
    ///   - policy: The rule for this kind of key.
    ///   - capacity: Most keys this instance remembers.
    ///   - ledger: Where instances share their counts; `nil` for one instance (SQLite).
    ///   - now: The clock; tests move one by hand.
    public init(
        policy: AttemptThrottle.Policy,
        capacity: Int = 100_000,
        ledger: (any AttemptLedger)?,
        now: @escaping @Sendable () -> Date = Date.init
    ) {
        self.local = AttemptThrottle(policy: policy, capacity: capacity)
        self.ledger = ledger
        self.now = now
        self.lastPruned = Mutex(nil)
    }

    public var policy: AttemptThrottle.Policy { local.policy }

    /// Counts an attempt against `key`, unless it must wait.
    /// - Throws: ``AttemptThrottle/Refusal`` when it must wait (nothing is counted then),
    ///   or the ledger's error.
    public func reserve(_ key: String) async throws -> AttemptThrottle.Reservation {
        let date = now()
        let reservation = try local.reserve(key, at: date)
        guard let ledger else { return reservation }
        let policy = self.policy
        let refusal: AttemptThrottle.Refusal?
        do {
            refusal = try await ledger.reserveAttempt(
                key: KeyDigest(hashing: key.utf8),
                at: date,
                forgettingBefore: date.addingTimeInterval(-policy.retention.seconds)
            ) { failures in
                policy.refusal(failures: failures, at: date)
            }
        } catch {
            local.release(reservation)
            throw error
        }
        if let refusal {
            local.release(reservation)
            local.block(key, until: date.addingTimeInterval(Double(refusal.retryAfterSeconds)), lockedOut: refusal.lockedOut)
            throw refusal
        }
        await pruneIfDue(ledger, at: date)
        return reservation
    }

    /// Uncounts an attempt that was not made after all (another limiter refused it, storage failed).
    public func release(_ reservation: AttemptThrottle.Reservation) async throws {
        local.release(reservation)
        try await ledger?.releaseAttempt(key: KeyDigest(hashing: reservation.key.utf8), at: reservation.date)
    }

    /// Forgets `key`'s failures, after a success.
    public func reset(_ key: String) async throws {
        local.reset(key)
        try await ledger?.clearAttempts(key: KeyDigest(hashing: key.utf8))
    }

    /// Keys whose attempts are all older than the window and lockout decide
    /// nothing any more; once a minute, per instance, the shared table loses them.
    /// (Every policy keeps failures for 30 minutes, its window and its lockout, so one
    /// limiter's cutoff suits the others' keys.)
    private func pruneIfDue(_ ledger: any AttemptLedger, at date: Date) async {
        let due = lastPruned.withLock { last in
            guard last.map({ date.timeIntervalSince($0) >= 60 }) ?? true else { return false }
            last = date
            return true
        }
        guard due else { return }
        // Best effort: a failed prune leaves rows that decide nothing, and the next minute tries again.
        try? await ledger.deleteAttempts(before: date.addingTimeInterval(-policy.retention.seconds))
    }
}
