import KeywayCore
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
///
/// A query that has not answered within `timeout` fails its waiters with 503
/// `service_unavailable` and the next batch starts: a database that stops
/// answering must not hold requests, nor every later lookup, for ever.
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
    private let timeout: Duration

    /// - Parameters:
    ///   - maximumBatch: Most keys one query asks for.
    ///   - timeout: How long a query may take before its waiters are answered 503.
    ///     A lookup waits at most twice this: for the query running when it came, then for its own.
    ///   - fetch: Returns the values of those keys that exist.
    init(maximumBatch: Int, timeout: Duration, fetch: @escaping Fetch) {
        precondition(maximumBatch > 0)
        self.maximumBatch = maximumBatch
        self.timeout = timeout
        self.fetch = fetch
    }

    /// How many lookups wait for the next query; tests use it to order lookups.
    var waitingLookups: Int {
        state.withLock { $0.waiting.values.reduce(0) { $0 + $1.count } }
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
            let result = await fetchWithinTimeout(Array(batch.keys))
            for (key, waiters) in batch {
                let answer = result.map { $0[key] }
                for waiter in waiters {
                    waiter.resume(with: answer)
                }
            }
        }
    }

    /// The query's answer, or a 503 at the timeout without waiting for the query to let go:
    /// PostgresNIO does not end a query whose task is cancelled, and a silent server never
    /// answers. The abandoned query ends when its connection does.
    private func fetchWithinTimeout(_ keys: [Key]) async -> Result<[Key: Value], any Error> {
        let fetch = self.fetch
        let timeout = self.timeout
        return await withCheckedContinuation { continuation in
            let answer = AnswerOnce(continuation)
            let deadline = Task {
                try await Task.sleep(for: timeout)
                answer.resume(
                    with: .failure(KeywayError(.serviceUnavailable, "The database did not answer in time; try again shortly."))
                )
            }
            Task {
                let result: Result<[Key: Value], any Error>
                do {
                    result = .success(try await fetch(keys))
                } catch {
                    result = .failure(error)
                }
                deadline.cancel()
                answer.resume(with: result)
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

/// A continuation that the first of several racers resumes; the others are ignored.
private final class AnswerOnce<Value: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<Value, Never>?>

    init(_ continuation: CheckedContinuation<Value, Never>) {
        self.continuation = Mutex(continuation)
    }

    func resume(with value: Value) {
        continuation.withLock { $0.take() }?.resume(returning: value)
    }
}
