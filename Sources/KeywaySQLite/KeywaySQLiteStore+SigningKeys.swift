import Foundation
import GRDB
public import KeywayCore

/// The keys that sign an environment's user tokens, sealed by the master key.
extension KeywaySQLiteStore {
    public func signingKeys(for environmentID: EnvironmentID) async throws -> [SigningKeyRecord] {
        try await database.read { db in
            try Row.fetchAll(
                db,
                sql: "SELECT * FROM signing_keys WHERE account_id = ? AND environment = ? ORDER BY created_at DESC, id DESC",
                arguments: [environmentID.accountID.rawValue, environmentID.environment.rawValue]
            ).map(SigningKeyRecord.init(row:))
        }
    }

    public func signingKey(id: String) async throws -> SigningKeyRecord? {
        try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM signing_keys WHERE id = ?", arguments: [id]).map(SigningKeyRecord.init(row:))
        }
    }

    public func hasSigningKeys() async throws -> Bool {
        try await database.read { db in
            try Bool.fetchOne(
                db,
                sql: """
                    SELECT EXISTS (SELECT 1 FROM signing_keys) OR EXISTS (SELECT 1 FROM webhook_endpoints)
                        OR EXISTS (SELECT 1 FROM members WHERE totp_sealed_secret IS NOT NULL OR totp_pending_sealed_secret IS NOT NULL)
                    """
            ) ?? false
        }
    }

    public func insertSigningKey(_ key: SigningKeyRecord, retiringActive: Bool, audit: AuditContext) async throws -> SigningKeyRecord {
        try await database.write { db in
            let scope: StatementArguments = [key.environmentID.accountID.rawValue, key.environmentID.environment.rawValue]
            if retiringActive {
                try db.execute(
                    sql: "UPDATE signing_keys SET retired_at = ? WHERE account_id = ? AND environment = ? AND retired_at IS NULL",
                    arguments: [key.createdAt.keywayMilliseconds] + scope
                )
            } else if let active = try Row.fetchOne(
                db,
                sql: "SELECT * FROM signing_keys WHERE account_id = ? AND environment = ? AND retired_at IS NULL",
                arguments: scope
            ) {
                return try SigningKeyRecord(row: active)
            }
            try db.execute(
                sql: """
                    INSERT INTO signing_keys (id, account_id, environment, public_key, sealed_private_key, created_at)
                    VALUES (?, ?, ?, ?, ?, ?)
                    """,
                arguments: [key.id] + scope + [key.publicKey, key.sealedPrivateKey, key.createdAt.keywayMilliseconds]
            )
            try Self.insert([.signingKeyRotated(key, context: audit)], db: db)
            return key
        }
    }
}
