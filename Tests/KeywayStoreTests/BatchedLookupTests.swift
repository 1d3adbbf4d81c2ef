import KeywayCore
import Synchronization
import Testing

@testable import KeywayPostgres

@Suite struct BatchedLookupTests {
    /// Records every fetch; answers `key * 10` for even keys and nothing for odd ones.
    final class Recorder: Sendable {
        let fetches = Mutex<[[Int]]>([])
        let delay: Duration

        init(delay: Duration) {
            self.delay = delay
        }

        func fetch(_ keys: [Int]) async throws -> [Int: Int] {
            fetches.withLock { $0.append(keys) }
            try await Task.sleep(for: delay)
            return Dictionary(uniqueKeysWithValues: keys.filter { $0 % 2 == 0 }.map { ($0, $0 * 10) })
        }
    }

    @Test func concurrentLookupsShareQueriesAndGetTheirOwnAnswers() async throws {
        let recorder = Recorder(delay: .milliseconds(50))
        let lookup = BatchedLookup<Int, Int>(maximumBatch: 64, timeout: .seconds(5)) { try await recorder.fetch($0) }
        let answers = try await withThrowingTaskGroup(of: (Int, Int?).self) { group in
            for key in 0..<300 {
                group.addTask { (key, try await lookup.value(for: key)) }
            }
            return try await group.reduce(into: [Int: Int?]()) { $0.updateValue($1.1, forKey: $1.0) }
        }
        #expect(answers.count == 300)
        for key in 0..<300 {
            #expect(answers[key] == (key % 2 == 0 ? key * 10 : nil))
        }
        let fetches = recorder.fetches.withLock { $0 }
        // One query per lookup would be 300; batching needs about 300 / 64.
        #expect(fetches.count < 30)
        #expect(fetches.allSatisfy { $0.count <= 64 })
        #expect(fetches.flatMap { $0 }.sorted() == Array(0..<300))
    }

    @Test func theSameKeyTwiceIsAskedForOnce() async throws {
        let recorder = Recorder(delay: .milliseconds(20))
        let lookup = BatchedLookup<Int, Int>(maximumBatch: 10, timeout: .seconds(5)) { try await recorder.fetch($0) }
        // The first lookup starts a query; the next two wait for the following one together.
        async let first = lookup.value(for: 2)
        try await Task.sleep(for: .milliseconds(5))
        async let second = lookup.value(for: 4)
        async let third = lookup.value(for: 4)
        #expect(try await [first, second, third] == [20, 40, 40])
        let fetches = recorder.fetches.withLock { $0 }
        #expect(fetches.flatMap { $0 }.filter { $0 == 4 }.count == 1)
    }

    struct Unavailable: Error {}

    @Test func aFailedQueryFailsItsWaitersAndTheNextLookupTriesAgain() async throws {
        let failNext = Mutex(true)
        let lookup = BatchedLookup<Int, Int>(maximumBatch: 10, timeout: .seconds(5)) { keys in
            if failNext.withLock({ fail in
                defer { fail = false }
                return fail
            }) {
                throw Unavailable()
            }
            return Dictionary(uniqueKeysWithValues: keys.map { ($0, $0) })
        }
        await #expect(throws: Unavailable.self) { try await lookup.value(for: 1) }
        #expect(try await lookup.value(for: 1) == 1)
    }

    @Test(.timeLimit(.minutes(1))) func aDatabaseThatStopsAnsweringFailsLookupsWith503InsteadOfHoldingThem() async throws {
        // The first query never answers and ignores cancellation, as a frozen server's does.
        let silent = Mutex(true)
        let lookup = BatchedLookup<Int, Int>(maximumBatch: 10, timeout: .milliseconds(200)) { keys in
            if silent.withLock({ $0 }) {
                await withCheckedContinuation { (_: CheckedContinuation<Void, Never>) in }
            }
            return Dictionary(uniqueKeysWithValues: keys.map { ($0, $0) })
        }
        let started = ContinuousClock.now
        let error = await #expect(throws: KeywayError.self) { try await lookup.value(for: 1) }
        #expect(error?.code == .serviceUnavailable)
        #expect(ContinuousClock.now - started < .seconds(3))
        // The stuck query does not hold the lookups after it once the database answers again.
        silent.withLock { $0 = false }
        #expect(try await lookup.value(for: 2) == 2)
    }
}
