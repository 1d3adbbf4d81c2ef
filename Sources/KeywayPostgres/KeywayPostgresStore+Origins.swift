import Foundation
public import KeywayCore
import Logging
import PostgresNIO

/// The browser origins an environment allows (CORS).
extension KeywayPostgresStore {
    public func allowedOrigins(for environmentID: EnvironmentID) async throws -> [String] {
        try await all(
            """
            SELECT origin FROM environment_origins
            WHERE account_id = \(environmentID.accountID.rawValue) AND environment = \(environmentID.environment.rawValue)
            ORDER BY position
            """,
            as: String.self
        )
    }

    public func setAllowedOrigins(_ origins: [BrowserOrigin], for environmentID: EnvironmentID, audit: AuditContext) async throws {
        let account = environmentID.accountID.rawValue
        let environment = environmentID.environment.rawValue
        try await transaction { connection in
            // The list a concurrent setting committed is replaced, not a serialization failure
            // (40001) as under a REPEATABLE READ default: READ COMMITTED, as for key generations.
            try await connection.query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", logger: logger)
            let exists = try await connection.query(
                "SELECT 1 FROM environments WHERE account_id = \(account) AND name = \(environment) FOR UPDATE",
                logger: logger
            ).decode(Int32.self)
            var found = false
            for try await _ in exists { found = true }
            guard found else { throw KeywayError.accountNotFound(environmentID.accountID) }
            try await connection.query(
                "DELETE FROM environment_origins WHERE account_id = \(account) AND environment = \(environment)",
                logger: logger
            )
            for (position, origin) in origins.enumerated() {
                try await connection.query(
                    """
                    INSERT INTO environment_origins (account_id, environment, position, origin)
                    VALUES (\(account), \(environment), \(position), \(origin.serialized)) ON CONFLICT DO NOTHING
                    """,
                    logger: logger
                )
            }
            try await Self.insert([.originsChanged(origins, for: environmentID, at: Date(), context: audit)], connection: connection, logger: logger)
        }
    }

    public func isOriginAllowedAnywhere(_ origin: String) async throws -> Bool {
        guard !origin.isEmpty else { return false }
        // One probe of `environment_origins_by_origin`, however many environments there are.
        return try await first(OriginAllowed(origin: origin)) != nil
    }
}

/// Whether any environment allows an origin: a CORS preflight, which carries no token.
private struct OriginAllowed: PostgresPreparedStatement {
    static let name = "keyway_origin_allowed"
    static let sql = "SELECT 1 FROM environment_origins WHERE origin = $1 LIMIT 1"
    typealias Row = Int32

    let origin: String

    func makeBindings() -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(origin)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Int32 {
        try row.decode(Int32.self)
    }
}
