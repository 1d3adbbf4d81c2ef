import Foundation
import GRDB
public import KeywayCore

/// The browser origins an environment allows (CORS).
extension KeywaySQLiteStore {
    public func allowedOrigins(for environmentID: EnvironmentID) async throws -> [String] {
        try await database.read { db in
            try String.fetchAll(
                db,
                sql: "SELECT origin FROM environment_origins WHERE account_id = ? AND environment = ? ORDER BY position",
                arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue]
            )
        }
    }

    public func setAllowedOrigins(_ origins: [BrowserOrigin], for environmentID: EnvironmentID, audit: AuditContext) async throws {
        let scope: StatementArguments = [environmentID.accountID.rawValue, environmentID.environment.rawValue]
        try await database.write { db in
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM environments WHERE account_id = ? AND name = ?", arguments: scope) != nil
            else { throw KeywayError.accountNotFound(environmentID.accountID) }
            try db.execute(sql: "DELETE FROM environment_origins WHERE account_id = ? AND environment = ?", arguments: scope)
            for (position, origin) in origins.enumerated() {
                try db.execute(
                    sql: "INSERT OR IGNORE INTO environment_origins (account_id, environment, position, origin) VALUES (?, ?, ?, ?)",
                    arguments: scope + [position, origin.serialized]
                )
            }
            try Self.insert([.originsChanged(origins, for: environmentID, at: Date(), context: audit)], db: db)
        }
    }

    public func isOriginAllowedAnywhere(_ origin: String) async throws -> Bool {
        guard !origin.isEmpty else { return false }
        // One probe of `environment_origins_by_origin`, however many environments there are.
        return try await database.read { db in
            try Bool.fetchOne(db, sql: "SELECT 1 FROM environment_origins WHERE origin = ? LIMIT 1", arguments: [origin]) != nil
        }
    }
}
