import Foundation
import GRDB
import KeywayCore

// Decoding of the store's rows into Core's types.

extension Row {
    func digest(_ column: String) throws -> KeyDigest {
        let data: Data = self[column]
        guard let digest = KeyDigest(bytes: data) else {
            throw DatabaseError(resultCode: .SQLITE_CORRUPT, message: "secret_keys.\(column) is not a 32-byte digest")
        }
        return digest
    }
}

extension Account {
    init(row: Row) {
        self.init(
            id: AccountID(rawValue: row["id"]),
            name: row["name"],
            createdAt: Date(keywayMilliseconds: row["created_at"]),
            policy: AccountPolicy(
                developersManageProductionKeys: row["developers_manage_production_keys"],
                requireTwoFactor: row["require_two_factor"]
            )
        )
    }
}

extension SigningKeyRecord {
    init(row: Row) throws {
        self.init(
            id: row["id"],
            environmentID: EnvironmentID(
                accountID: AccountID(rawValue: row["account_id"]),
                environment: try Environment(stored: row["environment"])
            ),
            publicKey: row["public_key"],
            sealedPrivateKey: row["sealed_private_key"],
            createdAt: Date(keywayMilliseconds: row["created_at"]),
            retiredAt: (row["retired_at"] as Int64?).map(Date.init(keywayMilliseconds:))
        )
    }
}

extension Member {
    init(row: Row) {
        self.init(
            id: MemberID(rawValue: row["id"]),
            accountID: AccountID(rawValue: row["account_id"]),
            email: row["email"],
            // The column's CHECK admits only known roles; an unknown one reads as the least.
            role: MemberRole(rawValue: row["role"]) ?? .viewer,
            createdAt: Date(keywayMilliseconds: row["created_at"]),
            hasTwoFactor: row["has_two_factor"]
        )
    }
}

extension Invitation {
    init(row: Row) {
        self.init(
            id: InvitationID(rawValue: row["id"]),
            accountID: AccountID(rawValue: row["account_id"]),
            email: row["email"],
            role: MemberRole(rawValue: row["role"]) ?? .viewer,
            invitedBy: row["invited_by"],
            createdAt: Date(keywayMilliseconds: row["created_at"]),
            expiresAt: Date(keywayMilliseconds: row["expires_at"]),
            acceptedAt: (row["accepted_at"] as Int64?).map(Date.init(keywayMilliseconds:))
        )
    }
}

extension User {
    init(row: Row) {
        self.init(
            id: UserID(rawValue: row["id"]),
            username: row["username"],
            fullName: row["full_name"],
            createdAt: Date(keywayMilliseconds: row["created_at"])
        )
    }
}

extension SecretKeyRecord {
    init(row: Row) throws {
        self.init(
            id: SecretKeyID(rawValue: row["id"]),
            environmentID: EnvironmentID(
                accountID: AccountID(rawValue: row["account_id"]),
                environment: try Environment(stored: row["environment"])
            ),
            digest: try row.digest("digest"),
            hint: row["hint"],
            createdAt: Date(keywayMilliseconds: row["created_at"]),
            createdBy: row["created_by"],
            revokedAt: (row["revoked_at"] as Int64?).map(Date.init(keywayMilliseconds:)),
            revocationReason: (row["revocation_reason"] as String?).flatMap(RevocationReason.init(rawValue:)),
            lastUsedAt: (row["last_used_at"] as Int64?).map(Date.init(keywayMilliseconds:))
        )
    }
}

extension SecretKeyRecord {
    /// Decodes a row of ``SQLitePointReader/Query/secretKeyByDigest``.
    init(columns: SQLitePointReader.Columns) throws {
        guard let digest = KeyDigest(bytes: columns.blob(3)) else {
            throw DatabaseError(resultCode: .SQLITE_CORRUPT, message: "secret_keys.digest is not a 32-byte digest")
        }
        self.init(
            id: SecretKeyID(rawValue: columns.text(0)),
            environmentID: EnvironmentID(
                accountID: AccountID(rawValue: columns.text(1)),
                environment: try Environment(stored: columns.text(2))
            ),
            digest: digest,
            hint: columns.text(4),
            createdAt: Date(keywayMilliseconds: columns.int64(5)),
            createdBy: columns.text(6),
            revokedAt: columns.optionalInt64(7).map(Date.init(keywayMilliseconds:)),
            revocationReason: columns.optionalText(8).flatMap(RevocationReason.init(rawValue:)),
            lastUsedAt: columns.optionalInt64(9).map(Date.init(keywayMilliseconds:))
        )
    }
}

extension Environment {
    /// An unknown environment is a corrupt row, as a bad digest is: never `development` by default.
    init(stored name: String) throws {
        guard let environment = Environment(rawValue: name) else {
            throw DatabaseError(resultCode: .SQLITE_CORRUPT, message: "a stored environment is not one Keyway knows")
        }
        self = environment
    }
}
