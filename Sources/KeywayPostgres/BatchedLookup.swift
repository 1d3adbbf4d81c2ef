import Synchronization

/// Answers concurrent lookups with one query at a time, each asking for every
/// key that is waiting.
///
/// Why: requests with invented keys (a scanner, a client with a mangled key)
/// miss every cache, and on PostgreSQL a query per request costs several times
/// the request itself. Here a lookup that arrives while a query runs waits for
/// the next one, which fetches everything waiting at once, so the number of
/// queries follows the database's round-trip time rather than the request rate,
/// and no answer is staler than the query that gave it.
final class BatchedLookup<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    typealias Fetch = @Sendable ([Key]) async throws -> [Key: Value]
    private typealias Waiter = CheckedContinuation<Value?, any Error>

    private struct State {
        var waiting: [Key: [Waiter]] = [:]
        var isFetching = false
    }

    private let state = Mutex(State())
    private let fetch: Fetch
    private let maximumBatch: Int

    /// - Parameters:
    ///   - maximumBatch: Most keys one query asks for.
    ///   - fetch: Returns the values of those keys that exist.
    init(maximumBatch: Int, fetch: @escaping Fetch) {
        precondition(maximumBatch > 0)
        self.maximumBatch = maximumBatch
        self.fetch = fetch
    }

    /// The value for `key`, or `nil` when it has none.
    /// - Throws: The error of the query that included `key`.
    func value(for key: Key) async throws -> Value? {
        try await withCheckedThrowingContinuation { (waiter: Waiter) in
            let startsFetching = state.withLock { state in
                state.waiting[key, default: []].append(waiter)
                guard !state.isFetching else { return false }
                state.isFetching = true
                return true
            }
            if startsFetching {
                // Not run by this caller: its own answer would wait for every batch after it.
                Task { await self.fetchUntilNothingWaits() }
            }
        }
    }

    private func fetchUntilNothingWaits() async {
        while let batch = nextBatch() {
            let result: Result<[Key: Value], any Error>
            do {
                result = .success(try await fetch(Array(batch.keys)))
            } catch {
                result = .failure(error)
            }
            for (key, waiters) in batch {
                let answer = result.map { $0[key] }
                for waiter in waiters {
                    waiter.resume(with: answer)
                }
            }
        }
    }

    /// Takes up to `maximumBatch` waiting keys, or ends the fetching when none wait.
    private func nextBatch() -> [Key: [Waiter]]? {
        state.withLock { state in
            guard !state.waiting.isEmpty else {
                state.isFetching = false
                return nil
            }
            guard state.waiting.count > maximumBatch else {
                defer { state.waiting = [:] }
                return state.waiting
            }
            var batch: [Key: [Waiter]] = [:]
            for key in Array(state.waiting.keys.prefix(maximumBatch)) {
                batch[key] = state.waiting.removeValue(forKey: key)
            }
            return batch
        }
    }
}
