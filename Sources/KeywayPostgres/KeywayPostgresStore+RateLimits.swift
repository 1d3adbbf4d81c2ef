import Foundation
public import KeywayCore
import PostgresNIO

/// Each environment's request limit, and the counts instances share to hold it together.
extension KeywayPostgresStore: RateLimitExchange {
    public func rateLimits() async throws -> [EnvironmentID: RateLimitSetting] {
        let rows = try await all(
            "SELECT account_id, name, requests_per_second FROM environments WHERE requests_per_second IS NOT NULL",
            as: (String, String, Int).self
        )
        var limits: [EnvironmentID: RateLimitSetting] = [:]
        for (account, name, value) in rows {
            limits[EnvironmentID(accountID: AccountID(rawValue: account), environment: try Self.environment(name))] =
                try RateLimitSetting(storedValue: value)
        }
        return limits
    }

    public func setRateLimit(_ setting: RateLimitSetting, for environmentID: EnvironmentID, audit: AuditContext) async throws {
        let account = environmentID.accountID.rawValue
        let environment = environmentID.environment.rawValue
        try await transaction { connection in
            let updated = try await connection.query(
                """
                UPDATE environments SET requests_per_second = \(setting.storedValue)
                WHERE account_id = \(account) AND name = \(environment) RETURNING 1
                """,
                logger: logger
            ).decode(Int32.self)
            var found = false
            for try await _ in updated { found = true }
            guard found else { throw KeywayError.accountNotFound(environmentID.accountID) }
            try await connection.query("UPDATE rate_limit_version SET version = version + 1", logger: logger)
            try await Self.insert(
                [.rateLimitChanged(setting, for: environmentID, at: Date(), context: audit)],
                connection: connection,
                logger: logger
            )
        }
    }

    public func rateLimitsVersion() async throws -> Int64 {
        try await first("SELECT version FROM rate_limit_version", as: Int64.self) ?? 0
    }

    public func exchangeRateLimitCounts(
        _ counts: [SharedRateLimitCount],
        instance: String,
        after seen: [String: Int64]
    ) async throws -> (rows: [SharedRateLimitCount], otherInstances: Int) {
        let seenInstances = Array(seen.keys)
        let seenBatches = seenInstances.map { seen[$0] ?? 0 }
        return try await transaction { connection in
            var readAt: Int64 = 0
            for try await now in try await connection.query(Self.databaseClock, logger: logger).decode(Int64.self) { readAt = now }
            if let batch = counts.first?.batch {
                try await connection.query(
                    """
                    INSERT INTO rate_limit_counts (instance, batch, account_id, environment, count, written_at)
                    SELECT \(instance), \(batch), a, e, c, \(readAt)
                    FROM unnest(\(counts.map(\.environmentID.accountID.rawValue))::text[],
                        \(counts.map(\.environmentID.environment.rawValue))::text[], \(counts.map { Int64($0.count) })::bigint[]) AS t(a, e, c)
                    """,
                    logger: logger
                )
            }
            // One round trip: this instance is alive, and how many others are (the count reads the
            // snapshot before the upsert, which it excludes anyway).
            var otherInstances = 0
            let live = try await connection.query(
                """
                WITH alive AS (
                    INSERT INTO rate_limit_instances (instance, seen_at) VALUES (\(instance), \(readAt))
                    ON CONFLICT (instance) DO UPDATE SET seen_at = excluded.seen_at
                )
                SELECT count(*) FROM rate_limit_instances WHERE seen_at >= \(readAt - 1000) AND instance <> \(instance)
                """,
                logger: logger
            ).decode(Int64.self)
            for try await count in live { otherInstances = Int(count) }
            // Only the last second counts in a sliding window, and only batches not counted yet:
            // each row is read once, however often the exchange runs.
            let rows = try await connection.query(
                """
                SELECT c.instance, c.batch, c.account_id, c.environment, c.count, c.written_at
                FROM rate_limit_counts c
                LEFT JOIN unnest(\(seenInstances)::text[], \(seenBatches)::bigint[]) AS seen(instance, batch) ON seen.instance = c.instance
                WHERE c.written_at >= \(readAt - 1000) AND c.instance <> \(instance) AND c.batch > coalesce(seen.batch, 0)
                """,
                logger: logger
            ).decode((String, Int64, String, String, Int64, Int64).self)
            var shared: [SharedRateLimitCount] = []
            for try await (other, batch, account, environment, count, writtenAt) in rows {
                shared.append(
                    SharedRateLimitCount(
                        instance: other,
                        batch: batch,
                        environmentID: EnvironmentID(accountID: AccountID(rawValue: account), environment: try Self.environment(environment)),
                        count: Int(count),
                        writtenAt: writtenAt
                    )
                )
            }
            return (shared, otherInstances)
        }
    }

    public func deleteRateLimitCounts(olderThan milliseconds: Int64) async throws {
        try await client.query(
            "DELETE FROM rate_limit_counts WHERE written_at < (extract(epoch FROM clock_timestamp()) * 1000)::bigint - \(milliseconds)",
            logger: logger
        )
        try await client.query(
            "DELETE FROM rate_limit_instances WHERE seen_at < (extract(epoch FROM clock_timestamp()) * 1000)::bigint - \(milliseconds)",
            logger: logger
        )
    }

    /// The database's clock in milliseconds: the one clock every instance shares.
    private static var databaseClock: PostgresQuery { "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint" }
}
