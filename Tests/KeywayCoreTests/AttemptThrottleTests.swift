import Foundation
import Testing

@testable import KeywayCore

@Suite struct AttemptThrottleTests {
    let policy = AttemptThrottle.Policy(freeFailures: 3, lockoutAfter: 6, window: .seconds(600), lockout: .seconds(300))
    let start = Date(timeIntervalSince1970: 1_000_000)

    @Test func freeFailuresAreNotSlowedDown() throws {
        let throttle = AttemptThrottle(policy: policy)
        for second in 0..<3 {
            _ = try throttle.reserve("a", at: start.addingTimeInterval(Double(second)))
        }
        #expect(throws: AttemptThrottle.Refusal(retryAfterSeconds: 1, lockedOut: false)) {
            try throttle.reserve("a", at: start.addingTimeInterval(2))
        }
        _ = try throttle.reserve("b", at: start)
    }

    @Test func waitsDoubleThenLockOut() throws {
        let throttle = AttemptThrottle(policy: policy)
        var now = start
        for _ in 0..<3 { _ = try throttle.reserve("a", at: now) }
        for expectedWait in [1, 2, 4] {
            #expect(throws: AttemptThrottle.Refusal(retryAfterSeconds: expectedWait, lockedOut: false)) { try throttle.reserve("a", at: now) }
            now = now.addingTimeInterval(Double(expectedWait))
            _ = try throttle.reserve("a", at: now)
        }
        #expect(throws: AttemptThrottle.Refusal(retryAfterSeconds: 300, lockedOut: true)) { try throttle.reserve("a", at: now) }
        #expect(throws: AttemptThrottle.Refusal.self) { try throttle.reserve("a", at: now.addingTimeInterval(299)) }
        _ = try throttle.reserve("a", at: now.addingTimeInterval(301))
    }

    @Test func failuresOutsideTheWindowAreForgotten() throws {
        let throttle = AttemptThrottle(policy: policy)
        for second in 0..<6 { _ = try? throttle.reserve("a", at: start.addingTimeInterval(Double(second * 10))) }
        _ = try throttle.reserve("a", at: start.addingTimeInterval(700))
    }

    @Test func resetForgetsTheKeyAndReleaseUncountsOneAttempt() throws {
        let throttle = AttemptThrottle(policy: policy)
        var reservations: [AttemptThrottle.Reservation] = []
        for _ in 0..<3 { reservations.append(try throttle.reserve("a", at: start)) }
        #expect(throws: AttemptThrottle.Refusal.self) { try throttle.reserve("a", at: start) }
        throttle.release(reservations[0])
        _ = try throttle.reserve("a", at: start)
        throttle.reset("a")
        for _ in 0..<3 { _ = try throttle.reserve("a", at: start) }
    }

    @Test func concurrentReservationsPassOnlyTheFreeFailures() async {
        let throttle = AttemptThrottle(policy: policy)
        let start = self.start
        let passed = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<200 {
                group.addTask { (try? throttle.reserve("a", at: start)) != nil }
            }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(passed == policy.freeFailures)
    }

    @Test func aBlockLearnedElsewhereHoldsUntilItsEnd() throws {
        let throttle = AttemptThrottle(policy: policy)
        throttle.block("a", until: start.addingTimeInterval(30), lockedOut: true)
        #expect(throws: AttemptThrottle.Refusal(retryAfterSeconds: 30, lockedOut: true)) { try throttle.reserve("a", at: start) }
        _ = try throttle.reserve("a", at: start.addingTimeInterval(30))
    }

    @Test func theTableHasAHardCapAndForgetsTheLeastRecentlyUsedKey() throws {
        let throttle = AttemptThrottle(policy: policy, capacity: 10)
        for index in 0..<10 { for _ in 0..<3 { _ = try throttle.reserve("key\(index)", at: start) } }
        // key0 is used again, so key1 is now the least recently used.
        #expect(throws: AttemptThrottle.Refusal.self) { try throttle.reserve("key0", at: start) }
        for index in 0..<1000 { _ = try throttle.reserve("flood\(index)", at: start) }
        #expect(throttle.trackedCount == 10, "a flood of new keys never grows the table past its cap")

        let small = AttemptThrottle(policy: policy, capacity: 3)
        for key in ["a", "b", "c"] { for _ in 0..<3 { _ = try small.reserve(key, at: start) } }
        #expect(throws: AttemptThrottle.Refusal.self) { try small.reserve("a", at: start) }
        _ = try small.reserve("d", at: start)
        #expect(throws: AttemptThrottle.Refusal.self, "a, used last, is kept") { try small.reserve("a", at: start) }
        _ = try small.reserve("b", at: start)  // b, the least recently used, was forgotten
    }
}

@Suite struct LeastRecentlyUsedTests {
    /// Uses `key`, inserting `value` when it is missing.
    func touch(_ table: inout LeastRecentlyUsed<Int>, _ key: String, _ value: Int) {
        let make = { value }
        table.update(key, inserting: make, { _ in })
    }

    @Test func evictsInOrderOfLastUse() {
        var table = LeastRecentlyUsed<Int>(capacity: 3)
        for (index, key) in ["a", "b", "c"].enumerated() { touch(&table, key, index) }
        touch(&table, "a", -1)
        touch(&table, "d", 3)
        #expect(table.count == 3)
        #expect(table.updateIfPresent("b") { $0 } == nil)
        #expect(table.updateIfPresent("a") { $0 } == 0)
        table.remove("c")
        touch(&table, "e", 4)
        touch(&table, "f", 5)
        #expect(table.count == 3)
        #expect(table.updateIfPresent("a") { $0 } == nil, "a was the least recently used once c was removed")
        #expect(table.updateIfPresent("d") { $0 } == 3)
    }
}
