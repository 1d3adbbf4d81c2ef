import Foundation
import HTTPTypes
import HummingbirdTesting
import KeywayCore
import Synchronization
import Testing

@testable import KeywayHTTP

/// `/readyz` on SQLite: ready while the file answers, 503 when it does not.
@Suite struct ReadinessTests {
    @Test func readyzIs503WhileAnotherProcessHoldsTheSQLiteFileAndReadyAgainAfter() async throws {
        let server = try await TestServer.make()
        try await server.test { client in
            #expect(try await client.call(.get, "/readyz").status == .ok)
            // Another process holds the WAL's write and recovery locks and leaves the index
            // header's two copies different, as a writer that crashed mid-recovery does:
            // every reader must wait for it.
            let holder = try WALLockHolder(databasePath: server.databasePath)
            defer { holder.release() }
            let started = ContinuousClock.now
            let refused = try await client.call(.get, "/readyz")
            let waited = ContinuousClock.now - started
            #expect(refused.status == .serviceUnavailable)
            #expect(refused.code == "service_unavailable")
            // The documented wait is 2 s (SystemController.readinessTimeout); plus 2 s for a noisy machine.
            #expect(waited < .seconds(4), "answered after \(waited)")
            holder.release()
            #expect(try await client.call(.get, "/readyz").status == .ok)
        }
    }
}

/// Probes that arrive while the database is being asked wait for that check, so a stuck
/// database is not asked again by every unauthenticated probe.
@Suite struct SharedCheckTests {
    @Test func callsWhileACheckRunsShareItAndTheNextCallStartsAnother() async throws {
        let checks = Tally()
        let released = Tally()
        let shared = SharedCheck {
            checks.add()
            while released.count == 0 { try await Task.sleep(for: .milliseconds(5)) }
        }
        let entered = Tally()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    entered.add()
                    try await shared.run()
                }
            }
            while entered.count < 20 { await Task.yield() }
            try await Task.sleep(for: .milliseconds(100))  // ordering only: let the last callers reach run()
            released.add()
            try await group.waitForAll()
        }
        #expect(checks.count == 1, "twenty callers, one check")
        try await shared.run()
        #expect(checks.count == 2, "a call after the run ends starts a new one")
    }

    final class Tally: Sendable {
        private let value = Mutex(0)
        var count: Int { value.withLock { $0 } }
        func add() { value.withLock { $0 += 1 } }
    }
}

/// A process that holds a SQLite file's WAL write and recovery locks until released.
/// (SQLite shares one process's locks between its connections, so it must be another process.)
final class WALLockHolder: Sendable {
    private let process: Process
    private let input: Pipe

    init(databasePath: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "python3", "-c",
            """
            import fcntl, mmap, os, sys
            fd = os.open(sys.argv[1], os.O_RDWR)
            for offset in (120, 122):  # WAL_WRITE_LOCK, WAL_RECOVER_LOCK
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset, 0)
            index = mmap.mmap(fd, 136)
            index[48] ^= 0xFF  # the header's second copy no longer matches the first
            print("held", flush=True)
            sys.stdin.readline()
            index[48] ^= 0xFF
            """,
            databasePath + "-shm",
        ]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        self.process = process
        self.input = input
        let line = output.fileHandleForReading.availableData
        try #require(String(decoding: line, as: UTF8.self).contains("held"), "the lock holder did not start")
    }

    /// Lets go of the locks and waits for the process to end; harmless twice.
    func release() {
        guard process.isRunning else { return }
        try? input.fileHandleForWriting.write(contentsOf: Data("release\n".utf8))
        process.waitUntilExit()
    }
}
