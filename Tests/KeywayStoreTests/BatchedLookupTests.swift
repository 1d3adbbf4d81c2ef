import KeywayCore
import Synchronization
import Testing

@testable import KeywayPostgres

@Suite struct BatchedLookupTests {
    /// Records every fetch and holds it until the test opens the gate; answers `key * 10`
    /// for even keys and nothing for odd ones.
    final class Recorder: Sendable {
        let fetches = Mutex<[[Int]]>([])
        private let gate = Mutex<(isOpen: Bool, held: [CheckedContinuation<Void, Never>])>((false, []))

        func fetch(_ keys: [Int]) async throws -> [Int: Int] {
            fetches.withLock { $0.append(keys) }
            await withCheckedContinuation { continuation in
                let isOpen = gate.withLock { gate in
                    if !gate.isOpen { gate.held.append(continuation) }
                    return gate.isOpen
                }
                if isOpen { continuation.resume() }
            }
            return Dictionary(uniqueKeysWithValues: keys.filter { $0 % 2 == 0 }.map { ($0, $0 * 10) })
        }

        var fetchCount: Int { fetches.withLock { $0.count } }

        /// Lets every held fetch, and every later one, answer.
        func open() {
            let held = gate.withLock { gate in
                gate.isOpen = true
                defer { gate.held = [] }
                return gate.held
            }
            for fetch in held { fetch.resume() }
        }
    }

    /// Waits for `condition`; the deadline only keeps a broken build from hanging the suite.
    static func waitUntil(sourceLocation: SourceLocation = #_sourceLocation, _ condition: () -> Bool) async throws {
        let end = ContinuousClock.now + .seconds(30)
        while !condition() {
            guard ContinuousClock.now < end else {
                Issue.record("the condition did not hold within 30 s", sourceLocation: sourceLocation)
                return
            }
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    @Test func concurrentLookupsShareQueriesAndGetTheirOwnAnswers() async throws {
        let recorder = Recorder()
        // The timeout is far away: the first query is held on purpose until every lookup waits.
        let lookup = BatchedLookup<Int, Int>(maximumBatch: 64, timeout: .seconds(600)) { try await recorder.fetch($0) }
        let answers = try await withThrowingTaskGroup(of: (Int, Int?).self) { group in
            // One lookup's query is in flight, then the 299 others arrive and wait behind it.
            group.addTask { (0, try await lookup.value(for: 0)) }
            try await Self.waitUntil { recorder.fetchCount == 1 }
            for key in 1..<300 {
                group.addTask { (key, try await lookup.value(for: key)) }
            }
            try await Self.waitUntil { lookup.waitingLookups == 299 }
            recorder.open()
            return try await group.reduce(into: [Int: Int?]()) { $0.updateValue($1.1, forKey: $1.0) }
        }
        #expect(answers.count == 300)
        for key in 0..<300 {
            #expect(answers[key] == (key % 2 == 0 ? key * 10 : nil))
        }
        let fetches = recorder.fetches.withLock { $0 }
        // One query per lookup would be 300; the first, then 299 in batches of at most 64.
        #expect(fetches.count == 6)
        #expect(fetches.allSatisfy { $0.count <= 64 })
        #expect(fetches.flatMap { $0 }.sorted() == Array(0..<300))
    }

    @Test func theSameKeyTwiceIsAskedForOnce() async throws {
        let recorder = Recorder()
        let lookup = BatchedLookup<Int, Int>(maximumBatch: 10, timeout: .seconds(600)) { try await recorder.fetch($0) }
        // The first lookup starts a query; the next two wait for the following one together.
        async let first = lookup.value(for: 2)
        try await Self.waitUntil { recorder.fetchCount == 1 }
        async let second = lookup.value(for: 4)
        async let third = lookup.value(for: 4)
        try await Self.waitUntil { lookup.waitingLookups == 2 }
        recorder.open()
        #expect(try await [first, second, third] == [20, 40, 40])
        #expect(recorder.fetches.withLock { $0 } == [[2], [4]])
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
