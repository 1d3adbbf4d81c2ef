import Synchronization
import Testing

@testable import KeywaySQLite

/// Writes that arrive together share a transaction; each is answered with its own outcome.
@Suite struct GroupCommitTests {
    final class Recorder: Sendable {
        let batches = Mutex<[[Int]]>([])
    }

    @Test func concurrentWritesShareTransactionsAndGetTheirOwnOutcomes() async throws {
        let recorder = Recorder()
        let commits = GroupCommit<Int, Int>(maximumBatch: 16) { works in
            recorder.batches.withLock { $0.append(works) }
            try await Task.sleep(for: .milliseconds(5))  // as a sync to disk takes time
            return works.map { $0 * 10 }
        }
        let outcomes = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for value in 0..<100 {
                group.addTask { (value, try await commits.submit(value)) }
            }
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        #expect(outcomes.count == 100)
        #expect(outcomes.allSatisfy { $0.value == $0.key * 10 }, "every write gets its own outcome")
        let batches = recorder.batches.withLock { $0 }
        #expect(batches.flatMap { $0 }.sorted() == Array(0..<100), "every write is committed exactly once")
        #expect(batches.count < 100, "writes that waited shared a transaction")
        #expect(batches.allSatisfy { $0.count <= 16 })
    }

    @Test func aFailedTransactionFailsOnlyTheWritesInIt() async throws {
        struct DiskFull: Error {}
        let commits = GroupCommit<Int, Int>(maximumBatch: 1) { works in
            if works == [13] { throw DiskFull() }
            return works
        }
        await #expect(throws: DiskFull.self) { try await commits.submit(13) }
        #expect(try await commits.submit(14) == 14, "the next transaction goes ahead")
    }
}
