import Foundation
public import KeywayCore
import Logging
import PostgresNIO

/// The keys that sign an environment's user tokens, sealed by the master key.
extension KeywayPostgresStore {
    public func signingKeys(for environmentID: EnvironmentID) async throws -> [SigningKeyRecord] {
        try await all(
            """
            SELECT \(unescaped: Self.signingColumns) FROM signing_keys
            WHERE account_id = \(environmentID.accountID.rawValue) AND environment = \(environmentID.environment.rawValue)
            ORDER BY created_at DESC, id DESC
            """,
            as: SigningRow.self
        ).map(Self.signingKey)
    }

    public func signingKey(id: String) async throws -> SigningKeyRecord? {
        try await first("SELECT \(unescaped: Self.signingColumns) FROM signing_keys WHERE id = \(id)", as: SigningRow.self).map(Self.signingKey)
    }

    public func hasSigningKeys() async throws -> Bool {
        try await first(
            """
            SELECT EXISTS (SELECT 1 FROM signing_keys) OR EXISTS (SELECT 1 FROM webhook_endpoints)
                OR EXISTS (SELECT 1 FROM members WHERE totp_sealed_secret IS NOT NULL OR totp_pending_sealed_secret IS NOT NULL)
            """,
            as: Bool.self
        ) ?? false
    }

    public func insertSigningKey(_ key: SigningKeyRecord, retiringActive: Bool, audit: AuditContext) async throws -> SigningKeyRecord {
        let account = key.environmentID.accountID.rawValue
        let environment = key.environmentID.environment.rawValue
        return try await transaction { connection in
            if retiringActive {
                try await connection.query(
                    """
                    UPDATE signing_keys SET retired_at = \(key.createdAt.keywayMilliseconds)
                    WHERE account_id = \(account) AND environment = \(environment) AND retired_at IS NULL
                    """,
                    logger: logger
                )
            }
            let inserted = try await connection.query(
                """
                INSERT INTO signing_keys (id, account_id, environment, public_key, sealed_private_key, created_at)
                VALUES (\(key.id), \(account), \(environment), \(key.publicKey), \(key.sealedPrivateKey), \(key.createdAt.keywayMilliseconds))
                ON CONFLICT (account_id, environment) WHERE retired_at IS NULL DO NOTHING
                RETURNING id
                """,
                logger: logger
            ).decode(String.self)
            var didInsert = false
            for try await _ in inserted { didInsert = true }
            if didInsert {
                try await Self.insert([.signingKeyRotated(key, context: audit)], connection: connection, logger: logger)
                return key
            }
            // Another instance created the first key at the same moment: use theirs.
            let rows = try await connection.query(
                """
                SELECT \(unescaped: Self.signingColumns) FROM signing_keys
                WHERE account_id = \(account) AND environment = \(environment) AND retired_at IS NULL
                """,
                logger: logger
            ).decode(SigningRow.self)
            for try await row in rows { return try Self.signingKey(row) }
            throw SchemaError("no active signing key after a conflicting insert")
        }
    }
}
