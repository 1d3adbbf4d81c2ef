import Foundation
import GRDB
public import KeywayCore

/// Each environment's request limit (`environments.requests_per_second`).
extension KeywaySQLiteStore {
    public func rateLimits() async throws -> [EnvironmentID: RateLimitSetting] {
        try await database.read { db in
            var limits: [EnvironmentID: RateLimitSetting] = [:]
            let rows = try Row.fetchCursor(
                db,
                sql: "SELECT account_id, name, requests_per_second FROM environments WHERE requests_per_second IS NOT NULL"
            )
            while let row = try rows.next() {
                let environmentID = EnvironmentID(
                    accountID: AccountID(rawValue: row["account_id"]),
                    environment: try Environment(stored: row["name"])
                )
                limits[environmentID] = try RateLimitSetting(storedValue: row["requests_per_second"])
            }
            return limits
        }
    }

    public func setRateLimit(_ setting: RateLimitSetting, for environmentID: EnvironmentID, audit: AuditContext) async throws {
        try await database.write { db in
            try db.execute(
                sql: "UPDATE environments SET requests_per_second = ? WHERE account_id = ? AND name = ?",
                arguments: [setting.storedValue, environmentID.accountID.rawValue, environmentID.environment.rawValue]
            )
            guard db.changesCount == 1 else { throw KeywayError.accountNotFound(environmentID.accountID) }
            try db.execute(sql: "UPDATE rate_limit_version SET version = version + 1")
            try Self.insert([.rateLimitChanged(setting, for: environmentID, at: Date(), context: audit)], db: db)
        }
    }

    public func rateLimitsVersion() async throws -> Int64 {
        try await database.read { db in
            try Int64.fetchOne(db, sql: "SELECT version FROM rate_limit_version") ?? 0
        }
    }
}
