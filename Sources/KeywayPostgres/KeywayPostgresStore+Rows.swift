import Foundation
import KeywayCore
import PostgresNIO

// Decoding of the stores' rows into Core's types.

extension KeywayPostgresStore {
    typealias KeyRow = (String, String, String, Data, String, Int64, String, Int64?, String?, Int64?)
    typealias UserRow = (String, String, String?, Int64)
    typealias MemberRow = (String, String, String, String, Int64, Bool)
    typealias SigningRow = (String, String, String, Data, Data, Int64, Int64?)

    static let keyColumns =
        "id, account_id, environment, digest, hint, created_at, created_by, revoked_at, revocation_reason, last_used_at"
    static let signingColumns = "id, account_id, environment, public_key, sealed_private_key, created_at, retired_at"

    static func record(_ row: KeyRow) throws -> SecretKeyRecord {
        SecretKeyRecord(
            id: SecretKeyID(rawValue: row.0),
            environmentID: EnvironmentID(accountID: AccountID(rawValue: row.1), environment: try environment(row.2)),
            digest: try digest(row.3),
            hint: row.4,
            createdAt: Date(keywayMilliseconds: row.5),
            createdBy: row.6,
            revokedAt: row.7.map(Date.init(keywayMilliseconds:)),
            revocationReason: row.8.flatMap(RevocationReason.init(rawValue:)),
            lastUsedAt: row.9.map(Date.init(keywayMilliseconds:))
        )
    }

    static func signingKey(_ row: SigningRow) throws -> SigningKeyRecord {
        SigningKeyRecord(
            id: row.0,
            environmentID: EnvironmentID(accountID: AccountID(rawValue: row.1), environment: try environment(row.2)),
            publicKey: row.3,
            sealedPrivateKey: row.4,
            createdAt: Date(keywayMilliseconds: row.5),
            retiredAt: row.6.map(Date.init(keywayMilliseconds:))
        )
    }

    /// An unknown environment is a corrupt row, as a bad digest is: never `development` by default.
    static func environment(_ name: String) throws -> Environment {
        guard let environment = Environment(rawValue: name) else { throw SchemaError("a stored environment is not one Keyway knows") }
        return environment
    }

    static func digest(_ data: Data) throws -> KeyDigest {
        guard let digest = KeyDigest(bytes: data) else { throw SchemaError("a stored digest is not 32 bytes") }
        return digest
    }
}

extension Account {
    init(row: (String, String, Int64, Bool, Bool)) {
        self.init(
            id: AccountID(rawValue: row.0),
            name: row.1,
            createdAt: Date(keywayMilliseconds: row.2),
            policy: AccountPolicy(developersManageProductionKeys: row.3, requireTwoFactor: row.4)
        )
    }
}

extension Invitation {
    init(row: KeywayPostgresStore.InvitationRow) {
        self.init(
            id: InvitationID(rawValue: row.0),
            accountID: AccountID(rawValue: row.1),
            email: row.2,
            role: MemberRole(rawValue: row.3) ?? .viewer,
            invitedBy: row.4,
            createdAt: Date(keywayMilliseconds: row.5),
            expiresAt: Date(keywayMilliseconds: row.6),
            acceptedAt: row.7.map(Date.init(keywayMilliseconds:))
        )
    }
}

extension User {
    init(row: (String, String, String?, Int64)) {
        self.init(id: UserID(rawValue: row.0), username: row.1, fullName: row.2, createdAt: Date(keywayMilliseconds: row.3))
    }
}

extension Member {
    init(row: KeywayPostgresStore.MemberRow) {
        self.init(
            id: MemberID(rawValue: row.0),
            accountID: AccountID(rawValue: row.1),
            email: row.2,
            // The column's CHECK admits only known roles; an unknown one reads as the least.
            role: MemberRole(rawValue: row.3) ?? .viewer,
            createdAt: Date(keywayMilliseconds: row.4),
            hasTwoFactor: row.5
        )
    }
}
