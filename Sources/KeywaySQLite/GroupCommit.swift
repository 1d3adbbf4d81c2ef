import Synchronization

/// Commits concurrent writes together: while one transaction is being written and
/// synced, the writes that arrive wait, then share the next transaction.
///
/// Why: every commit waits for the log to reach the disk (`synchronous=FULL`, about a
/// millisecond here), and SQLite has one writer, so a transaction per request capped
/// `POST /users` at about 850 requests per second on the benchmark machine. Here the
/// number of syncs follows the disk's speed rather than the request rate. Each write is
/// answered only once the transaction that holds it has committed, so nothing is
/// acknowledged before it is durable; if that transaction fails, every write in it
/// fails with its error and none of them was made.
final class GroupCommit<Work: Sendable, Outcome: Sendable>: Sendable {
    /// Runs `works` in one transaction and returns one outcome per work, in order.
    typealias Commit = @Sendable ([Work]) async throws -> [Outcome]
    private typealias Waiter = CheckedContinuation<Outcome, any Error>

    private struct State {
        var waiting: [(work: Work, waiter: Waiter)] = []
        var isCommitting = false
    }

    private let state = Mutex(State())
    private let commit: Commit
    private let maximumBatch: Int

    /// - Parameters:
    ///   - maximumBatch: Most writes one transaction holds.
    ///   - commit: Runs writes in one transaction.
    init(maximumBatch: Int, commit: @escaping Commit) {
        precondition(maximumBatch > 0)
        self.maximumBatch = maximumBatch
        self.commit = commit
    }

    /// Runs `work` in the next transaction and returns its outcome once that transaction has committed.
    /// - Throws: The error that made the transaction fail.
    func submit(_ work: Work) async throws -> Outcome {
        try await withCheckedThrowingContinuation { (waiter: Waiter) in
            let startsCommitting = state.withLock { state in
                state.waiting.append((work, waiter))
                guard !state.isCommitting else { return false }
                state.isCommitting = true
                return true
            }
            if startsCommitting {
                // Not run by this caller: its own answer would wait for every batch after it.
                Task { await self.commitUntilNothingWaits() }
            }
        }
    }

    private func commitUntilNothingWaits() async {
        while let batch = nextBatch() {
            do {
                let outcomes = try await commit(batch.map(\.work))
                precondition(outcomes.count == batch.count, "a commit returns one outcome per work")
                for (entry, outcome) in zip(batch, outcomes) {
                    entry.waiter.resume(returning: outcome)
                }
            } catch {
                for entry in batch {
                    entry.waiter.resume(throwing: error)
                }
            }
        }
    }

    /// Takes up to `maximumBatch` waiting writes, oldest first, or ends the committing when none wait.
    private func nextBatch() -> [(work: Work, waiter: Waiter)]? {
        state.withLock { state in
            guard !state.waiting.isEmpty else {
                state.isCommitting = false
                return nil
            }
            let count = min(maximumBatch, state.waiting.count)
            defer { state.waiting.removeFirst(count) }
            return Array(state.waiting.prefix(count))
        }
    }
}
