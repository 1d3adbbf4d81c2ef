public import Foundation
public import KeywayCore
import PostgresNIO

/// Sign-in attempts counted for the whole deployment: one row per key (a
/// SHA-256 digest), holding the times of its recent attempts.
extension KeywayPostgresStore: AttemptLedger {
    public func reserveAttempt(
        key: KeyDigest,
        at date: Date,
        forgettingBefore cutoff: Date,
        decide: @Sendable ([Date]) -> AttemptThrottle.Refusal?
    ) async throws -> AttemptThrottle.Refusal? {
        let digest = Data(key.bytes)
        let now = date.keywayMilliseconds
        return try await transaction { connection in
            // Under REPEATABLE READ (a database's default may be) the upsert of a row another
            // reservation just updated fails with 40001; READ COMMITTED waits for it and reads its result.
            try await connection.query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", logger: logger)
            // The no-op update locks the key's row, new or not, until commit: reservations
            // of one key from every instance decide one after another, each on the last one's result.
            let rows = try await connection.query(
                """
                INSERT INTO attempt_throttle AS t (key, attempts, touched_at) VALUES (\(digest), '{}', \(now))
                ON CONFLICT (key) DO UPDATE SET key = t.key
                RETURNING attempts
                """,
                logger: logger
            )
            var attempts: [Int64] = []
            for try await stored in rows.decode([Int64].self) { attempts = stored }
            let recent = attempts.filter { $0 >= cutoff.keywayMilliseconds }
            if let refusal = decide(recent.map { Date(keywayMilliseconds: $0) }) { return refusal }
            try await connection.query(
                "UPDATE attempt_throttle SET attempts = \(recent + [now]), touched_at = \(now) WHERE key = \(digest)",
                logger: logger
            )
            return nil
        }
    }

    public func releaseAttempt(key: KeyDigest, at date: Date) async throws {
        // One statement, so atomic: removes the first attempt at that time, if any.
        try await client.query(
            """
            UPDATE attempt_throttle
            SET attempts = attempts[:array_position(attempts, \(date.keywayMilliseconds)) - 1]
                || attempts[array_position(attempts, \(date.keywayMilliseconds)) + 1:]
            WHERE key = \(Data(key.bytes)) AND array_position(attempts, \(date.keywayMilliseconds)) IS NOT NULL
            """,
            logger: logger
        )
    }

    public func clearAttempts(key: KeyDigest) async throws {
        try await client.query("DELETE FROM attempt_throttle WHERE key = \(Data(key.bytes))", logger: logger)
    }

    public func deleteAttempts(before date: Date) async throws {
        try await client.query("DELETE FROM attempt_throttle WHERE touched_at < \(date.keywayMilliseconds)", logger: logger)
    }
}
